"""``tvm-mpq eval``: the paper's tables and plots from real analyses of mtcnn-rnet, the Table 8
ablation variants, accuracy-recovery curves, task metrics and model size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tvm_mpq.allocation.bops import FP32, INT8, Precision
from tvm_mpq.cli import main
from tvm_mpq.evaluation.model_size import model_size_mb
from tvm_mpq.evaluation.recovery import curve_counts
from tvm_mpq.graph import build_layer_table
from tvm_mpq.metrics.local_metrics import SQNR_CAP_DB
from tvm_mpq.metrics.task_metrics import make_task_metric, text_agreement, text_similarity
from tvm_mpq.sensitivity import make_method
from tvm_mpq.sensitivity.layer_metrics import LayerMetrics, measure_layers
from tvm_mpq.sensitivity.quantunev2 import quantunev2_rank

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RATES = (100.0, 50.0)


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory) -> tuple[Path, dict]:
    """One real ``tvm-mpq eval`` on mtcnn-rnet: QuantuneV2, its refinement and Pandey et al., two rates."""
    out = tmp_path_factory.mktemp("eval")
    rc = main(["eval", "--models", "mtcnn-rnet", "--methods", "quantunev2,quantunev2-e2e,pandey", "--rates", "100,50",
               "--calib-size", "8", "--pandey-samples", "4", "--check-integer", "-o", str(out)])
    assert rc == 0
    return out, json.loads((out / "report.json").read_text())


def test_eval_writes_every_table_and_plot(eval_run):
    out, report = eval_run
    (model,) = report["models"]
    assert model["model"] == "mtcnn-rnet" and model["primary_metric"] == "lfw_accuracy"
    # Table 2: one point per method and rate, achieved rate never below the request.
    rate_points = [p for p in model["points"] if p["requested_rate"] is not None]
    assert sorted((p["method"], p["requested_rate"]) for p in rate_points) == sorted(
        (m, r) for m in ("quantunev2", "quantunev2-e2e", "pandey") for r in RATES)
    for p in rate_points:
        assert p["bops_reduction_rate"] >= p["requested_rate"] - 1e-6
        assert p["n_fp32"] + p["n_int8"] + p["n_simulated"] == model["n_layers"]
        assert 0 < p["model_size_mb"] <= model["fp32_size_mb"]
        assert set(p["metrics"]) == {"lfw_accuracy", "top1_agreement", "kl_softmax", "output_sqnr_db"}
    qv2 = {p["requested_rate"]: p for p in rate_points if p["method"] == "quantunev2"}
    assert qv2[100.0]["n_simulated"] == 0 and qv2[100.0]["n_int8"] == model["n_layers"]
    assert qv2[100.0]["metrics"] == model["int8"]
    # Pandey's simulated bit-widths are reported per point (W4A8 / W8A16 have no integer kernel).
    assert any(p["n_simulated"] > 0 for p in rate_points if p["method"] == "pandey")
    # Table 3: one timed row per method, QuantuneV2 with its two inference passes at stage C.
    rows = {a["method"]: a for a in model["analyses"]}
    assert set(rows) == {"quantunev2", "quantunev2-e2e", "pandey"}
    assert rows["quantunev2"]["inference_runs"] == 2 and rows["quantunev2"]["stage"] == "C"
    e2e = rows["quantunev2-e2e"]
    assert e2e["stage"] == "C" and e2e["inference_runs"] == 2 and e2e["e2e_runs"] == model["n_layers"] + 1
    assert rows["pandey"]["inference_runs"] > 2 and all(a["seconds"] > 0 for a in rows.values())
    md = (out / "report.md").read_text()
    for heading in ("Table 2", "Table 3", "Table 8", "Local-metric study", "Fig. 8", "QuantuneV2 vs the baselines"):
        assert heading in md
    # The tally counts QuantuneV2 and its refinement, each against the baseline (not each other).
    tally = [line.split(" | ")[2:4] for line in md.splitlines() if line.startswith("| mtcnn-rnet | ")]
    assert ["quantunev2", "pandey"] in tally and ["quantunev2-e2e", "pandey"] in tally
    assert ["quantunev2", "quantunev2-e2e"] not in tally
    for png in ("table2.png", "recovery_local_metrics.png", "recovery_methods.png", "sensitivity/pandey.pareto.png"):
        data = (out / "mtcnn-rnet" / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert (out / "mtcnn-rnet" / "sensitivity" / "quantunev2.json").exists()


def test_probe_points_agree_with_the_integer_compiler(eval_run):
    """QuantuneV2's 50% point compiled by the integer compiler (stage C) gives the probe's
    task metrics; outputs differ by float accumulation order only (within one int8 step)."""
    _, report = eval_run
    (model,) = report["models"]
    check = model["integer_check"]
    assert check["requested_rate"] == 50.0 and check["n_qdq"] >= 1
    assert check["integer"]["lfw_accuracy"] == check["probe"]["lfw_accuracy"]
    assert check["integer"]["output_sqnr_db"] == pytest.approx(check["probe"]["output_sqnr_db"], abs=0.5)
    assert check["integer_vs_probe"]["within_one_step"] > 0.99


def test_recovery_curves_run_from_all_int8_to_fp32(eval_run):
    _, report = eval_run
    (model,) = report["models"]
    n = model["n_layers"]
    curves = model["local_metrics"]["curves"]
    assert len(curves) == 9  # eight local metrics + QuantuneV2 as the reference
    assert set(curves) >= {"W-SQNR", "A-SQNR", "W-delta", "A-delta", "W&A-delta", "MSE", "cosine", "KL"}
    for label, curve in {**curves, **model["method_curves"]["curves"]}.items():
        assert [p["n_fp32"] for p in curve] == list(range(n + 1)), label
        first, last = curve[0], curve[-1]
        assert {k: first[k] for k in model["int8"]} == model["curve_int8"] == model["int8"]
        assert {k: last[k] for k in model["fp32"]} == model["curve_fp32"] == model["fp32"]  # ends at fp32's metric
        assert last["output_sqnr_db"] == SQNR_CAP_DB and last["bops_reduction_rate"] == pytest.approx(0.0)
        sqnr = [p["output_sqnr_db"] for p in curve]
        assert sqnr[0] < sqnr[-2] < sqnr[-1]  # fewer quantized layers, less output noise
    # different local metrics give different lists here (not one ranking under eight names)
    assert len({tuple(r) for r in model["local_metrics"]["rankings"].values()}) >= 4


def test_table8_rows_match_the_ablation_steps(eval_run):
    _, report = eval_run
    (model,) = report["models"]
    rows = model["ablation"]
    assert [r["label"] for r in rows] == ["W-SQNR order", "+ IR-opt (stage C)", "+ W SQNR delta",
                                         "+ W&A SQNR mixup", "+ MSE mixup (QuantuneV2)"]
    assert [r["stage"] for r in rows] == ["A", "C", "C", "C", "C"]
    # mtcnn-rnet has no batch-norm: stage C's weights are stage A's, so IR-opt changes nothing ...
    assert rows[0]["sensitivity"] == rows[1]["sensitivity"]
    # ... while the SQNR delta reorders the layers, and the last row is QuantuneV2's own list.
    assert rows[1]["sensitivity"] != rows[2]["sensitivity"]
    qv2 = json.loads((Path(model["artifacts"]["quantunev2"][0])).read_text())
    assert rows[4]["sensitivity"] == qv2["sensitivity"]
    for row in rows:
        assert [p["requested_rate"] for p in row["points"]] == list(RATES)
        assert len(row["recovery"]) == model["n_layers"] + 1


def _metrics(table, w: list[float], a: list[float], mse: list[float]) -> dict[str, LayerMetrics]:
    return {layer.name: LayerMetrics(w[i], 1e-4, a[i], mse[i], 0.99, 0.01) for i, layer in enumerate(table)}


def test_table8_variants_differ_where_they_should(rnet_table):
    """Each ablation step uses exactly its ingredient (hand-computed on crafted metrics of the
    real RNet chain conv1 -> conv2 -> conv3 -> dense4 -> dense5_1)."""
    table = rnet_table
    metrics = _metrics(table, w=[40.0, 30.0, 35.0, 20.0, 19.0], a=[30.0, 25.0, 10.0, 24.0, 23.0],
                       mse=[1.0, 1.0, 1.0, 1.0, 3.0])
    rank = {m: make_method(m).rank(table, metrics) for m in ("qv2-w-sqnr", "qv2-w-delta", "qv2-wa-delta", "quantunev2")}
    # raw weight SQNR: lowest first
    assert rank["qv2-w-sqnr"] == ["dense5_1", "dense4", "conv2", "conv3", "conv1"]
    # W deltas: conv1 40 - mean 28.8 = 11.2, conv2 -10, conv3 +5, dense4 -15, dense5_1 -1
    assert rank["qv2-w-delta"] == ["dense4", "conv2", "dense5_1", "conv3", "conv1"]
    # A deltas: conv1 7.6, conv2 -5, conv3 -15, dense4 +14, dense5_1 -1; score 2 w_rank + a_rank
    assert rank["qv2-wa-delta"] == ["conv2", "dense4", "conv3", "dense5_1", "conv1"]
    # with 5 layers no MSE can exceed 5x the mean: the prefix is empty, QuantuneV2 = the mixup
    assert rank["quantunev2"] == rank["qv2-wa-delta"]
    # the defaults are the full method; the options reproduce each variant
    assert quantunev2_rank(table, metrics)[0] == rank["quantunev2"]
    assert quantunev2_rank(table, metrics, activations=False, mse_first=False)[0] == rank["qv2-w-delta"]
    assert quantunev2_rank(table, metrics, delta=False, activations=False, mse_first=False)[0] == rank["qv2-w-sqnr"]


def test_mse_prefix_puts_outlier_layers_first():
    """On a 54-layer ONNX model (ppocr-cls): layers with MSE > 5x the mean lead QuantuneV2's list,
    largest first; the others follow by the W&A-mixup score."""
    from tvm_mpq import zoo

    table = build_layer_table(zoo.get("ppocr-cls").build_graph())
    rng = np.random.default_rng(0)
    n = len(table)
    mse = rng.uniform(0.5, 1.5, n)
    mse[[7, 30]] = [20.0 * n, 40.0 * n]
    metrics = _metrics(table, w=list(rng.uniform(20, 45, n)), a=list(rng.uniform(10, 40, n)), mse=list(mse))
    full = make_method("quantunev2").rank(table, metrics)
    mixup = make_method("qv2-wa-delta").rank(table, metrics)
    names = table.names()
    assert full[:2] == [names[30], names[7]]
    assert sorted(full[2:]) == sorted(x for x in mixup if x not in (names[7], names[30]))
    assert mixup[:2] != full[:2]
    assert make_method("qv2-w-delta").rank(table, metrics) != mixup
    assert make_method("qv2-w-sqnr").rank(table, metrics) != make_method("qv2-w-delta").rank(table, metrics)


def test_ir_opt_changes_the_weights_of_batch_norm_layers_only(small_graph):
    """Stage C folds batch-norm into conv1 and dw (their weight SQNR changes), not into pw / fc."""
    from tvm_mpq.compiler.stages import folded_graph

    table_a = build_layer_table(small_graph)
    graph_c = folded_graph(small_graph)
    table_c = build_layer_table(graph_c)
    w_a = {n: m.w_sqnr_db for n, m in measure_layers(small_graph, table_a, [], activations=False).metrics.items()}
    w_c = {n: m.w_sqnr_db for n, m in measure_layers(graph_c, table_c, [], activations=False).metrics.items()}
    assert w_a["pw"] == w_c["pw"] and w_a["fc"] == w_c["fc"]
    assert abs(w_a["conv1"] - w_c["conv1"]) > 1e-3 and abs(w_a["dw"] - w_c["dw"]) > 1e-3


@pytest.fixture(scope="module")
def rnet_table():
    from tvm_mpq import zoo

    return build_layer_table(zoo.get("mtcnn-rnet").build_graph())


def test_curve_counts_and_model_size(rnet_table):
    assert curve_counts(5) == [0, 1, 2, 3, 4, 5]
    assert curve_counts(50, 8) == [0, 1, 2, 4, 7, 14, 26, 50]  # dense where recovery happens
    assert curve_counts(54, 12)[:4] == [0, 1, 2, 3] and len(curve_counts(54, 12)) == 12
    from tvm_mpq import zoo

    graph = zoo.get("mtcnn-rnet").build_graph()
    total = sum(v.size for v in graph.params.values())
    weights = sum(graph.params[l.weight_param].size for l in rnet_table)
    assert model_size_mb(graph, rnet_table, {}) == pytest.approx(total * 4 / 1e6)
    int8 = {n: INT8 for n in rnet_table.names()}
    assert model_size_mb(graph, rnet_table, int8) == pytest.approx((total * 4 - weights * 3) / 1e6)
    w4 = {**int8, "dense4": Precision(4, 8)}
    saved = graph.params[rnet_table.by_name["dense4"].weight_param].size * 0.5
    assert model_size_mb(graph, rnet_table, w4) == pytest.approx(model_size_mb(graph, rnet_table, int8) - saved / 1e6)
    assert model_size_mb(graph, rnet_table, {**int8, "conv1": FP32}) > model_size_mb(graph, rnet_table, int8)


def test_recognized_text_agreement():
    eye = np.eye(6, dtype=np.float32)

    def out(indices: list[int]) -> list[np.ndarray]:
        return [eye[indices][None]]  # (1, T, classes), class 0 = CTC blank

    ref = [out([1, 1, 0, 2, 3]), out([4, 0, 4, 5])]  # "1 2 3", "4 4 5"
    same_text = [out([1, 0, 2, 2, 3]), out([4, 0, 4, 5])]  # different frames, same decoded text
    assert text_agreement(same_text, ref) == 1.0
    assert make_task_metric("text_agreement")(same_text, ref) == 1.0
    one_wrong = [out([1, 1, 0, 2, 2]), out([4, 4, 4, 5])]  # "1 2", "4 5"
    assert text_agreement(one_wrong, ref) == 0.0
    assert text_similarity(one_wrong, ref) == pytest.approx(np.mean([1 - 1 / 3, 1 - 1 / 3]))


@pytest.mark.parametrize("argv, message", [
    (["--methods", "quantunev2,magic"], "unknown method"),
    (["--rates", "150"], "rates must lie in 0..100"),
    (["--models", "nosuchnet"], "unknown zoo model"),
    (["--models", "resnet18"], "architecture-only"),
    (["--curve-points", "1"], "--curve-points"),
    (["--g", "1"], "--g must be > 1"),
])
def test_eval_cli_errors_are_one_line(argv, message, tmp_path, capsys):
    assert main(["eval", *argv, "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("tvm-mpq: error:")


def test_report_markdown_is_rebuilt_from_json(eval_run, tmp_path):
    out, report = eval_run
    copy = tmp_path / "report.json"
    copy.write_text(json.dumps(report))
    assert main(["eval", "--report-from", str(copy)]) == 0
    assert (tmp_path / "report.md").read_text() == (out / "report.md").read_text()


def test_tally_verdicts_on_metric_and_rate():
    """The Pareto verdict weighs metric and achieved rate; the verdict at the request weighs the
    metric alone, and ``behind`` says by how much ours trails (KL: lower is better)."""
    from tvm_mpq.evaluation.report_markdown import metric_verdict, pareto_verdict, qv2_comparison

    def point(method: str, agreement: float, kl: float, achieved: float) -> dict:
        return {"method": method, "requested_rate": 50.0, "bops_reduction_rate": achieved,
                "metrics": {"top1_agreement": agreement, "kl_softmax": kl}}

    ours, same_rate, higher_rate = point("quantunev2", 0.98, 0.01, 52.0), point("inorder", 0.95, 0.02, 52.0), \
        point("weight-sqnr", 0.98, 0.03, 56.0)
    assert pareto_verdict(ours, same_rate, "top1_agreement") == "win"
    assert pareto_verdict(ours, higher_rate, "top1_agreement") == "loss"  # equal answers, less reduction
    assert metric_verdict(ours, higher_rate, "top1_agreement") == "equal"
    assert pareto_verdict(ours, higher_rate, "kl_softmax") == "trade-off"
    assert metric_verdict(ours, higher_rate, "kl_softmax") == "better"
    model = {"primary_metric": "top1_agreement", "points": [point("quantunev2", 0.90, 0.05, 51.0), same_rate]}
    (row,) = qv2_comparison(model)
    entry = row["baselines"]["inorder"]
    assert entry["at_request"] == "worse" and entry["behind"] == pytest.approx(0.05)
    assert qv2_comparison(model, "kl_softmax")[0]["baselines"]["inorder"]["behind"] == pytest.approx(0.03)
