"""A library built here runs on a host that has only TVM's runtime (``benchmarks/cuda_device.py``).

The GPU run itself needs a GPU (docs/results.md "CUDA builds on a GPU" has it); here the build
half runs for real and the runtime half runs on the CPU: the runtime-only package that the
benchmark ships loads a library in a process with no compiler library, and ``run`` says in one
line that there is no GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from targets import get_target
from tvm_mpq.errors import MpqError

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "cuda_device.py"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}", "TVM_MPQ_NO_PROGRESS": "1"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    try:
        get_target("cuda", arch="sm_90").check_toolchain()
    except MpqError as err:
        pytest.skip(str(err))
    folder = tmp_path_factory.mktemp("gpu")
    proc = subprocess.run([sys.executable, str(BENCH), "prepare", "--dir", str(folder), "--models", "mtcnn-rnet,nope",
                           "--rates", "100", "--calib-size", "4", "--eval-size", "2"],
                          capture_output=True, text=True, env=_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return folder, json.loads((folder / "manifest.json").read_text())


def test_prepare_builds_the_cuda_library_its_references_and_a_runtime_only_package(prepared):
    folder, manifest = prepared
    (entry,) = manifest["entries"]
    assert entry["name"] == "mtcnn-rnet.r100" and entry["int8_layers"] > 0
    assert entry["int8_mac_kernels_on_dp4a"] == entry["int8_mac_kernels"] > 0
    reference = np.load(folder / entry["reference"])
    assert {f"cpu{i}_0" for i in range(2)} | {f"fp32{i}_0" for i in range(2)} <= set(reference.files)
    assert [f["model"] for f in manifest["failed_builds"]] == ["nope"]  # one line, the rest still built
    with tarfile.open(folder / "tvm-runtime.tar.gz") as tar:
        names = tar.getnames()
    assert "tvm/lib/libtvm_runtime.so" in names and "tvm/lib/libtvm_runtime_cuda.so" in names
    assert "tvm/lib/libtvm_compiler.so" not in names and not any(n.startswith("tvm/3rdparty") for n in names)


def test_the_runtime_only_package_runs_a_library_built_here(prepared, small_graph, small_feeds, tmp_path):
    folder, _ = prepared
    target = get_target("x86")
    compiled = target.compile(small_graph)
    library = target.export(compiled, tmp_path / "small.so")
    np.save(tmp_path / "x.npy", small_feeds[0]["x"])
    with tarfile.open(folder / "tvm-runtime.tar.gz") as tar:
        tar.extractall(tmp_path / "site", filter="data")
    script = (
        "import sys, numpy as np, tvm\n"
        "from tvm.runtime.vm import VirtualMachine\n"
        "assert tvm.base._RUNTIME_ONLY and 'tvm_compiler' not in tvm.base._LOADED_LIBS\n"
        f"vm = VirtualMachine(tvm.runtime.load_module({str(library)!r}), tvm.cpu())\n"
        f"out = vm['main'](tvm.runtime.tensor(np.load({str(tmp_path / 'x.npy')!r})))\n"
        "out = out if hasattr(out, 'numpy') else out[0]\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, out.numpy())\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "TVM_USE_RUNTIME_LIB": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), compiled.run(small_feeds[0])[0], rtol=1e-5, atol=1e-6)


def test_run_without_a_gpu_says_so_in_one_line(prepared, tmp_path):
    import tvm

    folder, _ = prepared
    if tvm.cuda(0).exist:
        pytest.skip("this machine has a GPU: the run is the benchmark's, not this test's")
    proc = subprocess.run([sys.executable, str(BENCH), "run", "--dir", str(folder), "--out", str(tmp_path)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    line = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in line, proc.stderr[-2000:]
    assert line == "no CUDA GPU here (tvm.cuda(0).exist is False)" or line.startswith("no CUDA driver here:"), line
    assert not list(tmp_path.iterdir())


def test_prepare_leaves_out_libraries_past_the_size_limit_other_variants_first(tmp_path):
    """``prepare --max-mib``: builds of another variant go first, then the largest; a reference or
    input file goes with the last library that used it, unless the peer uses it."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from cuda_device import _fit
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    def entry(name: str, model: str, variant: str, mib: float) -> dict:
        library = tmp_path / "libs" / f"{name}.so"
        library.parent.mkdir(exist_ok=True)
        library.write_bytes(b"\0" * int(mib * 2**20))
        for kind in ("reference", "inputs"):
            (tmp_path / f"{model}.{kind}.npz").write_bytes(b"\0" * 1024)
        return {"name": name, "variant": variant, "library": f"libs/{name}.so", "library_mb": mib,
                "reference": f"{model}.reference.npz", "inputs": f"{model}.inputs.npz"}

    entries = [entry("a", "a", "exact", 2.0), entry("a.no-graph", "a", "no-graph", 1.5),
               entry("b", "b", "exact", 1.0), entry("c", "c", "exact", 2.5)]
    left = _fit(tmp_path, entries, 5.2, kept=set())
    assert [e["name"] for e in left] == ["a.no-graph", "c"]  # the other variant first, though smaller
    assert [e["name"] for e in entries] == ["a", "b"]
    assert not (tmp_path / "c.reference.npz").exists() and (tmp_path / "a.reference.npz").exists()
    left = _fit(tmp_path, entries, 1.1, kept={"a.inputs.npz"})
    assert [e["name"] for e in left] == ["a"] and [e["name"] for e in entries] == ["b"]
    assert not (tmp_path / "a.reference.npz").exists() and (tmp_path / "a.inputs.npz").exists()  # the peer's
    assert _fit(tmp_path, entries, 1.1, kept=set()) == []  # within the limit: nothing goes
