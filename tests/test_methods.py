"""Top-1 order, MixQuant and Pandey et al.: real compiles on small models and mtcnn-rnet.

Every number checked here is recomputed independently (a SimulateQuantization compile, the numpy
quantizers, the task metrics on hand-made outputs), never hard-coded.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tvm_mpq.allocation.bops import FP32, INT8, Precision, bops_ratio
from tvm_mpq.calibration import calibrate
from tvm_mpq.cli import main
from tvm_mpq.config import PrecisionConfig
from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.torch_frontend import from_module
from tvm_mpq.graph import build_layer_table
from tvm_mpq.metrics import task_metrics as tm
from tvm_mpq.metrics.task_metrics import output_sqnr_db
from tvm_mpq.metrics.local_metrics import mse, sqnr_db
from tvm_mpq.quantization.quantizers import act_qparams, fake_quant_weight
from tvm_mpq.runtime.executor import compile_graph
from tvm_mpq.sensitivity import EvalData, analyze, make_method, method_names
from tvm_mpq.sensitivity import layer_metrics
from tvm_mpq.sensitivity.pandey import parse_candidates, quantizer_groups
from tvm_mpq.sensitivity.pandey.phase2 import even_points
from tvm_mpq.sensitivity.probe import PrecisionProbe

from conftest import AttentionNet, annotation_for, simulated


# ------------------------------------------------------------------------------------------------
# helpers: the reference path is a SimulateQuantization compile per assignment
# ------------------------------------------------------------------------------------------------

def simulate(graph, table, feeds, precisions, ranges):
    """Outputs of ``graph`` with ``precisions`` through SimulateQuantization (one compile)."""
    annotations = {}
    for layer in table:
        p = precisions.get(layer.name, FP32)
        if p == FP32:
            continue
        data = act_qparams(*ranges[layer.data_var][p.a_bits], p.a_bits) if p.a_bits < 32 else None
        weight_act = None
        if layer.weight_param is None and p.w_bits < 32:
            weight_act = act_qparams(*ranges[layer.weight_var][p.w_bits], p.w_bits)
        annotations[layer.name] = annotation_for(layer, graph.params, data, p.w_bits if p.w_bits < 32 else None,
                                                 weight_act)
    compiled = compile_graph(simulated(graph, table, annotations))
    return [compiled.run(f) for f in feeds]


class _BranchNet(torch.nn.Module):
    """Two convs read the same tensor (one input quantizer): a ResNet-style downsample branch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.main = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.down = torch.nn.Conv2d(8, 8, 1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        z = torch.relu(self.main(y)) + self.down(y)
        return self.fc(z.mean((2, 3)))


@pytest.fixture(scope="module")
def attention():
    graph = from_module(AttentionNet(), {"x": np.zeros((1, 4, 8), np.float32)}, "attn")
    rng = np.random.default_rng(1)
    return graph, [{"x": rng.normal(size=(1, 4, 8)).astype(np.float32)} for _ in range(3)]


@pytest.fixture(scope="module")
def rnet():
    from tvm_mpq import zoo

    entry = zoo.get("mtcnn-rnet")
    graph = entry.load_graph()
    return graph, entry.calibration(16), EvalData(*entry.labelled(None))


# ------------------------------------------------------------------------------------------------
# the probe: one compile, any assignment, the same numbers as SimulateQuantization
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["small", "attention"])
def test_probe_matches_simulate_quantization(which, small_graph, small_feeds, attention):
    """On TVM's default build the probe computes SimulateQuantization's numbers bit for bit; on
    the CPU kernels (its default build) the same function up to float rounding: fp32 within
    1e-5 of the output's range, a quantized assignment far above its own quantization noise."""
    graph, feeds = (small_graph, small_feeds[:2]) if which == "small" else attention
    table = build_layer_table(graph)
    ranges = calibrate(graph, feeds, table.activation_operands(), bits=(4, 8, 16))
    qparams = lambda v, b: act_qparams(*ranges[v][b], b)  # noqa: E731
    probe = PrecisionProbe(graph, table, qparams, kernels=False)
    fp32 = compile_graph(graph)
    assert all(np.array_equal(a[0], fp32.run(f)[0]) for a, f in zip(probe.run({}, feeds), feeds))
    mixes = [Precision(8, 8), Precision(4, 16), Precision(3, 32), FP32]  # int8, simulated, weight-only, fp32
    precisions = {layer.name: mixes[i % len(mixes)] for i, layer in enumerate(table)}
    expected = simulate(graph, table, feeds, precisions, ranges)
    got = probe.run(precisions, feeds)
    for e, g in zip(expected, got):
        assert np.array_equal(e[0], g[0])
    assert not np.array_equal(got[0][0], fp32.run(feeds[0])[0])  # quantization did something

    fast = PrecisionProbe(graph, table, qparams)
    reference = probe.run({}, feeds)
    for a, r in zip(fast.run({}, feeds), reference):
        np.testing.assert_allclose(a[0], r[0], rtol=0, atol=1e-5 * float(np.ptp(r[0])))
    assert output_sqnr_db(fast.run(precisions, feeds), got) > output_sqnr_db(got, reference) + 20


# ------------------------------------------------------------------------------------------------
# task metrics
# ------------------------------------------------------------------------------------------------

def test_task_metrics_from_outputs():
    rng = np.random.default_rng(0)
    reference = [[rng.normal(size=(1, 10)).astype(np.float32)] for _ in range(20)]
    outputs = [[r[0] + rng.normal(scale=0.5, size=r[0].shape).astype(np.float32)] for r in reference]
    ref_cls = np.array([r[0].argmax() for r in reference])
    out_cls = np.array([o[0].argmax() for o in outputs])
    assert tm.top1_agreement(outputs, reference) == np.mean(ref_cls == out_cls)
    assert tm.top1_agreement(reference, reference) == 1.0
    top5 = [set(np.argsort(-o[0][0])[:5]) for o in outputs]
    assert tm.topk_agreement(outputs, reference, 5) == np.mean([c in t for c, t in zip(ref_cls, top5)])
    labels = rng.integers(0, 10, size=20)
    assert tm.accuracy(outputs, labels) == np.mean(out_cls == labels)
    assert tm.make_task_metric("lfw_accuracy")(outputs, reference, labels) == tm.accuracy(outputs, labels)
    x = np.concatenate([r[0].ravel() for r in reference])
    y = np.concatenate([o[0].ravel() for o in outputs])
    assert tm.output_sqnr_db(outputs, reference) == pytest.approx(10 * np.log10((x ** 2).sum() / ((x - y) ** 2).sum()))
    assert tm.kl_softmax(reference, reference) == pytest.approx(0.0, abs=1e-12)
    assert tm.kl_softmax(outputs, reference) > 0
    assert tm.embedding_cosine(reference, reference) == pytest.approx(1.0)
    with pytest.raises(MpqError, match="needs labels"):
        tm.make_task_metric("accuracy")(outputs, reference, None)
    assert tm.default_metric("face-binary", True) == "lfw_accuracy"
    assert tm.default_metric("imagenet", False) == "top1_agreement"
    assert tm.default_metric("sentence-embedding", False) == "embedding_cosine"


# ------------------------------------------------------------------------------------------------
# top1
# ------------------------------------------------------------------------------------------------

def test_top1_on_mtcnn_rnet_uses_lfw_labels(rnet):
    graph, feeds, eval_data = rnet
    report = analyze(graph, feeds, "top1", eval_data=eval_data, task="face-binary", options={"samples": 60})
    info = report.method_info
    assert info["metric"] == "lfw_accuracy" and info["labels"] == "true" and info["samples"] == 60
    assert info["compiles"] == 1 and info["seconds"] > 0
    table = report.table
    assert sorted(report.sensitivity) == sorted(table.names())
    drops = [report.details[n]["top1_drop"] for n in report.sensitivity]
    assert drops == sorted(drops, reverse=True)
    # fp32 accuracy and one layer's accuracy, recomputed through SimulateQuantization
    sample, labels = eval_data.feeds[:60], eval_data.labels[:60]
    fp32 = compile_graph(graph)
    assert info["fp32_metric"] == tm.accuracy([fp32.run(f) for f in sample], labels)
    ranges = calibrate(graph, feeds, table.activation_operands())
    layer = report.sensitivity[0]
    outputs = simulate(graph, table, sample, {layer: INT8}, ranges)
    assert report.details[layer]["top1_metric"] == tm.accuracy(outputs, labels)


def test_top1_pseudo_labels_and_errors(small_graph, small_feeds):
    report = analyze(small_graph, small_feeds, "top1")
    assert report.method_info["metric"] == "top1_agreement" and report.method_info["fp32_metric"] == 1.0
    assert report.method_info["labels"].startswith("pseudo")
    assert sorted(report.sensitivity) == sorted(report.table.names())
    with pytest.raises(MpqError, match="no labelled data"):
        analyze(small_graph, small_feeds, "top1", options={"labels": "true"})
    with pytest.raises(MpqError, match="9 samples asked, only 4"):
        analyze(small_graph, small_feeds, "top1", options={"samples": 9})


def test_quantunev2_e2e_reorders_the_measured_top_end_to_end(small_graph, small_feeds):
    """QuantuneV2's list, its first `budget` layers measured end to end (one layer int8 at a time
    in the switchable probe) and ordered by output SQNR (default) or by output noise per MAC; the
    rest, and QuantuneV2 itself, unchanged. By default every layer on every calibration sample,
    lowest output SQNR first."""
    base = analyze(small_graph, small_feeds, "quantunev2")
    default = analyze(small_graph, small_feeds, "quantunev2-e2e")
    info = default.method_info
    n = len(base.sensitivity)
    assert (info["order"], info["measured_layers"], info["samples"]) == ("output-sqnr", n, len(small_feeds))
    assert (info["runs"], info["sample_inferences"]) == (n + 1, (n + 1) * len(small_feeds))
    measured = [default.details[name]["e2e_output_sqnr_db"] for name in default.sensitivity]
    assert measured == sorted(measured) and sorted(default.sensitivity) == sorted(base.sensitivity)
    macs = {layer.name: layer.macs for layer in build_layer_table(small_graph)}
    for order in ("per-bop", "output-sqnr"):
        refined = analyze(small_graph, small_feeds, "quantunev2-e2e", options={"budget": 3, "samples": 2, "order": order})
        info = refined.method_info
        assert (info["measured_layers"], info["runs"], info["sample_inferences"], info["compiles"]) == (3, 4, 8, 1)
        assert info["order"] == order
        assert sorted(refined.sensitivity[:3]) == sorted(base.sensitivity[:3])
        assert refined.sensitivity[3:] == base.sensitivity[3:]
        measured = [refined.details[n]["e2e_output_sqnr_db"] for n in refined.sensitivity[:3]]
        assert refined.details[refined.sensitivity[3]]["e2e_output_sqnr_db"] is None
        if order == "output-sqnr":
            assert measured == sorted(measured)
        else:
            noise_per_mac = [10 ** (-db / 10) / macs[n] for db, n in zip(measured, refined.sensitivity[:3])]
            assert noise_per_mac == sorted(noise_per_mac, reverse=True)
    with pytest.raises(MpqError, match="budget"):
        analyze(small_graph, small_feeds, "quantunev2-e2e", options={"budget": 0})
    with pytest.raises(MpqError, match="order must be one of"):
        analyze(small_graph, small_feeds, "quantunev2-e2e", options={"order": "largest"})


# ------------------------------------------------------------------------------------------------
# mixquant
# ------------------------------------------------------------------------------------------------

def test_mixquant_qem_one_keeps_8_bits_and_larger_qems_lower_bits(rnet, monkeypatch):
    graph, feeds, _ = rnet
    monkeypatch.setattr(layer_metrics, "run_exposed", lambda *a, **k: pytest.fail("MixQuant ran inference"))
    qems = [1, 2, 4, 16, 64, 256, 4096]
    report = analyze(graph, feeds, "mixquant", options={"qems": qems})
    allocations = report.allocations
    assert [a.info["qem"] for a in allocations] == qems
    first = allocations[0]
    assert all(p == INT8 for p in first.precisions.values()) and set(first.kernels().values()) == {"int8"}
    averages = [a.info["avg_w_bits"] for a in allocations]
    assert all(b <= a for a, b in zip(averages, averages[1:])) and averages[-1] < averages[0]
    for low, high in zip(allocations, allocations[1:]):  # per layer too
        assert all(high.precisions[n].w_bits <= low.precisions[n].w_bits for n in low.precisions)
    table = report.table
    for a in allocations:  # the MixQuant rule, recomputed with the numpy quantizer
        for layer in table:
            w = layer.weight_operand(graph.params)
            err = {b: mse(w, fake_quant_weight(w, b, layer.channel_axis)) for b in range(2, 9)}
            b = a.precisions[layer.name].w_bits
            assert err[b] <= a.info["qem"] * err[8]
            assert all(err[lower] > a.info["qem"] * err[8] for lower in range(2, b))
            assert a.kernels()[layer.name] == ("int8" if b == 8 else "simulated")
    row = allocations[-1].to_json(table)
    assert row["bops_ratio"] == bops_ratio(table, allocations[-1].precisions)
    assert all(v["kernel"] in ("int8", "simulated") for v in row["layers"].values())


@pytest.mark.parametrize("qems,message", [([0.5], "below 1"), (["x"], "not a number"), ([], "at least one")])
def test_mixquant_bad_qem_is_one_line_error(qems, message):
    with pytest.raises(MpqError, match=message):
        make_method("mixquant", qems=qems)


# ------------------------------------------------------------------------------------------------
# pandey
# ------------------------------------------------------------------------------------------------

def test_quantizer_groups_join_layers_sharing_an_input():
    graph = from_module(_BranchNet(), {"x": np.zeros((1, 3, 8, 8), np.float32)}, "branch")
    table = build_layer_table(graph)
    groups = quantizer_groups(table)
    assert [g.layers for g in groups] == [("stem",), ("main", "down"), ("fc",)]
    assert groups[1].macs == table.by_name["main"].macs + table.by_name["down"].macs
    assert len(groups[1].inputs) == 1 and groups[1].inputs[0] == table.by_name["main"].data_var


@pytest.fixture(scope="module")
def pandey_report(rnet):
    graph, feeds, _ = rnet
    budgets = [0.1, 0.0625, 0.05, 0.045, 0.035]
    report = analyze(graph, feeds[:8], "pandey", options={"bops_budgets": budgets, "sqnr_budgets": [30],
                                                           "curve_points": 4})
    return report, budgets


def test_pandey_bops_budget_is_met_exactly_or_below(pandey_report):
    report, budgets = pandey_report
    method, table = report.ranker, report.table
    steps = method.phase2.steps
    candidates = set(parse_candidates("default"))
    assert all(p == Precision(8, 16) for p in method.phase2.precisions(0).values())  # start: highest
    assert all(p == Precision(4, 8) for p in method.phase2.precisions(len(steps) - 1).values())  # end: lowest
    assert all(a.bops < b.bops for b, a in zip(steps, steps[1:]))
    assert all(steps[i].output_sqnr_db is not None for i in even_points(len(steps), 4))
    assert steps[0].n_simulated == len(table) and steps[-1].n_simulated == len(table)  # W8A16, W4A8
    for budget, allocation in zip(budgets, report.allocations):
        step = allocation.info["step"]
        achieved = bops_ratio(table, allocation.precisions)
        assert achieved <= budget and achieved == steps[step].bops_ratio
        assert step == 0 or steps[step - 1].bops_ratio > budget  # stops at the first point meeting it
        assert set(allocation.precisions.values()) <= candidates
        assert allocation.kernels() == {n: "int8" if p == INT8 else "simulated" for n, p in allocation.precisions.items()}
    fidelity = report.allocations[-1]
    assert fidelity.label == "output_sqnr>=30dB" and fidelity.info["output_sqnr_db"] >= 30
    nxt = fidelity.info["step"] + 1
    assert nxt == len(steps) or steps[nxt].output_sqnr_db < 30
    with pytest.raises(MpqError, match="unreachable"):
        method.phase2.select_bops(0.001)
    for bad in (0.0, 1.5):
        with pytest.raises(MpqError, match="outside 0..1"):
            make_method("pandey", bops_budgets=[bad])


def test_pandey_phase1_and_curve_match_simulated_models(pandey_report, rnet):
    graph, feeds, _ = rnet
    report, _ = pandey_report
    method, table = report.ranker, report.table
    feeds = feeds[:8]
    ranges = calibrate(graph, feeds, table.activation_operands(), bits=(8, 16))
    reference = [compile_graph(graph).run(f) for f in feeds]
    group = method.groups[1]
    w4a8 = Precision(4, 8)
    # (the probe runs on the CPU kernels, the simulation on TVM's default loops: float rounding)
    outputs = simulate(graph, table, feeds, {n: w4a8 for n in group.layers}, ranges)
    assert method.phase1.sqnr_db[group.index][w4a8] == pytest.approx(tm.output_sqnr_db(outputs, reference), abs=1e-3)
    chosen = report.allocations[2]
    outputs = simulate(graph, table, feeds, chosen.precisions, ranges)
    assert chosen.info["output_sqnr_db"] == pytest.approx(tm.output_sqnr_db(outputs, reference), abs=1e-3)


def test_cli_pandey_writes_configs_and_pareto(rnet, tmp_path, capsys):
    out = tmp_path / "p.json"
    rc = main(["analyze", "mtcnn-rnet", "--method", "pandey", "--calib-size", "6", "--bops-budget", "0.05",
               "--pandey-curve-points", "0", "-o", str(out), "--cache-dir", str(tmp_path)])
    assert rc == 0
    report = json.loads(out.read_text())
    (allocation,) = report["allocations"]
    assert allocation["bops_ratio"] <= 0.05
    pareto = json.loads((tmp_path / "p.pareto.json").read_text())
    assert pareto["start"] == "W8A16" and pareto["chosen"] == {"bops_ratio<=0.05": allocation["step"]}
    steps = pareto["phase2"]["steps"]
    assert steps[allocation["step"]]["bops_ratio"] == allocation["bops_ratio"]
    assert [s["step"] for s in steps if s["output_sqnr_db"] is not None] == [allocation["step"]]  # only the budget point
    assert (tmp_path / "p.pareto.png").stat().st_size > 10_000
    config = PrecisionConfig.load(tmp_path / "p.bops0.05.json")
    from tvm_mpq import zoo

    config.validate(build_layer_table(zoo.get("mtcnn-rnet").load_graph()))
    assert config.provenance["kernels"] == {n: v["kernel"] for n, v in allocation["layers"].items()}
    assert config.provenance["bops_ratio"] <= 0.05
    assert main(["analyze", "mtcnn-rnet", "--method", "pandey", "--bops-budget", "1.5", "-o", str(out)]) == 2
    assert main(["analyze", "mtcnn-rnet", "--method", "quantunev2", "--qem", "2", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2] == "tvm-mpq: error: BOPs budget 1.5 is outside 0..1 (bops_ratio = BOPs / BOPs_fp32)"
    assert err[-1] == "tvm-mpq: error: --qem applies to --method mixquant, not quantunev2"


# ------------------------------------------------------------------------------------------------
# one interface for all six methods
# ------------------------------------------------------------------------------------------------

def test_analyze_runs_every_method(small_graph, small_feeds, tmp_path):
    assert {"quantunev2", "inorder", "weight-sqnr", "top1", "mixquant", "pandey"} <= set(method_names())
    for method in method_names():
        report = analyze(small_graph, small_feeds, method)
        assert sorted(report.sensitivity) == sorted(report.table.names()), method
        report.save(tmp_path / f"{method}.json")  # strict JSON
        data = json.loads((tmp_path / f"{method}.json").read_text())
        if method in ("mixquant", "pandey", "pandey-fp32"):
            assert data["allocations"] and all(len(a["layers"]) == len(report.table) for a in data["allocations"])
            assert all(v == "fp32" or v["kernel"] in ("int8", "simulated")
                       for a in data["allocations"] for v in a["layers"].values())
        else:
            assert data["allocations"] == []
