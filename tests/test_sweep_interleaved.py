"""Interleaved sweep timing: the round statistics on their own, and two real sweeps of
mtcnn-rnet on x86 (local RPC server, few rounds) run back to back.

Whether two runs' ratios agree within 10% is a benchmark on a quiet machine
(``benchmarks/sweep_back_to_back.py``), not a CI check: here the report's fields and what must
hold on any machine are checked.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tvm_mpq.cli import main
from tvm_mpq.sweep.interleave import round_order
from tvm_mpq.sweep.measure import deal
from tvm_mpq.sweep.rounds import latency_over_rounds, monotonicity, ratio_summary, ratios_within_rounds, stability


@dataclass(frozen=True)
class Stats:
    """What ``latency_over_rounds`` reads of a ``LatencyStats``."""

    min_ms: float
    repeat: int = 3
    number: int = 10


def test_each_round_starts_one_library_later():
    keys = ["fp32", "a", "b"]
    assert [round_order(keys, r) for r in range(4)] == [["fp32", "a", "b"], ["a", "b", "fp32"],
                                                         ["b", "fp32", "a"], ["fp32", "a", "b"]]


def test_points_are_dealt_out_over_the_devices():
    assert deal([0, 1, 2, 3, 4], 2) == [[0, 2, 4], [1, 3]]
    assert deal([0, 1], 1) == [[0, 1]]


def test_ratios_are_taken_within_each_round():
    # the machine slows down by 2x in round 2: latencies move, ratios do not
    fp32, point = [10.0, 20.0, 10.5], [8.0, 16.0, 8.4]
    assert ratios_within_rounds(point, fp32) == pytest.approx([0.8, 0.8, 0.8])
    summary = ratio_summary(ratios_within_rounds(point, fp32))
    assert summary["median"] == pytest.approx(0.8) and summary["min"] == pytest.approx(summary["max"])
    latency = latency_over_rounds([Stats(v) for v in point])
    assert latency["median"] == 8.4 and latency["min"] == 8.0 and latency["max"] == 16.0
    assert latency["per_round"] == point and latency["rounds"] == 3
    assert latency["p10"] <= latency["median"] <= latency["p90"]
    moved = stability({"dev": fp32})
    assert moved["fp32_spread_pct"] == pytest.approx((20.0 - 10.0) / 10.5 * 100)
    assert moved["devices"][0]["fp32_ms_per_round"] == fp32


def _point(method: str, rate: float, ratios: list[float]) -> dict:
    return {"method": method, "bops_reduction_rate": rate, "ratio_to_fp32": {"per_round": ratios}}


def test_a_step_needs_a_sign_test_majority_of_rounds():
    from tvm_mpq.sweep.rounds import rounds_needed

    assert [rounds_needed(n) for n in (1, 3, 5, 10, 20)] == [1, 3, 5, 9, 15]
    ten = [1.0] * 10
    one_outlier = [_point("m", 0.0, ten), _point("m", 50.0, [1.3] + [0.8] * 9)]
    two_outliers = [_point("m", 0.0, ten), _point("m", 50.0, [1.3, 1.2] + [0.8] * 8)]
    assert monotonicity(one_outlier)["m"]["verdict"] == "monotone"
    assert monotonicity(two_outliers)["m"]["verdict"] == "inconclusive"


def test_monotonicity_reads_the_within_round_ratios():
    points = [_point("m", 0.0, [1.0, 1.0, 1.0]), _point("m", 50.0, [0.9, 0.8, 0.85]),
              _point("m", 100.0, [0.7, 0.7, 0.7]), _point("m", 100.0, [0.9, 0.9, 0.9]),  # same rate: first kept
              _point("up", 0.0, [1.0, 1.0]), _point("up", 30.0, [1.2, 1.1]), _point("up", 60.0, [0.9, 0.8]),
              _point("mixed", 0.0, [1.0, 1.0]), _point("mixed", 50.0, [0.9, 1.1]),
              _point("one", 0.0, [1.0]), _point("one", 0.0, [1.0])]
    verdicts = monotonicity(points)
    assert verdicts["m"]["verdict"] == "monotone" and len(verdicts["m"]["steps"]) == 2
    assert [s["verdict"] for s in verdicts["up"]["steps"]] == ["rises", "falls"]
    assert verdicts["up"]["verdict"] == "not monotone" and verdicts["up"]["steps"][0]["rounds_slower"] == 2
    assert verdicts["mixed"]["verdict"] == "inconclusive" and verdicts["one"]["verdict"] == "n/a"
    assert verdicts["m"]["steps"][0]["median_change"] == pytest.approx(-0.15)


def _sweep(out: Path, cache: Path, capsys) -> tuple[dict, str]:
    rc = main(["sweep", "mtcnn-rnet", "--target", "x86", "--rates", "0,25,100", "--methods", "quantunev2",
               "--eval-size", "8", "--rounds", "3", "--repeat", "3", "--max-time", "0.5", "--cache-dir", str(cache),
               "-o", str(out)])
    assert rc == 0
    return json.loads(out.read_text()), capsys.readouterr().out


def test_two_interleaved_sweeps_back_to_back(tmp_path, capsys):
    cache = tmp_path / "cache"
    first, log = _sweep(tmp_path / "a" / "report.json", cache, capsys)
    second, _ = _sweep(tmp_path / "b" / "report.json", cache, capsys)
    for report in (first, second):
        rounds = report["rounds"]
        assert rounds == 3 and report["timing"]["rounds"] == 3 and "interleaved" in report["timing"]["method"]
        assert report["baseline"]["point"] == 0 and report["eval"]["name"] == "mtcnn-rnet/held-out[16:24]"
        (device,) = report["devices"]
        assert device["points"] == [0, 1, 2] and device["baseline_among_points"]
        moved = report["stability"]
        assert len(moved["devices"][0]["fp32_ms_per_round"]) == rounds and moved["fp32_spread_pct"] >= 0
        assert moved["fp32_spread_pct"] == moved["devices"][0]["fp32_spread_pct"]
        for p in report["points"]:
            lat, ratio = p["latency_ms"], p["ratio_to_fp32"]
            assert len(lat["per_round"]) == len(ratio["per_round"]) == rounds
            assert all(r > 0 and math.isfinite(r) for r in ratio["per_round"])
            assert ratio["min"] <= ratio["median"] <= ratio["max"]
            # each round's ratio is the point's latency over the fp32 point's in that round
            fp32 = report["points"][0]["latency_ms"]["per_round"]
            assert ratio["per_round"] == pytest.approx([a / b for a, b in zip(lat["per_round"], fp32)])
        assert report["points"][0]["ratio_to_fp32"]["per_round"] == [1.0] * rounds
        verdict = report["monotonicity"]["quantunev2"]
        assert verdict["verdict"] in ("monotone", "not monotone", "inconclusive")
        assert [(s["from_rate"], s["to_rate"]) for s in verdict["steps"]] == [
            (report["points"][0]["bops_reduction_rate"], report["points"][1]["bops_reduction_rate"]),
            (report["points"][1]["bops_reduction_rate"], report["points"][2]["bops_reduction_rate"])]
        md = (tmp_path / ("a" if report is first else "b") / "report.md").read_text()
        assert "3 round(s)" in md and "fp32 baseline moved" in md and "x fp32 per round" in md
        assert f"**{verdict['verdict']}**" in md
    # same configs, same samples, deterministic kernels: the second run's fidelity is the first's
    assert [p["fidelity"] for p in first["points"]] == [p["fidelity"] for p in second["points"]]
    assert [p["bops_reduction_rate"] for p in first["points"]] == [p["bops_reduction_rate"] for p in second["points"]]
    # progress: one line per round, naming the fp32 latency and every point's ratio
    rounds = [ln for ln in log.splitlines() if re.search(r" round \d/3: fp32 [\d.]+ ms; .*x; .*x$", ln)]
    assert len(rounds) == 3, log
