"""``tvm-mpq sweep`` for real: mtcnn-rnet swept on x86 over a local RPC server, on aarch64 under
QEMU, over a tracker pool of two loopback servers, compile-only for CUDA without a GPU, and the
errors a user can make (unreachable server, wrong key, server for another CPU, bad options).

Every point is compiled, exported, uploaded to a real ``tvm.rpc`` server and timed there.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from tvm_mpq.cli import main

from targets.elf import EM_AARCH64, EM_CUDA, EM_X86_64, embedded_elf_machines, read_elf_machine
from targets.rpc import LocalRpcServer
from targets.rpc.net import free_port, is_listening

MODEL = "mtcnn-rnet"
RNET_LAYERS = ["conv1", "conv2", "conv3", "dense4", "dense5_1"]
# docs/design.md "Report contract": the contract's keys (more are welcome)
TOP_KEYS = {"model": str, "target": str, "device": str, "tvm_version": str, "analysis": dict, "points": list}
ANALYSIS_KEYS = {"method": str, "seconds": float, "n_layers": int}
POINT_KEYS = {"method": str, "requested_rate": float, "bops_reduction_rate": float, "bops_ratio": float,
              "fp32_layers": list, "n_qdq": int, "model_size_mb": float, "latency_ms": dict, "fidelity": dict,
              "accuracy": dict}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One calibration cache for the module's sweeps (each sweep analyzes once per method)."""
    return tmp_path_factory.mktemp("cache")


def sweep(capsys, out: Path, *args: str, cache: Path | None = None) -> tuple[int, str, str]:
    """Run ``tvm-mpq sweep MODEL ARGS -o out`` in this process: (exit code, stdout, stderr)."""
    argv = ["sweep", MODEL, *args, "-o", str(out)] + (["--cache-dir", str(cache)] if cache else [])
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def check_contract(report: dict, points: int, labelled: bool = True, ran: bool = True) -> None:
    """Every key docs/design.md lists, with its type; latency / fidelity / accuracy filled in."""
    for key, kind in TOP_KEYS.items():
        assert isinstance(report[key], kind), key
    for key, kind in ANALYSIS_KEYS.items():
        assert isinstance(report["analysis"][key], kind), key
    assert report["analysis"]["n_layers"] == len(RNET_LAYERS) and report["analysis"]["seconds"] > 0
    assert len(report["points"]) == points
    for p in report["points"]:
        if not ran:
            assert p["latency_ms"] is None and p["fidelity"] is None and p["run_skipped"]
            continue
        for key, kind in POINT_KEYS.items():
            assert isinstance(p[key], kind), (key, p[key])
        lat = p["latency_ms"]
        assert 0 < lat["p10"] <= lat["median"] <= lat["p90"] and lat["repeat"] >= 3
        assert len(lat["per_round"]) == lat["rounds"] == report["rounds"]
        ratio = p["ratio_to_fp32"]
        assert len(ratio["per_round"]) == report["rounds"] and ratio["min"] <= ratio["median"] <= ratio["max"]
        if p["n_fp32_layers"] == p["n_layers"]:  # the rate-0 point is the baseline: 1 in every round
            assert ratio["per_round"] == [1.0] * report["rounds"]
        assert {"top1_agreement", "output_sqnr_db"} <= set(p["fidelity"])
        assert 0 <= p["fidelity"]["top1_agreement"] <= 1
        assert set(p["accuracy"]) == ({"lfw_accuracy"} if labelled else set())
        assert set(p["fp32_layers"]) <= set(RNET_LAYERS)
        assert p["model_size_mb"] > 0.1
        assert math.isclose(p["bops_ratio"], 1.0) == (p["bops_reduction_rate"] == 0.0)


def check_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 600
    assert image[..., :3].std() > 0.05  # something is drawn


def by_rate(report: dict, method: str = "quantunev2") -> dict[float, dict]:
    return {p["requested_rate"]: p for p in report["points"] if p["method"] == method}


def test_x86_sweep_over_a_local_server_writes_json_markdown_and_png(capsys, tmp_path, cache_dir):
    out = tmp_path / "sweep" / "report.json"
    libs = tmp_path / "libs"
    rc, stdout, _ = sweep(capsys, out, "--target", "x86", "--rates", "0,50,100", "--methods", "quantunev2,mixquant",
                          "--eval-size", "16", "--rounds", "2", "--repeat", "3", "--max-time", "1",
                          "--keep-libs", str(libs), cache=cache_dir)
    assert rc == 0
    report = json.loads(out.read_text())
    mixquant = [p for p in report["points"] if p["method"] == "mixquant"]
    check_contract(report, points=3 + len(mixquant))
    assert report["model"] == MODEL and report["target"] == "x86" and report["tvm_version"].startswith("0.27")
    assert "local RPC server" in report["device"] and not report["emulated"]
    assert report["analysis"]["method"] == "quantunev2"
    assert [a["method"] for a in report["analyses"]] == ["quantunev2", "mixquant"]
    assert report["eval"] == {"name": "mtcnn-rnet/held-out[16:32]", "samples": 16, "labelled": True,
                              "source": report["eval"]["source"]}
    assert report["reference"]["accuracy"]["lfw_accuracy"] >= 0.9
    # one progress line per point with its fidelity and server, one with its latency over the rounds
    scored = [ln for ln in stdout.splitlines() if ln.startswith("[") and "127.0.0.1:" in ln and "top1_agreement" in ln]
    timed = [ln for ln in stdout.splitlines() if ln.startswith("[") and "median" in ln and "x fp32" in ln]
    assert len(scored) == len(timed) == len(report["points"]), stdout
    assert report["rounds"] == 2 and all(p["latency_ms"]["rounds"] == 2 for p in report["points"])
    points = by_rate(report)
    fp32, int8 = points[0.0], points[100.0]
    # rate 0: the fp32 model through RPC agrees with the fp32 reference run on the host
    assert fp32["fp32_layers"] == RNET_LAYERS and fp32["n_qdq"] == 0 and fp32["bops_reduction_rate"] == 0.0
    assert fp32["fidelity"]["top1_agreement"] == 1.0 and fp32["fidelity"]["output_sqnr_db"] > 80
    # rate 100: every layer int8, Q/DQ only at the model's edges, a real but bounded error
    assert int8["fp32_layers"] == [] and int8["bops_reduction_rate"] == 100.0 and int8["bops_ratio"] == 0.0625
    assert 0 < int8["n_qdq"] < int8["n_qdq_naive"]
    assert 20 < int8["fidelity"]["output_sqnr_db"] < 60 and int8["accuracy"]["lfw_accuracy"] >= 0.8
    assert points[50.0]["bops_reduction_rate"] >= 50.0  # a rate target is a lower bound
    # bit-width method: each of its own assignments is a point at the rate it achieves
    assert len(mixquant) >= 2 and all(p["allocation"].startswith("qem=") for p in mixquant)
    assert all(p["requested_rate"] == p["bops_reduction_rate"] for p in mixquant)
    # the libraries were exported for x86 and their size is the reported model size
    for p in report["points"]:
        lib = Path(p["library"])
        assert read_elf_machine(lib) == EM_X86_64
        assert p["model_size_mb"] == pytest.approx(lib.stat().st_size / 1e6)
    assert int8["model_size_mb"] < fp32["model_size_mb"]  # int8 weights
    # Markdown: a row per point; PNG: a real image; the local server is gone
    md = out.with_suffix(".md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| quantunev2 |") or ln.startswith("| mixquant |")]
    assert len(rows) == len(report["points"]) and "lfw_accuracy" in md and "top1_agreement" in md
    assert all(f"| mixquant | {p['allocation']} |" in md for p in mixquant)
    check_png(out.with_suffix(".png"))
    host, port = report["rpc"]["servers_used"][0].rsplit(":", 1)
    assert report["rpc"]["mode"] == "local-server" and len(report["rpc"]["servers_used"]) == 1
    assert not is_listening(host, int(port))


def test_aarch64_sweep_runs_on_the_qemu_server(capsys, tmp_path, cache_dir):
    out = tmp_path / "report.json"
    libs = tmp_path / "libs"
    rc, stdout, _ = sweep(capsys, out, "--target", "aarch64", "--rates", "0,100", "--methods", "inorder",
                          "--eval-size", "4", "--keep-libs", str(libs), cache=cache_dir)
    assert rc == 0, stdout
    report = json.loads(out.read_text())
    check_contract(report, points=2)
    assert report["emulated"] and "QEMU" in report["device"] and "QEMU" in report["latency_note"]
    assert "[QEMU emulation]" in stdout
    for p in report["points"]:
        assert read_elf_machine(p["library"]) == EM_AARCH64
    points = by_rate(report, "inorder")
    # the aarch64 fp32 model agrees with the host's fp32 run; int8 as on x86
    assert points[0.0]["fidelity"]["top1_agreement"] == 1.0 and points[0.0]["fidelity"]["output_sqnr_db"] > 60
    assert points[100.0]["n_qdq"] > 0 and 20 < points[100.0]["fidelity"]["output_sqnr_db"] < 60
    assert "QEMU" in out.with_suffix(".md").read_text()
    check_png(out.with_suffix(".png"))


def test_tracker_pool_of_two_servers_serves_one_sweep(capsys, tmp_path, cache_dir, tracker, pool):
    out = tmp_path / "report.json"
    rc, stdout, _ = sweep(capsys, out, "--target", "x86", "--tracker", tracker.address, "--key", "pool",
                          "--rates", "0,50,100", "--methods", "inorder", "--eval-size", "8",
                          "--rounds", "2", "--repeat", "3", "--max-time", "1", cache=cache_dir)
    assert rc == 0, stdout
    report = json.loads(out.read_text())
    addresses = {f"127.0.0.1:{s.port}" for s in pool}
    used = [p["server"] for p in report["points"]]
    assert set(used) == addresses, used  # both servers measured points
    assert set(report["rpc"]["servers_used"]) == addresses and report["rpc"]["mode"] == "tracker"
    # the server check, then one session per device held for all of its points
    assert all(s.sessions_served() >= 1 for s in pool) and sum(s.sessions_served() for s in pool) >= 3
    assert "2 server(s) of key 'pool'" in report["device"]
    check_contract(report, points=3)
    assert [p["requested_rate"] for p in report["points"]] == [0.0, 50.0, 100.0]
    # each device timed its own points interleaved with its own fp32 baseline
    devices = {d["server"]: d for d in report["devices"]}
    assert set(devices) == addresses and sorted(i for d in devices.values() for i in d["points"]) == [0, 1, 2]
    assert {d["baseline"] for d in devices.values()} == {report["baseline"]["source"]}
    assert report["baseline"]["point"] == 0  # the rate-0 point's library, timed on both devices
    assert sorted(d["baseline_among_points"] for d in devices.values()) == [False, True]
    assert {d["server"] for d in report["stability"]["devices"]} == addresses


def test_tracker_wrong_key_fails_fast_with_one_line(capsys, tmp_path, tracker, pool):
    start = time.monotonic()
    rc, _, err = sweep(capsys, tmp_path / "r.json", "--target", "x86", "--tracker", tracker.address, "--key", "nope")
    assert rc == 2 and time.monotonic() - start < 20
    assert err.strip() == f"tvm-mpq: error: RPC tracker {tracker.address} has no server with key 'nope' (keys: pool)"
    rc, _, err = sweep(capsys, tmp_path / "r.json", "--target", "x86", "--tracker", tracker.address)
    assert rc == 2 and "needs --key" in err
    assert not (tmp_path / "r.json").exists()


def test_unreachable_server_wrong_key_and_wrong_cpu_are_one_line_errors(capsys, tmp_path):
    port = free_port()
    start = time.monotonic()
    rc, _, err = sweep(capsys, tmp_path / "r.json", "--target", "x86", "--rpc", f"127.0.0.1:{port}")
    assert rc == 2 and err.strip() == f"tvm-mpq: error: RPC server 127.0.0.1:{port} unreachable: connection refused"
    with LocalRpcServer("x86", key="alpha") as server:
        address = f"127.0.0.1:{server.port}"
        rc, _, err = sweep(capsys, tmp_path / "r.json", "--target", "x86", "--rpc", address, "--key", "beta")
        assert rc == 2 and f"tvm-mpq: error: RPC server {address} rejected key 'beta'" in err
        assert len(err.strip().splitlines()) == 1
        rc, _, err = sweep(capsys, tmp_path / "r.json", "--target", "aarch64", "--rpc", address, "--key", "alpha")
        assert rc == 2 and err.strip() == (f"tvm-mpq: error: {address} runs on x86-64, but target aarch64 builds "
                                           "AArch64 libraries: give a server for aarch64")
    assert time.monotonic() - start < 60  # all of it before any analysis
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--target", "x86", "--rates", "0,150"], "--rates: 150 is outside 0..100"),
    (["--target", "x86", "--rates", "0,a"], "--rates: 'a' is not a number"),
    (["--target", "x86", "--methods", "quantunev2,nope"], "--methods: unknown method 'nope'"),
    (["--target", "sparc"], "unknown --target 'sparc'"),
    (["--target", "x86", "--key", "k"], "--key needs --rpc"),
    (["--target", "x86", "--eval-size", "0"], "--eval-size must be positive"),
])
def test_bad_options_are_one_line_errors(capsys, tmp_path, args, message):
    rc, _, err = sweep(capsys, tmp_path / "r.json", *args)
    assert rc == 2 and err.startswith("tvm-mpq: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_cuda_sweep_compiles_and_skips_the_run_without_a_gpu(capsys, tmp_path, cache_dir):
    from targets.cuda import find_nvcc
    from tvm_mpq.sweep.remote import local_gpu_name

    if find_nvcc() is None:
        pytest.skip("nvcc not installed: the CUDA target cannot compile here")
    out = tmp_path / "report.json"
    libs = tmp_path / "libs"
    rc, stdout, _ = sweep(capsys, out, "--target", "cuda", "--rates", "100", "--methods", "inorder", "--eval-size", "4",
                          "--keep-libs", str(libs), cache=cache_dir)
    assert rc == 0, stdout
    report = json.loads(out.read_text())
    (point,) = report["points"]
    data = Path(point["library"]).read_bytes()
    assert EM_CUDA in embedded_elf_machines(data)  # a cubin inside the host library
    if local_gpu_name() is not None:  # a GPU machine runs it on its local server
        check_contract(report, points=1)
        return
    check_contract(report, points=1, ran=False)
    assert "no GPU reachable" in stdout and "no GPU reachable" in point["run_skipped"]
    assert report["rpc"]["mode"] == "compile-only" and point["n_qdq"] > 0 and point["model_size_mb"] > 0
    assert "Runs skipped" in out.with_suffix(".md").read_text()
    check_png(out.with_suffix(".png"))


def test_cuda_sweep_on_a_server_without_gpu_is_an_error(capsys, tmp_path):
    from targets.cuda import find_nvcc

    if find_nvcc() is None:
        pytest.skip("nvcc not installed")
    with LocalRpcServer("x86") as server:
        address = f"127.0.0.1:{server.port}"
        session = server.connect()
        has_gpu = session.cuda(0).exist
        del session
        if has_gpu:
            pytest.skip("this machine has a GPU: its server runs CUDA")
        rc, _, err = sweep(capsys, tmp_path / "r.json", "--target", "cuda", "--rpc", address)
    assert rc == 2 and err.strip() == (f"tvm-mpq: error: RPC server {address} has no CUDA device: give a GPU "
                                       "host's server for --target cuda")


def test_report_json_is_strict_and_markdown_handles_missing_values(tmp_path):
    from tvm_mpq.sweep.report import markdown, write_json

    report = {"model": "m", "target": "x86", "device": "d", "tvm_version": "0.27", "analysis": None,
              "points": [{"method": "inorder", "requested_rate": 50.0, "bops_reduction_rate": 51.0, "bops_ratio": 0.5,
                          "fp32_layers": ["a"], "n_qdq": 2, "model_size_mb": 1.0, "raw_reduction_rate": float("nan"),
                          "latency_ms": None, "fidelity": {"output_sqnr_db": float("inf")}, "accuracy": {}}],
              "eval": {"source": "s"}, "reference": {"runs_on": "host"},
              "timing": {"method": "t", "repeat": 3, "max_seconds": 1.0}}
    path = write_json(report, tmp_path / "r.json")
    loaded = json.loads(path.read_text())
    assert loaded["points"][0]["raw_reduction_rate"] is None and loaded["points"][0]["fidelity"]["output_sqnr_db"] is None
    row = [ln for ln in markdown(report).splitlines() if ln.startswith("| inorder")][0]
    assert row.startswith("| inorder | 50 | 51.0 | 0.5000 | 1 | 2 | 1.00 | - | - | - |")
    assert np.isfinite(json.loads(path.read_text())["points"][0]["bops_ratio"])


def test_report_counts_tuned_and_reused_kernels_per_point():
    from tvm_mpq.sweep.report import markdown, tuning_summary

    def point(rate: float, tuning: dict | None) -> dict:
        return {"method": "quantunev2", "requested_rate": rate, "bops_reduction_rate": rate, "bops_ratio": 1.0,
                "fp32_layers": [], "n_qdq": 0, "model_size_mb": 1.0, "latency_ms": None, "fidelity": {},
                "accuracy": {}, "build": {"tuning": tuning} if tuning else {}}

    where = {"device": "tracker t:1 key 'k'", "database": "db@k", "trials_per_task": 8}
    points = [point(0, {**where, "tasks": 3, "tuned": 3, "reused": 0, "seconds": 40.0}),
              point(50, {**where, "tasks": 4, "tuned": 1, "reused": 3, "seconds": 9.0}),
              point(100, {**where, "tasks": 2, "tuned": 0, "reused": 2, "seconds": 0.0})]
    summary = tuning_summary(points)
    assert summary is not None and (summary["tuned"], summary["reused"]) == (4, 5)
    assert [(p["point"], p["tuned"], p["reused"]) for p in summary["per_point"]] == [(0, 3, 0), (1, 1, 3), (2, 0, 2)]
    report = {"model": "m", "target": "aarch64", "device": "d", "tvm_version": "0.27", "analysis": None,
              "points": points, "eval": {"source": "s"}, "reference": {"runs_on": "host"}, "emulated": True,
              "timing": {"method": "t", "repeat": 3, "max_seconds": 1.0}, "tuning": summary}
    text = markdown(report)
    assert "tuned / reused |" in text and "emulated timings rank candidates for the emulator" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| quantunev2")]
    assert [r.rsplit("|", 2)[1].strip() for r in rows] == ["3 / 0", "1 / 3", "0 / 2"]
    assert tuning_summary([point(0, None)]) is None
    # a sweep without a rate-0 point builds (and tunes) an fp32 baseline: counted in the totals
    baseline = {**where, "tasks": 3, "tuned": 2, "reused": 1, "seconds": 30.0}
    with_baseline = tuning_summary(points[1:], baseline)
    assert with_baseline is not None and (with_baseline["tuned"], with_baseline["reused"]) == (3, 6)
    assert with_baseline["baseline"] == {"tasks": 3, "tuned": 2, "reused": 1, "seconds": 30.0}
    assert summary["baseline"] is None and tuning_summary([point(0, None)], baseline)["tuned"] == 2
    assert "and the fp32 baseline (db@k)" in markdown({**report, "tuning": with_baseline})
