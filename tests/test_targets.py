"""Target registry, cross builds and toolchain errors: real compiles, real ELF files, real nvcc."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
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
