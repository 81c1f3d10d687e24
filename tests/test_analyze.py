"""End-to-end analysis: two inference passes, the CLI contract, and one-line errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tvm_mpq.calibration import CalibrationCache
from tvm_mpq.cli import main
from tvm_mpq.config import PrecisionConfig
from tvm_mpq.graph import build_layer_table
from tvm_mpq.sensitivity import analyze
from tvm_mpq.sensitivity import layer_metrics

from conftest import AttentionNet, ConvBnReluNet, annotation_for, simulated


def test_analysis_runs_exactly_two_inference_passes(small_graph, small_feeds, monkeypatch, tmp_path):
    calls, builds = [], []
    original, probe_class = layer_metrics.run_exposed, layer_metrics.PrecisionProbe

    def counting(graph, feeds, names, on_batch, desc="", compiled=None):
        calls.append(len(feeds))
        return original(graph, feeds, names, on_batch, desc, compiled)

    def building(*args, **kwargs):
        builds.append(kwargs.get("expose"))
        return probe_class(*args, **kwargs)

    monkeypatch.setattr(layer_metrics, "run_exposed", counting)
    monkeypatch.setattr(layer_metrics, "PrecisionProbe", building)
    report = analyze(small_graph, small_feeds, "quantunev2", cache=CalibrationCache(tmp_path))
    assert calls == [len(small_feeds), len(small_feeds)]
    assert len(builds) == 1 and builds[0]  # both passes on one compiled model, tensors exposed
    assert report.measurement.inference_passes == 2
    assert sorted(report.sensitivity) == sorted(build_layer_table(small_graph).names())
    for m in report.measurement.metrics.values():
        assert 10.0 < m.w_sqnr_db < 80.0 and 5.0 < m.a_sqnr_db < 80.0 and m.a_mse > 0
    assert list((tmp_path / "calibration").glob("small-*.json"))  # calibration cached on disk


def test_both_passes_on_one_build_measure_what_two_compiled_models_measure(small_graph, small_feeds):
    """Pass 2 on the one switchable build gives, to the bit, each layer's SQNR of a separate
    SimulateQuantization compile (the two-compile analysis before) against the fp32 model."""
    from tvm_mpq.calibration.calibrate import run_exposed
    from tvm_mpq.metrics import make_metric
    from tvm_mpq.quantization import act_qparams

    report = analyze(small_graph, small_feeds, "quantunev2")
    table = build_layer_table(small_graph)
    qparams = {v: act_qparams(*r, 8) for v, r in report.measurement.act_ranges.items()}
    annotations = {layer.name: annotation_for(layer, small_graph.params, qparams[layer.data_var], 8,
                                              None if layer.weight_param else qparams[layer.weight_var])
                   for layer in table}
    outs = [layer.var for layer in table]
    tensors: dict[str, list] = {"fp32": [], "int8": []}
    run_exposed(small_graph, small_feeds, outs, lambda _i, _o, t: tensors["fp32"].append(t))
    run_exposed(simulated(small_graph, table, annotations), small_feeds, outs,
                lambda _i, _o, t: tensors["int8"].append(t))
    for k, layer in enumerate(table):
        metric = make_metric("sqnr_db")
        for ref, sim in zip(tensors["fp32"], tensors["int8"]):
            metric.update(ref[k], sim[k])
        assert report.measurement.metrics[layer.name].a_sqnr_db == metric.value(), layer.name


def test_weight_only_methods_run_no_inference(small_graph, small_feeds, monkeypatch):
    monkeypatch.setattr(layer_metrics, "run_exposed", lambda *a, **k: pytest.fail("inference ran"))
    report = analyze(small_graph, small_feeds, "weight-sqnr")
    w = {n: m.w_sqnr_db for n, m in report.measurement.metrics.items()}
    assert report.sensitivity == sorted(w, key=w.get)
    assert analyze(small_graph, small_feeds, "inorder").sensitivity == ["fc", "pw", "dw", "conv1"]


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory) -> Path:
    """A real exported ONNX file with dynamic batch/height/width and a Shape-based reshape."""

    class Net(ConvBnReluNet):
        def forward(self, x):
            y = super().forward(x)
            return y.reshape(x.shape[0], -1)

    path = tmp_path_factory.mktemp("onnx") / "dyn.onnx"
    torch.onnx.export(Net().eval(), (torch.zeros(1, 3, 16, 16),), str(path), input_names=["image"],
                      dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}}, dynamo=False)
    return path


def test_cli_analyze_onnx_with_dynamic_dims(dynamic_onnx, tmp_path):
    out = tmp_path / "sens.json"
    rc = main(["analyze", str(dynamic_onnx), "--input-shape", "image:1x3x32x32", "--calib-size", "3",
               "--rate", "50", "-o", str(out), "--cache-dir", str(tmp_path)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["analysis"]["n_layers"] == 4 and report["analysis"]["inference_passes"] == 2
    assert report["analysis"]["seconds"] > 0
    names = {row["name"] for row in report["layers"]}
    assert names == set(report["sensitivity"])
    assert all("/" in n for n in names)  # ONNX node names, e.g. /conv1/Conv
    row = report["layers"][0]
    for key in ("w_sqnr_db", "a_sqnr_db", "w_sqnr_delta", "a_sqnr_delta", "a_mse", "macs", "rank"):
        assert key in row
    config = PrecisionConfig.load(tmp_path / "sens.rate50.json")
    assert config.provenance["bops_reduction_rate"] >= 50.0
    assert set(config.layers) == names
    # the written config validates against the model; a config naming a ghost layer does not
    shape = ["--input-shape", "image:1x3x32x32"]
    assert main(["bops", str(dynamic_onnx), *shape, "--config", str(tmp_path / "sens.rate50.json")]) == 0
    data = json.loads((tmp_path / "sens.rate50.json").read_text())
    data["layers"]["/ghost/Conv"] = "fp32"
    (tmp_path / "ghost.json").write_text(json.dumps(data))
    result = _run_cli(["bops", str(dynamic_onnx), *shape, "--config", str(tmp_path / "ghost.json")])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "tvm-mpq: error: config names 1 layer(s) not in the model: /ghost/Conv")


def _run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvm_mpq.cli", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("make_args,message", [
    (lambda d, o: ["analyze", "missing.onnx", "-o", o], "neither a file nor a zoo model"),
    (lambda d, o: ["analyze", str(Path(__file__)), "-o", o], "unknown type '.py'"),
    (lambda d, o: ["analyze", str(d["garbage"]), "-o", o], "not a valid ONNX model"),
    (lambda d, o: ["analyze", str(d["dyn"]), "-o", o], "dynamic dims"),
    (lambda d, o: ["analyze", str(d["dyn"]), "--input-shape", "image:1x3x32", "-o", o], "3 dims given"),
    (lambda d, o: ["analyze", str(d["dyn"]), "--input-shape", "img:1x3x32x32", "-o", o], "model's inputs are"),
    (lambda d, o: ["analyze", str(d["dyn"]), "--input-shape", "image:1xAx3", "-o", o], "not NAME:DIMS"),
    (lambda d, o: ["analyze", str(d["unsupported"]), "-o", o], "ops TVM cannot import"),
    (lambda d, o: ["analyze", str(d["dyn"]), "--input-shape", "image:1x3x32x32", "--method", "magic", "-o", o],
     "unknown --method"),
    (lambda d, o: ["analyze", str(d["dyn"]), "--input-shape", "image:1x3x32x32", "--calib", "nowhere", "-o", o],
     "calibration source 'nowhere' does not exist"),
])
def test_cli_bad_input_gives_one_line_error(dynamic_onnx, tmp_path, make_args, message):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    node = onnx.helper.make_node("Celu", ["x"], ["y"])  # a standard op TVM 0.27 lacks
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", 1, [1, 4])],
                                   [onnx.helper.make_tensor_value_info("y", 1, [1, 4])])
    unsupported = tmp_path / "unsupported.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(unsupported))
    files = {"garbage": garbage, "dyn": dynamic_onnx, "unsupported": unsupported}
    result = _run_cli(make_args(files, str(tmp_path / "o.json")))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("tvm-mpq: error:") and message in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_config_validation_names_the_problem(small_graph, tmp_path):
    from tvm_mpq.errors import MpqError

    table = build_layer_table(small_graph)
    good = {"format": "tvm-mpq/precision-config", "version": 1, "model": "small",
            "layers": {n: {"w_bits": 8, "a_bits": 8} for n in table.names()}}
    PrecisionConfig.from_json(good).validate(table)
    bad = json.loads(json.dumps(good))
    bad["layers"]["ghost_layer"] = "fp32"
    with pytest.raises(MpqError, match="not in the model: ghost_layer"):
        PrecisionConfig.from_json(bad).validate(table)
    bad = json.loads(json.dumps(good))
    del bad["layers"]["dw"]
    with pytest.raises(MpqError, match="does not cover 1 layer.*dw"):
        PrecisionConfig.from_json(bad).validate(table)
    bad = json.loads(json.dumps(good))
    bad["layers"]["dw"] = {"w_bits": 1, "a_bits": 8}
    with pytest.raises(MpqError, match="'dw' has w_bits 1"):
        PrecisionConfig.from_json(bad)
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(MpqError, match="is not JSON"):
        PrecisionConfig.load(tmp_path / "c.json")


def test_analyze_efficientnet_lite0_covers_all_50_layers(tmp_path, capsys):
    out = tmp_path / "eff.json"
    rc = main(["analyze", "efficientnet-lite0", "--calib-size", "2", "-o", str(out), "--cache-dir", str(tmp_path)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["analysis"]["n_layers"] == 50 and len(report["sensitivity"]) == 50
    assert report["analysis"]["inference_passes"] == 2
    rows = report["layers"]
    assert {r["kind"] for r in rows} == {"conv2d", "depthwise_conv2d", "dense"}
    assert all(r["w_sqnr_db"] > 20 and r["a_sqnr_db"] > 5 and r["a_mse"] >= 0 for r in rows)
    assert rows[0]["name"] == "_conv_stem" and rows[-1]["name"] == "_fc"
    printed = capsys.readouterr().out
    assert "analysis (quantunev2)" in printed and "W-SQNR" in printed


@pytest.mark.parametrize("method", ["weight-sqnr", "quantunev2"])
def test_activation_matmul_reports_are_valid_json(method, tmp_path):
    from tvm_mpq.frontends.torch_frontend import from_module

    graph = from_module(AttentionNet(), {"x": np.zeros((1, 4, 8), np.float32)}, "attn")
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(size=(1, 4, 8)).astype(np.float32)} for _ in range(2)]
    report = analyze(graph, feeds, method)
    kinds = [l.kind for l in report.table]
    assert kinds == ["dense", "matmul", "dense"]
    report.save(tmp_path / "r.json")  # strict JSON: no NaN anywhere
    rows = {r["kind"]: r for r in json.loads((tmp_path / "r.json").read_text())["layers"]}
    if method == "weight-sqnr":
        assert rows["matmul"]["w_sqnr_db"] is None and report.sensitivity[-1] == "matmul_1"
    else:  # inference measures the second operand's quantization too
        assert rows["matmul"]["w_sqnr_db"] > 20
