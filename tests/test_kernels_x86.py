"""x86 kernel rules (tvm_mpq.kernels.x86): each fast path against the unscheduled build.

int8 paths must be bit-exact, fp32 paths allclose (rtol 1e-4); the int8 conv must really use
``vpmaddwd``, its weight must be prepacked at compile time, and the rules must fire on the small
test model end to end.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_mpq.compiler.build import TuningOptions, build_module

pytestmark = pytest.mark.skipif(
    tvm.target.Target({"kind": "llvm"}).attrs.get("mtriple", "").startswith("aarch64")
    or not str(tvm.get_global_func("target.llvm_get_system_triple")()).startswith("x86_64"),
    reason="x86 kernels")

NO_KERNELS = TuningOptions(kernels=False)


def _cpu() -> str:
    return str(tvm.get_global_func("target.llvm_get_system_cpu")())


def _native() -> tvm.target.Target:
    """This machine with its CPU named (AVX2 where it has it)."""
    return tvm.target.Target({"kind": "llvm", "mcpu": _cpu(), "num-cores": os.cpu_count() or 1})


GENERIC = {"kind": "llvm", "num-cores": 1}  # no -mcpu: plain x86-64 (SSE2 kernels)
AVX2 = {"kind": "llvm", "mcpu": "haswell", "num-cores": 1}


def _has_avx2() -> bool:
    from tvm.target import codegen

    return bool(codegen.target_has_features("avx2", _native()))


# ---------------------------------------------------------------- small Relax modules
def _requant_epilogue(bb: relax.BlockBuilder, acc: relax.Expr, n_out: int, axis_shape: tuple, zp: int,
                      rng: np.random.Generator) -> relax.Expr:
    off = rng.integers(-5000, 5000, size=axis_shape).astype("int32")
    scale = (rng.random(axis_shape) * 0.01 + 0.001).astype("float32")
    acc = bb.emit(relax.op.add(acc, relax.const(off)))
    y = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(acc, "float32")), relax.const(scale)))
    y = bb.emit(relax.op.clip(bb.emit(relax.op.add(bb.emit(relax.op.round(y)), relax.const(np.float32(zp)))), 0.0, 255.0))
    return bb.emit(relax.op.astype(y, "uint8"))


TAIL_PAD = [0, 0, 0, 0, 0, 1, 0, 1]
"""The asymmetric "same" pad (bottom/right by one) of a following stride-2 conv, which the
fusion puts at the end of the conv's epilogue (efficientnet-lite0's expand convs)."""


def int8_conv(c: int, f: int, hw: int, k: int, stride: int = 1, pad: int = 0, groups: int = 1,
              zp: int = 3, residual: bool = False, tail_pad: bool = False) -> tuple[tvm.IRModule, np.ndarray]:
    """uint8 pad(zp) -> conv(int32) -> +offset -> *scale -> round -> +zp -> clip -> uint8
    (-> + residual in fp32) (-> pad(zp) of the next layer), like LowerToInteger emits."""
    rng = np.random.default_rng(c * 1000 + f)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, c, hw, hw), "uint8"))
    w = rng.integers(-127, 128, size=(f, c // groups, k, k)).astype("int8")
    with bb.function("main", [x]):
        with bb.dataflow():
            d = bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, pad, pad, pad, pad], pad_value=float(zp))) if pad else x
            acc = bb.emit(relax.op.nn.conv2d(d, relax.const(w), strides=stride, groups=groups, out_dtype="int32"))
            y = _requant_epilogue(bb, acc, f, (1, f, 1, 1), zp, rng)
            if residual:
                y = bb.emit(relax.op.add(relax.op.astype(y, "float32"), relax.op.astype(x, "float32")))
            if tail_pad:
                y = bb.emit(relax.op.nn.pad(y, TAIL_PAD, pad_value=float(zp)))
            y = bb.emit_output(y)
        bb.emit_func_output(y)
    return bb.get(), rng.integers(0, 256, size=(1, c, hw, hw)).astype("uint8")


def int8_dense(m: int, k: int, n: int, zp: int = 3) -> tuple[tvm.IRModule, np.ndarray]:
    rng = np.random.default_rng(m * 100 + k)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((m, k), "uint8"))
    w = rng.integers(-127, 128, size=(k, n)).astype("int8")
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(relax.op.matmul(x, relax.const(w), out_dtype="int32"))
            y = bb.emit_output(_requant_epilogue(bb, acc, n, (n,), zp, rng))
        bb.emit_func_output(y)
    return bb.get(), rng.integers(0, 256, size=(m, k)).astype("uint8")


def fp32_conv(c: int, f: int, hw: int, k: int, stride: int = 1, pad: int = 0,
              groups: int = 1, epilogue: bool = True, tail_pad: bool = False) -> tuple[tvm.IRModule, np.ndarray]:
    rng = np.random.default_rng(c * 1000 + f + 7)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, c, hw, hw), "float32"))
    w = rng.normal(size=(f, c // groups, k, k)).astype("float32")
    b = rng.normal(size=(1, f, 1, 1)).astype("float32")
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(relax.op.nn.conv2d(x, relax.const(w), strides=stride, padding=pad, groups=groups))
            y = relax.op.nn.relu(relax.op.add(acc, relax.const(b))) if epilogue else acc
            if tail_pad:  # a non-zero pad value: an unwritten border cannot pass for padding
                y = relax.op.nn.pad(bb.emit(y), TAIL_PAD, pad_value=1.5)
            y = bb.emit_output(y)
        bb.emit_func_output(y)
    return bb.get(), rng.normal(size=(1, c, hw, hw)).astype("float32")


def fp32_dense(m: int, k: int, n: int) -> tuple[tvm.IRModule, np.ndarray]:
    rng = np.random.default_rng(m * 100 + k + 7)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((m, k), "float32"))
    w = rng.normal(size=(k, n)).astype("float32")
    b = rng.normal(size=(n,)).astype("float32")
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.add(relax.op.matmul(x, relax.const(w)), relax.const(b)))
        bb.emit_func_output(y)
    return bb.get(), rng.normal(size=(m, k)).astype("float32")


# ---------------------------------------------------------------- helpers
def _run(executable: relax.VMExecutable, x: np.ndarray) -> np.ndarray:
    dev = tvm.cpu()
    return relax.VirtualMachine(executable, dev)["main"](tvm.runtime.tensor(x, dev)).numpy()


def _rules_fired(mod: tvm.IRModule, target: tvm.target.Target) -> list[str]:
    """The rule that takes each fused PrimFunc (None: TVM's default)."""
    from tvm_mpq.compiler.build import _fuse
    from tvm_mpq.kernels.x86 import rule_for

    with target, tvm.transform.PassContext(opt_level=3):
        fused = _fuse(mod)
    return sorted(str(rule_for(f, target)) for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc))


def _check(mod: tvm.IRModule, x: np.ndarray, target: tvm.target.Target, exact: bool) -> relax.VMExecutable:
    fast, info = build_module(mod, target)
    ref, _ = build_module(mod, target, NO_KERNELS)
    got, want = _run(fast, x), _run(ref, x)
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    return fast


CASES = {
    "int8_conv3x3": (lambda: int8_conv(16, 32, 10, 3, pad=1), "Int8Conv2dAvx2", True),
    "int8_conv3x3_s2": (lambda: int8_conv(16, 16, 11, 3, stride=2, pad=1), "Int8Conv2dAvx2", True),
    "int8_conv1x1_residual": (lambda: int8_conv(16, 16, 7, 1, residual=True), "Int8Conv2dAvx2", True),
    "int8_conv_rgb": (lambda: int8_conv(3, 16, 12, 3, stride=2, pad=1), "Int8Conv2dDirect", True),
    "int8_depthwise": (lambda: int8_conv(16, 16, 9, 3, pad=1, groups=16), "Int8DepthwiseConv2d", True),
    # the next layer's pad fused after the epilogue: its border is written too (it was not)
    "int8_conv1x1_tail_pad": (lambda: int8_conv(16, 32, 14, 1, tail_pad=True), "Int8Conv2dAvx2", True),
    "int8_dense": (lambda: int8_dense(1, 64, 32), "Int8DenseAvx2", True),
    "int8_dense_rows": (lambda: int8_dense(6, 48, 16), "Int8DenseAvx2", True),
    "fp32_conv3x3": (lambda: fp32_conv(8, 16, 10, 3, pad=1), "Fp32Conv2dAvx2", False),
    "fp32_conv1x1_s2": (lambda: fp32_conv(16, 32, 10, 1, stride=2), "Fp32Conv2dAvx2", False),
    # a bare conv writes the function's output (fp32 layers keep batch-norm unfused): copied out
    "fp32_conv_no_epilogue": (lambda: fp32_conv(16, 32, 10, 3, pad=1, epilogue=False), "Fp32Conv2dAvx2", False),
    "fp32_conv1x1_tail_pad": (lambda: fp32_conv(16, 32, 14, 1, tail_pad=True), "Fp32Conv2dAvx2", False),

    "fp32_dense": (lambda: fp32_dense(3, 40, 32), "Fp32DenseAvx2", False),
}


def _expected_rule(rule: str, target: tvm.target.Target) -> str:
    """The rule that takes a case on ``target``: the VNNI rule comes first for int8 conv/dense
    wherever the target has ``vpdpbusd`` (the same test the rule itself makes)."""
    from tvm_mpq.kernels.x86_dot4 import has_vnni

    if rule in ("Int8Conv2dAvx2", "Int8DenseAvx2", "Int8Conv2dDirect") and has_vnni(target):
        return "Int8Dot4Vnni"
    return rule


@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_matches_unscheduled_build(case):
    build, rule, exact = CASES[case]
    mod, x = build()
    target = _native()
    assert _expected_rule(rule, target) in _rules_fired(mod, target)
    _check(mod, x, target, exact)


@pytest.mark.parametrize("case", ["int8_conv3x3", "fp32_conv3x3", "int8_conv1x1_tail_pad"])
def test_generic_x86_target_uses_sse2_width(case):
    """Without -mcpu the rules still fire (4-lane SSE2 kernels) and stay exact."""
    build, rule, exact = CASES[case]
    mod, x = build()
    target = tvm.target.Target(GENERIC)
    assert rule in _rules_fired(mod, target)
    _check(mod, x, target, exact)


def test_depthwise_rule_is_exact_where_applied():
    """DepthwiseConv2d (registered for int8 only) also schedules fp32 correctly."""
    from tvm.s_tir import dlight

    from tvm_mpq.compiler.build import _fuse, _lower_pipeline
    from tvm_mpq.kernels.x86 import DepthwiseConv2d

    target = _native()
    for mod, x, exact in (int8_conv(16, 16, 9, 3, pad=1, groups=16) + (True,),
                          fp32_conv(16, 16, 10, 3, stride=2, pad=1, groups=16) + (False,)):
        with target, tvm.transform.PassContext(opt_level=3):
            fused = _fuse(mod)
            scheduled = dlight.ApplyDefaultSchedule(DepthwiseConv2d())(fused)
        assert sum(bool(f.attrs.get("tirx.is_scheduled")) for _, f in scheduled.functions_items()
                   if isinstance(f, tvm.tirx.PrimFunc)) == 1
        got = _run(tvm.compile(scheduled, target=target, relax_pipeline=_lower_pipeline(target)), x)
        want = _run(build_module(mod, target, NO_KERNELS)[0], x)
        np.testing.assert_allclose(got, want, rtol=0 if exact else 1e-4, atol=0 if exact else 1e-4)


def test_rules_decline_what_they_do_not_handle():
    mod, _ = fp32_conv(8, 12, 6, 3, groups=4)  # grouped (not depthwise), 12 channels
    assert _rules_fired(mod, _native()) == ["None"]
    mod, _ = fp32_dense(2, 16, 5)  # 5 output columns: no 8-lane tiles
    assert _rules_fired(mod, _native()) == ["None"]


def test_int8_conv_uses_vpmaddwd_and_prepacked_int16_weights():
    from tvm.s_tir import dlight

    from tvm_mpq.compiler.build import _fuse
    from tvm_mpq.kernels import default_schedule_rules

    mod, _ = int8_conv(16, 32, 10, 3, pad=1)
    target = tvm.target.Target(AVX2)
    executable, _ = build_module(mod, target)
    asm = "".join(m.inspect_source("asm") for m in executable.mod._collect_dso_modules())
    assert "vpmaddwd" in asm
    assert "vpmaddubsw" not in asm  # saturating: never used
    text = executable.as_text()
    assert "_prepacked" in text and "weight_prepack" not in text  # no repacking per call
    with target, tvm.transform.PassContext(opt_level=3):  # the folded constant is the packed weight
        fused = dlight.ApplyDefaultSchedule(*default_schedule_rules(target))(_fuse(mod))
        folded = tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(),
                                           relax.transform.FoldConstant()])(fused)
    shapes = [tuple(c.value.shape) for c in _constants(folded["main"])]
    assert (4, 8, 3, 3, 8, 2) in shapes


VNNI_CASES = {
    "conv3x3": lambda: int8_conv(16, 32, 10, 3, pad=1),
    "conv_rgb_s2": lambda: int8_conv(3, 16, 11, 3, stride=2, pad=1),  # 3 channels: padded to 4
    "conv1x1_residual": lambda: int8_conv(16, 16, 7, 1, residual=True),
    "conv1x1_tail_pad": lambda: int8_conv(16, 32, 14, 1, tail_pad=True),
    "dense": lambda: int8_dense(1, 64, 32),
    "dense_rows_odd_k": lambda: int8_dense(6, 50, 16),  # K padded to 52
}


@pytest.mark.parametrize("cpu", ["alderlake", "icelake-server"])
def test_vnni_kernel_uses_vpdpbusd_on_vnni_cpus(cpu):
    """AVX-VNNI (alderlake) and AVX512-VNNI (icelake-server) builds take the vpdpbusd kernel
    (compile only: this machine cannot run them); this host's build does not."""
    mod, _ = VNNI_CASES["conv3x3"]()
    target = tvm.target.Target({"kind": "llvm", "mcpu": cpu})
    assert "Int8Dot4Vnni" in _rules_fired(mod, target)
    executable, info = build_module(mod, target)
    assert info["scheduled_by"]["kernel_rules"] == 1
    asm = "".join(m.inspect_source("asm") for m in executable.mod._collect_dso_modules())
    assert "vpdpbusd" in asm
    from tvm_mpq.kernels.x86_dot4 import has_vnni

    if not has_vnni(_native()):
        assert "Int8Dot4Vnni" not in _rules_fired(mod, _native())


@pytest.mark.parametrize("case", list(VNNI_CASES))
def test_vnni_rewrite_is_exact_with_the_instruction_emulated(case):
    """The VNNI kernel's rewrite (uint8 [H, W, C] activation, packed weight words, register
    tiles, fused epilogue) with vpdpbusd replaced by an exact AVX2 equivalent runs here and
    agrees bit for bit with the reference build."""
    from tvm.s_tir import dlight

    from tvm_mpq.compiler.build import _fuse, _lower_pipeline
    from tvm_mpq.kernels.x86_dot4 import EMULATED_VNNI_DOT4, Int8Dot4Vnni

    if not _has_avx2():
        pytest.skip("the emulation of vpdpbusd uses AVX2 instructions; this CPU has no AVX2")
    mod, x = VNNI_CASES[case]()
    target = _native()
    with target, tvm.transform.PassContext(opt_level=3):
        fused = dlight.ApplyDefaultSchedule(Int8Dot4Vnni(EMULATED_VNNI_DOT4))(_fuse(mod))
        assert sum(bool(f.attrs.get("tirx.is_scheduled")) for _, f in fused.functions_items()
                   if isinstance(f, tvm.tirx.PrimFunc)) == 1
        fused = tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(),
                                          relax.transform.FoldConstant()])(fused)
    got = _run(tvm.compile(fused, target=target, relax_pipeline=_lower_pipeline(target)), x)
    want = _run(build_module(mod, target, NO_KERNELS)[0], x)
    np.testing.assert_array_equal(got, want)


def _constants(func: relax.Function) -> list:
    const_type = type(relax.const(np.zeros(1, "int8")))
    found: list = []
    relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(e, const_type) else None)
    return found


# ---------------------------------------------------------------- end to end
def test_small_model_end_to_end_int8_and_fp32(small_graph, small_feeds):
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.pipeline import lower_model

    from test_compile import _config, _fp32_config

    target = _native()
    for config, exact in ((_config(small_graph, small_feeds, 100), True), (_fp32_config(small_graph), False)):
        fired = _rules_fired(lower_model(small_graph, config)[0], target)
        assert sum(name != "None" for name in fired) >= 2, fired  # the two regular convs
        fast = compile_model(small_graph, config, target)
        ref = compile_model(small_graph, config, target, tuning=NO_KERNELS)
        for feed in small_feeds[:2]:
            got, want = fast.run(feed)[0], ref.run(feed)[0]
            if exact:
                np.testing.assert_array_equal(got, want)
            else:
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
