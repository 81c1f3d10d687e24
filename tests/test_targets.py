"""Target registry, cross builds and toolchain errors: real compiles, real ELF files, real nvcc."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm

from tvm_mpq.errors import MpqError

from targets import get_target, target_names
from targets.aarch64_sysroot import setup_aarch64
from targets.elf import EM_AARCH64, EM_CUDA, EM_X86_64, embedded_elf_machines, read_elf_machine


@pytest.fixture(scope="session")
def aarch64_toolchain():
    """The cross g++ + QEMU + arm64 sysroot (set up once; a no-op when cached)."""
    return setup_aarch64()


@pytest.fixture(scope="module")
def x86_compiled(small_graph):
    return get_target("x86").compile(small_graph)


def test_registry_lists_every_target_and_rejects_unknown_names():
    assert set(target_names()) >= {"x86", "aarch64", "aarch64-dotprod", "cuda"}
    with pytest.raises(MpqError, match="unknown --target 'riscv'.*x86"):
        get_target("riscv")


def test_x86_target_uses_the_detected_cpu():
    t = get_target("x86")
    assert t.target_dict()["mcpu"] == str(tvm.target.codegen.llvm_get_system_cpu())
    assert t.tvm_target.kind.name == "llvm" and int(t.tvm_target.attrs["num-cores"]) == os.cpu_count()
    assert get_target("x86", mcpu="x86-64-v3").tvm_target.attrs["mcpu"] == "x86-64-v3"
    with pytest.raises(MpqError, match="--mcpu 'pentium9' is not an x86-64 CPU"):
        get_target("x86", mcpu="pentium9")
    assert t.device_kind == "cpu" and t.elf_machine == EM_X86_64


def test_aarch64_targets_neon_and_dotprod():
    plain, dot = get_target("aarch64"), get_target("aarch64-dotprod")
    assert plain.target_dict() == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
    assert list(dot.tvm_target.attrs["mattr"]) == ["+neon", "+dotprod"]
    assert bool(dot.tvm_target.attrs["feature.has_dotprod"]) and not bool(plain.tvm_target.attrs["feature.has_dotprod"])
    assert get_target("aarch64", dotprod=True).target_dict() == dot.target_dict()


def test_cuda_target_dict_and_bad_arch():
    t = get_target("cuda", arch="sm_80")
    assert t.tvm_target.kind.name == "cuda" and str(t.tvm_target.attrs["arch"]) == "sm_80"
    assert t.tvm_target.host.kind.name == "llvm" and t.device_kind == "cuda"
    with pytest.raises(MpqError, match="not sm_XY"):
        get_target("cuda", arch="ampere")


def test_x86_library_is_an_x86_64_elf(x86_compiled, tmp_path):
    path = get_target("x86").export(x86_compiled, tmp_path / "m.so")
    assert read_elf_machine(path) == EM_X86_64


def test_aarch64_library_is_an_aarch64_elf(aarch64_toolchain, small_graph, tmp_path):
    target = get_target("aarch64-dotprod")
    path = target.export(target.compile(small_graph), tmp_path / "m.so")
    assert read_elf_machine(path) == EM_AARCH64
    header = Path(path).read_bytes()[:20]
    assert header[4] == 2 and header[5] == 1  # ELFCLASS64, little endian


def test_exporting_for_another_target_is_an_error(x86_compiled, aarch64_toolchain, tmp_path):
    with pytest.raises(MpqError, match="compiled for llvm x86_64.*not for target aarch64"):
        get_target("aarch64").export(x86_compiled, tmp_path / "m.so")
    x86_lib = get_target("x86").export(x86_compiled, tmp_path / "x86.so")
    with pytest.raises(MpqError, match="built for x86-64, but target aarch64 needs AArch64"):
        get_target("aarch64").check_library(x86_lib)


def test_missing_cross_compiler_names_the_setup_command(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no aarch64-linux-gnu-g++
    with pytest.raises(MpqError, match=r"aarch64-linux-gnu-g\+\+ not found: run `tvm-mpq setup-aarch64`"):
        get_target("aarch64").check_toolchain()


def test_not_an_elf_file(tmp_path):
    bad = tmp_path / "model.so"
    bad.write_text("not a library")
    with pytest.raises(MpqError, match="not an ELF"):
        read_elf_machine(bad)


def test_cuda_library_has_device_code(small_graph, tmp_path):
    target = get_target("cuda", arch="sm_80")
    try:
        target.check_toolchain()
    except MpqError as err:
        pytest.skip(str(err))
    compiled = target.compile(small_graph)
    kinds = []

    def walk(mod):
        kinds.append(str(mod.kind))
        for imp in mod.imports:
            walk(imp)

    walk(compiled.executable.mod)
    assert "cuda" in kinds
    path = target.export(compiled, tmp_path / "cuda.so")
    data = Path(path).read_bytes()
    assert read_elf_machine(path) == EM_X86_64  # host code; kernels are embedded
    has_cubin = EM_CUDA in embedded_elf_machines(data)
    has_ptx = b".target sm_80" in data
    assert has_cubin or has_ptx, "the CUDA library holds no cubin and no PTX"


# ------------------------------------------------------------------------------ CUDA kernels (compile only)
CUDA_ARCH = "sm_80"
MAC_MARKERS = ("conv2d", "matmul")


@pytest.fixture(scope="module")
def cuda():
    target = get_target("cuda", arch=CUDA_ARCH)
    try:
        target.check_toolchain()
    except MpqError as err:
        pytest.skip(str(err))
    return target


class SamePadNet(torch.nn.Module):
    """EfficientNet-Lite's TF-style "SAME" padding: 1x1 conv -> relu6 -> an explicit asymmetric
    pad -> stride-2 depthwise conv -> 1x1 conv. The pad fuses into the first conv's epilogue
    (a block of another shape), which TVM's GPU ``Matmul`` rule asserts on."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.expand = torch.nn.Conv2d(8, 16, 1)
        self.dw = torch.nn.Conv2d(16, 16, 3, stride=2, groups=16)
        self.project = torch.nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.pad(torch.nn.functional.relu6(self.expand(x)), (0, 1, 0, 1))
        return self.project(torch.nn.functional.relu6(self.dw(y)))


@pytest.fixture(scope="module")
def same_pad():
    """(graph, {rate: precision config}) of :class:`SamePadNet` at rates 0 (fp32), 50, 100."""
    from tvm_mpq.allocation import allocate_by_rate
    from tvm_mpq.calibration import calibrate
    from tvm_mpq.config.build import build_config
    from tvm_mpq.frontends.torch_frontend import from_module
    from tvm_mpq.graph import build_layer_table

    graph = from_module(SamePadNet(), {"x": np.zeros((1, 8, 16, 16), np.float32)}, "same_pad")
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.normal(size=(1, 8, 16, 16)).astype(np.float32)} for _ in range(4)]
    table = build_layer_table(graph)
    ranges = {v: r[8] for v, r in calibrate(graph, feeds, table.activation_operands(), "minmax").items()}
    configs = {rate: build_config(graph, table, allocate_by_rate(table, table.names(), rate), ranges,
                                  {"requested_rate": rate}) for rate in (0, 50, 100)}
    return graph, configs


def _mac_kernels(compiled) -> dict[str, str]:
    """MAC kernel name -> the rule that scheduled it."""
    return {k: v for k, v in compiled.stats["build"]["kernels"].items() if any(m in k for m in MAC_MARKERS)}


def _kernel_bodies(source: str) -> dict[str, str]:
    """CUDA kernel name -> its body, from a module's CUDA source (definitions only)."""
    out = {}
    for part in source.split('extern "C" __global__ ')[1:]:
        head, _, body = part.partition("{")
        name = re.match(r"void (?:__launch_bounds__\(\d+\) )?(\w+)\(", head)
        if body and name:
            out[name.group(1)] = body
    return out


def test_cuda_int8_macs_run_on_dp4a(cuda, small_graph, small_configs, tmp_path):
    from targets.cuda import compile_ptx, kernel_source

    with cuda.build_context():
        compiled = cuda.compile(small_graph, small_configs[100])
    macs = _mac_kernels(compiled)
    assert len(macs) == 4 and set(macs.values()) == {"Int8GemmDp4a"}, macs  # conv, depthwise, 1x1, dense
    source = kernel_source(compiled.executable.mod)
    bodies = _kernel_bodies(source)
    for name in macs:
        assert any(k.startswith(name) and "__dp4a(" in body for k, body in bodies.items()), f"{name}: no dp4a"
    ptx = compile_ptx(source, CUDA_ARCH)
    assert "dp4a.u32.s32" in ptx  # uint8 activation codes x int8 weights, no shift
    path = cuda.export(compiled, tmp_path / "int8.so")
    assert EM_CUDA in embedded_elf_machines(Path(path).read_bytes())


def test_a_gemm_with_few_output_tiles_takes_smaller_ones_to_fill_the_gpu():
    from tvm_mpq.kernels.cuda_mac import MIN_BLOCKS, plan_gemm

    def blocks(plan, i, j, batch=1):
        tile_i, tile_j, _ = plan.tile
        return batch * -(-i // tile_i) * -(-j // tile_j)

    stem = plan_gemm(112 * 112, 32, 27, "float32")  # plenty of tiles: TVM's Matmul tile
    assert (stem.threads_i, stem.micro_i) == (8, 4) and blocks(stem, 112 * 112, 32) >= MIN_BLOCKS
    for dtype in ("float32", "int8"):  # EfficientNet-Lite0's 7x7 1x1 conv, 1152 -> 192 channels
        late = plan_gemm(7 * 7, 192, 1152, dtype)
        assert late.micro_i * late.micro_j < 16 and blocks(late, 49, 192) >= MIN_BLOCKS // 2, late
    depthwise = plan_gemm(7 * 7, 1, 25, "int8", batch=1152)  # channels are the batch: already enough
    assert (depthwise.micro_i, depthwise.micro_j) == (1, 1)


#: The routine nvcc links into a kernel that divides floats exactly (IEEE round-to-nearest);
#: ``--use_fast_math`` divides approximately and links none. Its name is in the library's cubin.
EXACT_DIVISION = b"cuda_sm3x_div_rn_noftz_f32_slowpath"


def test_cuda_int8_epilogues_divide_exactly_unless_fast_math_is_asked_for(cuda, small_graph, small_configs,
                                                                          tmp_path):
    before, libraries = os.environ.get("TVM_CUDA_NVCC_NO_FAST_MATH"), {}
    for fast_math in (False, True):
        target = get_target("cuda", arch=CUDA_ARCH, fast_math=fast_math)
        with target.build_context():
            compiled = target.compile(small_graph, small_configs[100])
        libraries[fast_math] = Path(target.export(compiled, tmp_path / f"fast{fast_math}.so")).read_bytes()
    assert EXACT_DIVISION in libraries[False] and EXACT_DIVISION not in libraries[True]
    assert cuda.fast_math is False and os.environ.get("TVM_CUDA_NVCC_NO_FAST_MATH") == before  # restored


def test_cuda_builds_capture_a_cuda_graph_unless_asked_not_to(cuda, small_graph, small_configs):
    """The default CUDA build replays its static kernels as one CUDA graph (TVM's RewriteCUDAGraph:
    the VM's capture builtin is in the executable, the build's stats count it); ``cuda_graph=False``
    launches kernel by kernel. The option survives a PassContext entered inside the build context
    (``compile --print-ir`` enters one)."""
    from tvm_mpq.compiler.inspect_ir import PrintBefore

    captured = {}
    for cuda_graph in (True, False):
        target = get_target("cuda", arch=CUDA_ARCH, cuda_graph=cuda_graph)
        with target.build_context(), tvm.transform.PassContext(instruments=[PrintBefore("NoSuchPass")]):
            compiled = target.compile(small_graph, small_configs[100])
        calls = [line for line in compiled.executable.as_text().splitlines() if line.lstrip().startswith("call")]
        captured[cuda_graph] = (sum("vm.builtin.cuda_graph.run_or_capture" in line for line in calls),
                                compiled.stats["build"]["cuda_graph_captures"])
    assert captured[True][0] >= 1 and captured[True][1] == captured[True][0], captured
    assert captured[False] == (0, 0), captured
    assert cuda.cuda_graph is True


@pytest.mark.parametrize("rate", [0, 50, 100])
def test_cuda_builds_a_pad_fused_into_a_conv_epilogue(cuda, same_pad, rate, tmp_path):
    graph, configs = same_pad
    with cuda.build_context():
        compiled = cuda.compile(graph, configs[rate])
    macs = _mac_kernels(compiled)
    padded = [name for name in macs if "pad" in name]
    assert len(padded) == 1, macs
    assert macs[padded[0]] == ("Fp32Gemm" if rate == 0 else "Int8GemmDp4a")
    n_int8 = sum(1 for rule in macs.values() if rule == "Int8GemmDp4a")
    assert n_int8 == compiled.stats["int8_layers"]
    path = cuda.export(compiled, tmp_path / f"r{rate}.so")
    assert EM_CUDA in embedded_elf_machines(Path(path).read_bytes())


def test_a_failing_tvm_rule_declines_instead_of_failing_the_build(cuda, same_pad):
    from tvm.s_tir import dlight

    from tvm_mpq.compiler.build import fuse
    from tvm_mpq.compiler.pipeline import lower_model
    from tvm_mpq.kernels import tagged

    graph, configs = same_pad
    target = cuda.tvm_target
    with target, tvm.transform.PassContext(opt_level=3):
        fused = fuse(lower_model(graph, configs[100])[0], target)
        func = next(f for gv, f in fused.functions.items() if "conv2d" in gv.name_hint and "pad" in gv.name_hint)
        with pytest.raises(AssertionError, match="not properly inlined"):
            dlight.gpu.Matmul().apply(func, target, False)
        assert tagged(dlight.gpu.Matmul()).apply(func, target, False) is None


def _random_args(func, rng) -> list[np.ndarray]:
    out = []
    for buf in func.params:
        shape, dtype = [int(d) for d in buf.shape], str(buf.dtype)
        if dtype in ("uint8", "int8"):
            info = np.iinfo(dtype)
            out.append(rng.integers(info.min, info.max + 1, shape).astype(dtype))
        elif dtype == "int32":
            out.append(rng.integers(-1000, 1000, shape).astype(dtype))
        else:
            out.append((rng.normal(size=shape) * 0.1).astype(dtype))
    return out


def _emulated_and_reference(func, sch, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The output of ``sch`` (a CUDA GEMM schedule of ``func`` with emulated threads) and of the
    unscheduled ``func``, both built for this CPU, on the same random arguments."""
    reference = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
    emulated = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target="llvm")
    args = _random_args(func, rng)
    want, got = [tvm.runtime.tensor(a) for a in args], [tvm.runtime.tensor(a) for a in args]
    reference(*want)
    emulated(*got)
    return got[-1].numpy(), want[-1].numpy()


def _scheduled_gemms(graph, config, target) -> list[tuple[str, object, object]]:
    """``(name, fused function, its CUDA GEMM schedule with emulated threads)`` of every fused
    function of ``config`` on ``graph`` that the CUDA GEMM rule schedules."""
    from tvm_mpq.compiler.build import fuse
    from tvm_mpq.compiler.pipeline import lower_model
    from tvm_mpq.kernels.cuda_mac import ThreadMapping, schedule_gemm

    with target, tvm.transform.PassContext(opt_level=3):
        fused = fuse(lower_model(graph, config)[0], target)
    out = []
    for gv, func in fused.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and (sch := schedule_gemm(func, threads=ThreadMapping(emulate=True))):
            out.append((gv.name_hint, func, sch))
    return out


def test_cuda_gemm_schedules_compute_what_the_layers_compute(cuda, small_graph, small_configs, same_pad):
    """Each CUDA GEMM schedule, its threads emulated as serial loops and dp4a as its scalar
    description (:class:`tvm_mpq.kernels.cuda_mac.ThreadMapping`), built for this CPU, against
    the unscheduled fused function: tiles, padding, im2col, epilogue and tail are exact."""
    rng = np.random.default_rng(0)
    cases = [(small_graph, small_configs[100]), (same_pad[0], same_pad[1][100]), (same_pad[0], same_pad[1][0])]
    checked = []
    for graph, config in cases:
        for name, func, sch in _scheduled_gemms(graph, config, cuda.tvm_target):
            actual, expected = _emulated_and_reference(func, sch, rng)
            if expected.dtype == np.float32:
                np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5, err_msg=name)
            else:
                np.testing.assert_array_equal(actual, expected, err_msg=name)
            checked.append(name)
    assert sum("pad" in name for name in checked) == 2 and len(checked) >= 6, checked


def test_cuda_gemm_schedules_compute_transposed_convs_exactly(cuda):
    """A decoder's transposed convs (kernel 4 stride 2 padding 1 with a zero-point map, kernel 2
    stride 2), int8 and fp32: the CUDA GEMM schedule, threads emulated (as above), is exact
    against the unscheduled fused function (no GPU here runs them)."""
    from test_compile import _Decoder, _config

    from tvm_mpq.compiler.build import fuse
    from tvm_mpq.compiler.pipeline import lower_model
    from tvm_mpq.frontends.torch_frontend import from_module
    from tvm_mpq.kernels.cuda_mac import ThreadMapping, schedule_gemm

    rng = np.random.default_rng(1)
    feeds = [{"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(3)]
    graph = from_module(_Decoder(), feeds[0], "decoder")
    checked = []
    for rate in (100, 0):
        with cuda.tvm_target, tvm.transform.PassContext(opt_level=3):
            fused = fuse(lower_model(graph, _config(graph, feeds, rate))[0], cuda.tvm_target)
        for gv, func in fused.functions.items():
            if not isinstance(func, tvm.tirx.PrimFunc) or "conv2d_transpose" not in gv.name_hint:
                continue
            sch = schedule_gemm(func, threads=ThreadMapping(emulate=True))
            assert sch is not None, gv.name_hint
            np.testing.assert_array_equal(*_emulated_and_reference(func, sch, rng), err_msg=gv.name_hint)
            checked.append((rate, str(func.params[-1].dtype)))
    assert sorted(checked) == [(0, "float32")] * 3 + [(100, "uint8")] * 3, checked  # (one with an output padding)


def test_cuda_gemm_schedules_compute_int8_attention_products_exactly(cuda):
    """Attention with 3 heads of 26, every layer int8 (``--int8-attention``): the CUDA GEMM
    schedules of its functions, threads emulated (as above), are exact against the unscheduled
    fused functions, the two products of two activations among them (no GPU here runs them)."""
    from test_compile import _Heads

    from tvm_mpq.api import config_for_rate
    from tvm_mpq.frontends.torch_frontend import from_module

    rng = np.random.default_rng(2)
    feeds = [{"x": rng.normal(size=(1, 20, 78)).astype(np.float32)} for _ in range(3)]
    graph = from_module(_Heads(), feeds[0], "heads")
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    products = []
    for name, func, sch in _scheduled_gemms(graph, config, cuda.tvm_target):
        np.testing.assert_array_equal(*_emulated_and_reference(func, sch, rng), err_msg=name)
        if 1 not in [int(i) for i in (func.attrs or {}).get("layout_free_buffers", [])]:
            products.append(name)  # (its second operand is no constant: an activation)
    assert len(products) == 2, products


@pytest.mark.parametrize("rate", [0, 50, 100])
def test_cli_compiles_mtcnn_rnet_for_cuda(cuda, rate, tmp_path):
    out = tmp_path / "rnet.so"
    proc = subprocess.run([sys.executable, "-m", "tvm_mpq.cli", "compile", "mtcnn-rnet", "--rate", str(rate),
                           "--calib-size", "8", "--target", "cuda", "-o", str(out), "--cache-dir", str(tmp_path),
                           *(["--no-cuda-graph"] if rate == 50 else [])],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(out.with_suffix(".compile.json").read_text())
    assert (stats["build"]["cuda_graph_captures"] == 0) == (rate == 50), stats["build"]  # a CUDA graph by default
    said = "cuda graphs: none" if rate == 50 else f"cuda graphs: {stats['build']['cuda_graph_captures']} captured"
    assert said in proc.stdout, proc.stdout
    macs = {k: v for k, v in stats["build"]["kernels"].items() if any(m in k for m in MAC_MARKERS)}
    assert sum(rule == "Int8GemmDp4a" for rule in macs.values()) == stats["int8_layers"], macs
    assert (stats["int8_layers"] == 0) == (rate == 0)
    assert read_elf_machine(out) == EM_X86_64 and EM_CUDA in embedded_elf_machines(out.read_bytes())
    assert (EXACT_DIVISION in out.read_bytes()) == (rate > 0)  # int8 epilogues divide by their scale exactly


@pytest.mark.parametrize("flag", ["--cuda-fast-math", "--no-cuda-graph"])
def test_cuda_options_are_refused_for_a_cpu_target(flag, capsys, tmp_path):
    from tvm_mpq.cli import main

    assert main(["compile", "mtcnn-rnet", "--rate", "100", "--target", "x86", flag,
                 "-o", str(tmp_path / "rnet.so")]) == 2
    err = capsys.readouterr().err
    assert f"{flag} applies to --target cuda (got --target x86)" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_cuda_run_needs_a_gpu(small_graph, small_feeds, tmp_path):
    if not tvm.cuda(0).exist:
        pytest.skip("no CUDA GPU on this machine (tvm.cuda().exist is False): CUDA compile is tested, the run is not")
    from targets.rpc import LocalRpcServer, RemoteModel
    from tvm_mpq.runtime.executor import compile_graph

    target = get_target("cuda")
    path = target.export(target.compile(small_graph), tmp_path / "cuda.so")
    feed = small_feeds[0]
    with LocalRpcServer("x86") as server:
        session = server.connect()
        with RemoteModel(session, path, target) as model:
            out = model.run(feed)
            stats = model.time(feed, repeat=5, max_seconds=5)
        del session
    np.testing.assert_allclose(out[0], compile_graph(small_graph).run(feed)[0], rtol=1e-4, atol=1e-4)
    assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms


def test_setup_aarch64_cli_is_idempotent(aarch64_toolchain, capsys):
    from tvm_mpq.cli import main

    assert main(["setup-aarch64"]) == 0
    out = capsys.readouterr().out
    assert "aarch64-linux-gnu-g++" in out and "apache-tvm 0.27.0.post1" in out
    assert "building" not in out  # cached: nothing rebuilt


def test_rpc_server_cli_rejects_an_unknown_target(capsys):
    from tvm_mpq.cli import main

    assert main(["rpc-server", "--target", "riscv"]) == 2
    assert "no local RPC server for target 'riscv'" in capsys.readouterr().err
