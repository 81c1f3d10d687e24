"""aarch64 kernels (tvm_mpq/kernels/cpu_mac.py with NEON widths): sdot with +dotprod, NEON without, bit-exact.

Small int8 layers as the product lowers them (uint8 activations, int8 weights, int32 conv2d/matmul,
per-channel epilogue) are compiled for ``aarch64-dotprod`` and ``aarch64``; the exported library's
disassembly must use ``sdot`` exactly when the target has ``+dotprod``, and the QEMU RPC server
must give bit-for-bit the outputs of the x86 build of the same Relax module.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_mpq.compiler.build import TuningOptions, build_module, fuse

from conftest import activations_module, argmax_module, layer_norm_module, softmax_module
from targets import get_target
from targets.aarch64_sysroot import find_cross_compiler, find_qemu, sysroot_dir, Sysroot

OBJDUMP = "aarch64-linux-gnu-objdump"


def conv_module(ci: int, co: int, size: int, k: int = 3, zp_pad: int = 0, stride: int = 1, conv_pad: int = 0,
                in_dtype: str = "uint8", seed: int = 0, tail_pad: bool = False) -> tvm.IRModule:
    """``[pad(zp)] -> conv2d(u8, s8 -> i32) -> + offset -> float32 * scale`` (the product's int8 layer)
    ``[-> pad]`` (``tail_pad``: the next stride-2 layer's asymmetric pad, fused after the epilogue)."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, size=(co, ci, k, k)).astype(np.int8 if in_dtype == "uint8" else np.float32)
    off = rng.integers(-5000, 5000, size=(1, co, 1, 1)).astype(np.int32 if in_dtype == "uint8" else np.float32)
    scale = rng.uniform(1e-3, 1e-2, size=(1, co, 1, 1)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, ci, size, size), in_dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            d = x
            if zp_pad:
                d = bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, zp_pad, zp_pad, zp_pad, zp_pad], pad_value=7.0))
            acc = bb.emit(relax.op.nn.conv2d(d, relax.const(w), strides=stride, padding=conv_pad, data_layout="NCHW",
                                             kernel_layout="OIHW",
                                             out_dtype="int32" if in_dtype == "uint8" else "float32"))
            acc = bb.emit(relax.op.add(acc, relax.const(off)))
            y = bb.emit(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale)))
            if tail_pad:  # non-zero pad value: an unwritten border cannot pass for padding
                y = bb.emit(relax.op.nn.pad(y, [0, 0, 0, 0, 0, 1, 0, 1], pad_value=1.5))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def dense_module(m: int, k: int, n: int, seed: int = 0) -> tvm.IRModule:
    """``matmul(u8 [m, k], s8 [k, n] -> i32) -> + offset -> float32 * scale``."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, size=(k, n)).astype(np.int8)
    off = rng.integers(-5000, 5000, size=(n,)).astype(np.int32)
    scale = rng.uniform(1e-3, 1e-2, size=(n,)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((m, k), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(relax.op.add(relax.op.matmul(x, relax.const(w), out_dtype="int32"), relax.const(off)))
            y = bb.emit(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale)))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def _dense_f32(m: int, k: int, n: int) -> tvm.IRModule:
    """``matmul(f32 [m, k], f32 [k, n]) + bias``."""
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((m, k), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.add(relax.op.matmul(x, relax.const(rng.normal(size=(k, n)).astype(np.float32))),
                                     relax.const(rng.normal(size=(n,)).astype(np.float32))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


# (name, module, input shape): 3x3 with zero-point padding (a separate pad), 3x3 stride 2 with the
# conv's own zero padding and 3 input channels (K padded to 4), 1x1, dense with K % 4 != 0.
CASES = [
    ("conv3x3", lambda: conv_module(8, 16, 8, zp_pad=1), (1, 8, 8, 8)),
    ("conv3x3_s2_c3", lambda: conv_module(3, 8, 9, stride=2, conv_pad=1), (1, 3, 9, 9)),
    ("conv1x1", lambda: conv_module(16, 32, 6, k=1), (1, 16, 6, 6)),
    ("conv1x1_tail_pad", lambda: conv_module(16, 32, 6, k=1, tail_pad=True), (1, 16, 6, 6)),
    ("dense", lambda: dense_module(2, 37, 24), (2, 37)),
]
FP32_CASES = [
    ("conv3x3_fp32", lambda: conv_module(4, 8, 6, conv_pad=1, in_dtype="float32"), (1, 4, 6, 6)),
    ("conv1x1_tail_pad_fp32", lambda: conv_module(8, 16, 6, k=1, in_dtype="float32", tail_pad=True), (1, 8, 6, 6)),
    ("dense_fp32", lambda: _dense_f32(2, 32, 48), (2, 32)),
    # 16 output tiles of 4x4: Winograd F(4x4, 3x3) (relay_passes.winograd_conv), NEON widths
    ("conv3x3_winograd_fp32", lambda: conv_module(8, 16, 16, conv_pad=1, in_dtype="float32"), (1, 8, 16, 16)),
    # rows of 10 NEON vectors + a tail of 3: relay_passes.lane_softmax, RowChainCpu with 4 lanes
    ("softmax_rows_fp32", lambda: softmax_module((2, 3, 43)), (2, 3, 43)),
    # the same rows' argmax: relay_passes.lane_argmax, a row max and a first-position search on 4 lanes
    ("argmax_rows_fp32", lambda: argmax_module((2, 3, 43)), (2, 3, 43)),
    # relay_passes.fast_exp on NEON: GELU, SiLU, softplus, log and a row log-softmax, no libm call
    ("activations_fp32", lambda: activations_module((4, 43)), (4, 43)),
    # relay_passes.lane_variance's layer norm: 16 lane sums per row on 4-lane vectors, a tail of 3
    ("layer_norm_rows_fp32", lambda: layer_norm_module((2, 5, 67)), (2, 5, 67)),
]


def _fused_mac(mod: tvm.IRModule, target: tvm.target.Target | None = None) -> tvm.tirx.PrimFunc:
    target = target or get_target("aarch64-dotprod").tvm_target
    with target, tvm.transform.PassContext(opt_level=3):
        fused = fuse(mod, target)
    return next(f for gv, f in fused.functions_items() if gv.name_hint.startswith("fused_") and "conv2d" in gv.name_hint
                or "matmul" in gv.name_hint)


def _build(mod: tvm.IRModule, target_name: str, kernels: bool = True):
    return build_module(mod, get_target(target_name).tvm_target, TuningOptions(kernels=kernels, trials=0,
                                                                                  root=Path("/nonexistent")))[0]


# ------------------------------------------------------------------------------ no toolchain needed


def _rule(mod: tvm.IRModule, target_name: str) -> str | None:
    from tvm_mpq.kernels import rule_for

    target = get_target(target_name).tvm_target
    with target, tvm.transform.PassContext(opt_level=3):
        fused = fuse(mod, target)
    names = {rule_for(f, target) for gv, f in fused.functions_items() if gv.name_hint.startswith("fused_")}
    return next(iter(names - {None}), None)


def test_aarch64_gets_the_channels_last_kernels_with_neon_widths():
    from tvm_mpq.kernels import activation_layout
    from tvm_mpq.kernels.cpu_isa import cpu_isa

    dot, plain = get_target("aarch64-dotprod").tvm_target, get_target("aarch64").tvm_target
    assert activation_layout(dot) == "NHWC"
    assert (cpu_isa(dot).dot, cpu_isa(dot).lanes(), cpu_isa(dot).registers) == ("sdot", 4, 32)
    assert cpu_isa(plain).dot is None
    for mod in (conv_module(8, 16, 8, zp_pad=1), dense_module(1, 32, 16), conv_module(4, 8, 6, in_dtype="float32"),
                _dense_f32(1, 32, 48)):
        assert _rule(mod, "aarch64-dotprod") in ("Conv2dChannelsLast", "MatmulConstWeight")
    assert _rule(conv_module(8, 16, 16, conv_pad=1, in_dtype="float32"), "aarch64") == "WinogradConv2d"


def test_sdot_targets_shift_the_activations_to_int8():
    """With +dotprod the int8 MAC reads int8 (shifted) activations and is tensorized with sdot;
    without it, uint8 activations and a widening multiply-add."""
    from tvm import s_tir

    from tvm_mpq.kernels.cpu_mac import schedule_mac
    from tvm_mpq.kernels.cpu_mac_analysis import analyze_mac

    for target_name, data_dtype, intrin in (("aarch64-dotprod", "int8", "llvm.aarch64.neon.sdot"),
                                            ("aarch64", "uint8", None)):
        target = get_target(target_name).tvm_target
        fn = _fused_mac(conv_module(8, 16, 8), target)
        assert analyze_mac(s_tir.Schedule(fn)).data_dtype == data_dtype
        text = schedule_mac(fn, target).mod["main"].script()
        assert "meta_schedule.layout_rewrite_preproc" in text
        assert (intrin in text) if intrin else ("sdot" not in text)


# ---------------------------------------------------------------------------- cross build + QEMU


def _require_toolchain() -> Sysroot:
    if find_cross_compiler() is None:
        pytest.skip("aarch64-linux-gnu-g++ not found: run `tvm-mpq setup-aarch64` (apt g++-aarch64-linux-gnu)")
    if shutil.which(OBJDUMP) is None:
        pytest.skip(f"{OBJDUMP} not found (binutils-aarch64-linux-gnu comes with g++-aarch64-linux-gnu)")
    return Sysroot(sysroot_dir())


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    """Every case exported for aarch64-dotprod and aarch64: {(case, target): path}."""
    _require_toolchain()
    out = tmp_path_factory.mktemp("kernels_aarch64")
    libs = {}
    for name, make, _ in CASES + FP32_CASES:
        for target_name in ("aarch64-dotprod", "aarch64"):
            path = out / f"{name}-{target_name}.so"
            _build(make(), target_name).export_library(str(path), fcompile=get_target(target_name).fcompile())
            libs[name, target_name] = path
    return libs


def _disassembly(path: Path) -> str:
    return subprocess.run([OBJDUMP, "-d", str(path)], check=True, capture_output=True, text=True).stdout


def _kernel_asm(path: Path) -> str:
    """Disassembly of the int8 MAC kernel only (the ``..._prepacked`` function)."""
    text, keep = [], False
    for line in _disassembly(path).splitlines():
        if line.endswith(">:"):
            keep = "_prepacked" in line
        if keep:
            text.append(line)
    assert text, f"no prepacked kernel in {path.name}"
    return "\n".join(text)


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_sdot_only_with_dotprod(libraries, case):
    dot = _kernel_asm(libraries[case, "aarch64-dotprod"])
    plain = _kernel_asm(libraries[case, "aarch64"])
    assert "\tsdot\t" in dot
    assert "\tsdot\t" not in plain and "\tudot\t" not in plain
    assert "weight_prepack" not in _disassembly(libraries[case, "aarch64-dotprod"])


def test_activations_call_no_libm_on_aarch64(libraries):
    """GELU, SiLU, softplus, log and log-softmax compile to NEON polynomials (relay_passes.fast_exp),
    as on x86: the library calls no ``erff`` / ``expf`` / ``logf``."""
    asm = _disassembly(libraries["activations_fp32", "aarch64"])
    assert not [name for name in ("erff", "expf", "logf", "tanhf") if f"<{name}@" in asm]


@pytest.fixture(scope="module")
def qemu_server():
    sysroot = _require_toolchain()
    if find_qemu() is None:
        pytest.skip("qemu-aarch64 not found: run `tvm-mpq setup-aarch64` (apt qemu-user)")
    if not sysroot.is_ready():
        pytest.skip(f"no arm64 sysroot at {sysroot.root}: run `tvm-mpq setup-aarch64`")
    from targets.rpc import LocalRpcServer

    with LocalRpcServer("aarch64", sysroot=sysroot) as server:
        yield server


def test_qemu_runs_bit_exact_with_the_x86_build(libraries, qemu_server):
    from targets.rpc import RemoteModel

    rng = np.random.default_rng(1)
    for name, make, shape in CASES:
        x = rng.integers(0, 256, size=shape).astype(np.uint8)
        x.flat[:3] = [0, 255, 128]
        ex = _build(make(), "x86", kernels=False)
        reference = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        for target_name in ("aarch64-dotprod", "aarch64"):
            with RemoteModel(qemu_server.connect(), libraries[name, target_name], get_target(target_name)) as model:
                out = model.run([x])[0]
            assert out.dtype == reference.dtype and out.shape == reference.shape
            assert np.array_equal(out.view(np.int32), reference.view(np.int32)), (name, target_name)
    for name, make, shape in FP32_CASES:  # summation order kept; LLVM may contract to fma: close, not exact
        x = rng.normal(size=shape).astype(np.float32)
        ex = _build(make(), "x86", kernels=False)
        reference = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        with RemoteModel(qemu_server.connect(), libraries[name, "aarch64"], get_target("aarch64")) as model:
            out = model.run([x])[0]
        np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
