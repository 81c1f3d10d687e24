"""The tutorials run as tests, so they stay true: each must exit 0, print ``done`` and write a
``result.json`` whose figures are what the tutorial claims (checked per tutorial below)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tvm_mpq.config import PrecisionConfig

TUTORIALS = sorted((Path(__file__).parent.parent / "tutorials").glob("[0-9][0-9]_*.py"))


def check_compiler_engineer(r: dict, out: Path) -> None:
    """A metric, a method and a pass of one's own, composed into the compile pipeline."""
    layers = r["layers"]
    assert layers == ["conv1", "conv2", "fc"]
    # the new metric was measured on every layer and the new method ranks by it, largest first
    errors = [r["max_abs_error"][n] for n in r["sensitivity"]]
    assert sorted(r["sensitivity"]) == sorted(layers) and errors == sorted(errors, reverse=True) and errors[-1] > 0
    # the allocation returned the most sensitive layers to fp32 and met the 60% rate
    assert r["fp32_layers"] == r["sensitivity"][:len(r["fp32_layers"])] and r["achieved_rate"] >= 60
    # the pass sits after the annotation, before the lowering, and folded the scale away
    p = r["pipeline"]
    assert p.index("AnnotatePrecision") < p.index("FoldScaleIntoConv") < p.index("LowerToInteger") < p.index("FuseOps")
    assert r["scale_folded"]
    assert r["int8_layers"] == len(layers) - len(r["fp32_layers"]) >= 2
    # the IR edit took conv2 back to fp32: one int8 layer less, fewer quantize/dequantize borders
    assert r["edited_int8_layers"] == r["int8_layers"] - 1 and r["edited_n_qdq"] < r["n_qdq"]
    for label in ("mixed", "conv2 fp32"):
        assert r["top1_agreement"][label] == 1.0 and r["max_relative_error"][label] < 0.05


def check_edge_deployment(r: dict, out: Path) -> None:
    """ONNX file -> config at 50% -> AArch64 library -> run over RPC -> fidelity."""
    assert r["achieved_rate"] >= r["requested_rate"] == 50.0 and r["int8_layers"] >= 1
    config = PrecisionConfig.load(Path(r["config"]))
    assert config.fp32_layers() == r["fp32_layers"] and len(config.layers) == r["layers"]
    assert Path(r["library"]).is_file() and r["elf_machine"] == 183  # EM_AARCH64
    assert 0 < r["n_qdq"] < r["n_qdq_naive"]
    lat = r["latency_ms"]
    assert 0 < lat["p10"] <= lat["median"] <= lat["p90"]
    assert r["fidelity"]["top1_agreement"] >= 0.75 and r["fidelity"]["output_sqnr_db"] > 15


def check_cross_target_benchmark(r: dict, out: Path) -> None:
    """One sweep per target through a tracker, the latency-vs-rate plot of both."""
    assert set(r["reports"]) == {"x86", "aarch64"} and Path(r["plot"]).stat().st_size > 10_000
    assert "QEMU" in r["devices"]["aarch64"]
    rates = {float(x) for x in r["rates"].split(",")}
    for target, path in r["reports"].items():
        report = json.loads(Path(path).read_text())
        assert report["model"] == r["model"] and report["target"] == target
        for method in ("quantunev2", "inorder"):
            points = [p for p in report["points"] if p["method"] == method]
            assert {p["requested_rate"] for p in points} == rates
            assert all(p["latency_ms"]["median"] > 0 and p["ratio_to_fp32"]["median"] > 0 for p in points)
            achieved = [p["bops_reduction_rate"] for p in sorted(points, key=lambda p: p["requested_rate"])]
            assert achieved[0] == 0 and achieved == sorted(achieved) and achieved[-1] > 50
            fp32 = next(p for p in points if p["requested_rate"] == 0)
            assert fp32["fidelity"]["top1_agreement"] == 1.0 and not fp32["n_qdq"]


def check_edge_tuning(r: dict, out: Path) -> None:
    """Tuned on both servers behind the tracker during the sweep; the rebuild reused every kernel."""
    assert r["servers"] == 2 and all(n > 0 for n in r["sessions"])
    assert r["sweep_tuning"]["tuned"] > 0
    per_point = r["sweep_tuning"]["per_point"]
    baseline = r["sweep_tuning"]["baseline"]  # no rate-0 point: the fp32 baseline is built and tuned too
    assert baseline["tuned"] > 0 and sum(p["tuned"] for p in per_point) + baseline["tuned"] == r["sweep_tuning"]["tuned"]
    assert per_point[-1]["tuned"] == 0 and per_point[-1]["reused"] == per_point[-1]["tasks"] > 0  # same kernels
    rebuild = r["rebuild_tuning"]
    assert rebuild["tuned"] == 0 and rebuild["reused"] == rebuild["tasks"] > 0
    assert Path(r["library"]).stat().st_size > 10_000


CHECKS = {"01_compiler_engineer": check_compiler_engineer, "02_edge_deployment": check_edge_deployment,
          "03_cross_target_benchmark": check_cross_target_benchmark, "04_edge_tuning": check_edge_tuning}


def test_every_tutorial_has_a_check():
    assert sorted(CHECKS) == [p.stem for p in TUTORIALS]


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_and_finds_what_it_says(script: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TVM_MPQ_NO_PROGRESS": "1", "TVM_MPQ_TUTORIAL_OUT": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.rstrip().endswith("done")
    CHECKS[script.stem](json.loads((tmp_path / "result.json").read_text()), tmp_path)
