"""``benchmarks/quant_quality.py``'s ranking tally: the refined QuantuneV2 against each other
ranking, as ``tvm-mpq eval`` counts it, with the samples only one of the two builds changes.

The report here has the shape ``quant_quality.run_model`` writes (one point per ranking,
quantizer variant and requested rate, each with its figures and its top-1 flips); the figures are
chosen so every count and every one-sided flip is known in advance."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quant_quality(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("quant_quality", ROOT / "benchmarks" / "quant_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _point(method: str, rate: float, agreement: float, sqnr: float, flips: dict[int, tuple[float, float]]) -> dict:
    return {"tool": "tvm-mpq", "variant": "minmax+bc+ca", "method": method, "requested_rate": rate,
            "fp32_layers": [], "fidelity": {"top1_agreement": agreement, "output_sqnr_db": sqnr}, "accuracy": {},
            "flips": [{"sample": k, "fp32_top2": list(p)} for k, p in flips.items()]}


def test_tally_counts_rates_and_names_the_samples_one_build_changes(monkeypatch):
    qq = _quant_quality(monkeypatch)
    tie, near = (0.146, 0.144), (0.165, 0.161)
    result = {"points": [
        {"tool": "fp32, inputs on the 8-bit grid", "variant": "-", "method": "-", "requested_rate": 0,
         "fp32_layers": None, "fidelity": {"top1_agreement": 0.9, "output_sqnr_db": 30.0}, "accuracy": {}, "flips": []},
        _point("quantunev2-e2e", 50, 0.9375, 32.0, {14: tie}),
        _point("quantunev2-e2e", 20, 0.9375, 38.0, {23: near}),
        _point("top1", 50, 0.9375, 31.0, {27: (0.068, 0.064)}),
        _point("top1", 20, 1.0, 38.0, {}),
        _point("inorder", 50, 0.875, 23.0, {1: (0.206, 0.173), 13: (0.077, 0.064)}),
        # inorder has no 20% point: that rate is left out of its row, not counted
    ]}
    lines = qq.ranking_tally(result)
    rows = {tuple(c.strip() for c in line.strip("|").split("|"))[:2]: [c.strip() for c in line.strip("|").split("|")]
            for line in lines if line.startswith("| quantunev2")}
    assert set(rows) == {("quantunev2-e2e", "top1"), ("quantunev2-e2e", "inorder")}
    vs_top1 = rows[("quantunev2-e2e", "top1")]
    assert vs_top1[3] == "0 / 1 / 1"  # equal at 50%, behind at 20%
    assert vs_top1[4] == "-0.062"
    assert vs_top1[5] == "1 / 1 / 0"  # SQNR: 32 > 31 at 50%, equal at 20%
    assert vs_top1[6] == "50%: -#14 (0.146 / 0.144), +#27 (0.068 / 0.064); 20%: -#23 (0.165 / 0.161)"
    vs_inorder = rows[("quantunev2-e2e", "inorder")]
    assert vs_inorder[3] == "1 / 0 / 0" and vs_inorder[5] == "1 / 0 / 0"
    assert vs_inorder[6] == "50%: -#14 (0.146 / 0.144), +#1 (0.206 / 0.173), +#13 (0.077 / 0.064)"
    assert "Ranking tally" in qq.markdown({"host": {"cpu": "x", "flags_text": "-", "cores": 2, "tvm_version": "0.27",
                                                   "onnxruntime_version": "1"}, "created": "now", "command": "c",
                                          "results": [{**result, "model": "m", "eval": {"name": "m/held-out", "samples": 16},
                                                       "calib_samples": 16, "fp32": {"accuracy": {}}}]})


def test_no_tally_with_one_ranking(monkeypatch):
    qq = _quant_quality(monkeypatch)
    result = {"points": [_point("quantunev2", 50, 0.9, 25.0, {})]}
    assert qq.ranking_tally(result) == []
