"""Post-training refinements (tvm_mpq.ptq): cross-layer equalization is exact in fp32 (ReLU6
included), bias correction removes the expected weight error and lowers the output error, and
both are recorded in the config and exported to ONNX QDQ with the compiled model's numbers."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tvm_mpq.compiler import compile_model
from tvm_mpq.config import PrecisionConfig
from tvm_mpq.api import config_for_rate
from tvm_mpq.export import build_qdq_onnx
from tvm_mpq.export.fp32_onnx import fp32_onnx
from tvm_mpq.export.layer_plan import int8_layers
from tvm_mpq.ptq.equalization import equalize, equalized_pairs, graph_for_config
from tvm_mpq.quantization.mac_error import ConvGeometry, expected_weight_error
from tvm_mpq.quantization.quantizers import fake_quant_weight
from tvm_mpq.runtime import compile_graph


class SeparableRelu6Net(torch.nn.Module):
    """stem conv-bn-relu6 -> depthwise-bn-relu6 (padded) -> 1x1-bn -> 1x1-bn-relu6 -> pool -> fc:
    three equalizable pairs (two across ReLU6), the depthwise with large, cancelling weights
    (edge filters, as in efficientnet-lite0's first block) whose rounding error has a mean."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.stem = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn0 = torch.nn.BatchNorm2d(16)
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=0, groups=16, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.project = torch.nn.Conv2d(16, 8, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(8)
        self.expand = torch.nn.Conv2d(8, 24, 1, bias=False)
        self.bn3 = torch.nn.BatchNorm2d(24)
        self.fc = torch.nn.Linear(24, 10)
        with torch.no_grad():
            edge = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
            self.dw.weight.copy_(edge * torch.rand(16, 1, 1, 1) * 8 + torch.randn(16, 1, 3, 3) * 0.3)
            for bn in (self.bn0, self.bn1, self.bn2, self.bn3):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.2, 3.0)
                bn.bias.uniform_(-0.5, 2.0)
        self.act = torch.nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn0(self.stem(x)))
        y = self.act(self.bn1(self.dw(torch.nn.functional.pad(y, (1, 1, 1, 1)))))
        y = self.act(self.bn3(self.expand(self.bn2(self.project(y)))))
        return self.fc(y.mean((2, 3)))


@pytest.fixture(scope="module")
def net() -> SeparableRelu6Net:
    return SeparableRelu6Net().eval()


@pytest.fixture(scope="module")
def graph(net):
    from tvm_mpq.frontends.torch_frontend import from_module

    return from_module(net, {"x": np.zeros((1, 3, 24, 24), np.float32)}, "separable")


def _feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)  # smooth-ish images with an offset (a non-zero mean input)
    base = rng.uniform(-1, 1, size=(n, 3, 6, 6)).astype(np.float32)
    images = np.repeat(np.repeat(base, 4, axis=2), 4, axis=3) + 0.1 * rng.normal(size=(n, 3, 24, 24))
    return [{"x": (images[i:i + 1] + 0.3).astype(np.float32)} for i in range(n)]


CALIB, HELD_OUT = _feeds(8, 0), _feeds(8, 1)


def _outputs(compiled, feeds) -> np.ndarray:
    return np.stack([compiled.run(f)[0] for f in feeds])


def _steps(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / ((ref.max() - ref.min()) / 255))


def test_equalization_is_exact_in_fp32_across_relu6(graph):
    equalized = equalize(graph)
    pairs = [(p["first"], p["second"]) for p in equalized_pairs(equalized)]
    assert pairs == [("stem", "dw"), ("dw", "project"), ("project", "expand")]
    assert "R.minimum" in equalized.mod["main"].script()  # ReLU6 upper bounds now per channel
    moved = [not np.allclose(graph.params[k], equalized.params[k]) for k in equalized.params
             if graph.params[k].shape == equalized.params[k].shape]  # (the fc weight is lifted as [K, N])
    assert sum(moved) >= 3
    a, b = compile_graph(graph), compile_graph(equalized)
    for feed in HELD_OUT:
        np.testing.assert_allclose(b.run(feed)[0], a.run(feed)[0], rtol=1e-5, atol=1e-5)


def test_equalization_of_the_onnx_import_is_exact(graph, net, tmp_path):
    """The same net through ONNX: TVM's importer writes ReLU6 as two TE-built call_tir, which
    RecoverMinMax turns into maximum / minimum; the pairs across them are found and equalized
    exactly (the minimum's bound becomes per channel). The importer's pad is a TE call_tir too,
    which RecoverPad turns into ``R.nn.pad``: stem -> dw is a pair through it, as in the torch
    import."""
    from tvm_mpq.zoo import load_model

    path = tmp_path / "separable.onnx"
    onnx.save(fp32_onnx(graph, net), str(path))
    imported = load_model(str(path))
    equalized = equalize(imported)
    assert [p["first"] for p in equalized_pairs(equalized)] == ["/stem/Conv", "/dw/Conv", "/project/Conv"]
    assert len(equalized.mod["main"].script().split("R.minimum")) == 4  # the three ReLU6
    a, b = compile_graph(imported), compile_graph(equalized)
    for feed in HELD_OUT:
        np.testing.assert_allclose(b.run(feed)[0], a.run(feed)[0], rtol=1e-5, atol=1e-5)


class AffineSeparableNet(torch.nn.Module):
    """PP-LCNetV3's block shape: a depthwise conv whose channels' ranges differ 100-fold (the 1x1
    conv's weights making up for it), then a learnable scalar affine (``a * y + b``, no
    activation), then the 1x1 conv: per-tensor int8 on the 1x1 conv's input loses the small
    channels unless the pair is equalized through the affine."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = torch.nn.Conv2d(8, 12, 1)
        self.fc = torch.nn.Linear(12, 10)
        with torch.no_grad():
            spread = torch.logspace(-1, 1, 8)  # the 1x1 conv's weights make up for it, as trained ones do
            self.dw.weight.mul_(spread.reshape(8, 1, 1, 1))
            self.dw.bias.mul_(spread)
            self.pw.weight.div_(spread.reshape(1, 8, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.hardswish(self.stem(x))
        y = self.pw(self.dw(y) * 1.7 + 0.3)
        return self.fc(torch.nn.functional.hardswish(y).mean((2, 3)))


def test_equalization_reaches_through_a_scalar_affine_and_exports(tmp_path):
    """The ONNX import of ``dw -> Mul(a) -> Add(b) -> pw``: the pair is equalized (the add's
    constant becomes per channel), exactly in fp32; fully int8 it measures closer to fp32 than
    without equalization, and the ONNX QDQ export replays it (onnxruntime runs the simulation)."""
    from tvm_mpq.zoo import load_model

    net = AffineSeparableNet().eval()
    from tvm_mpq.frontends.torch_frontend import from_module

    path = tmp_path / "affine.onnx"
    onnx.save(fp32_onnx(from_module(net, {"x": np.zeros((1, 3, 24, 24), np.float32)}, "affine"), net), str(path))
    imported = load_model(str(path))
    equalized = equalize(imported)
    assert [(p["first"], p["second"]) for p in equalized_pairs(equalized)] == [("/dw/Conv", "/pw/Conv")]
    fp32 = compile_graph(imported)
    fp32_ref = _outputs(fp32, HELD_OUT)
    np.testing.assert_allclose(_outputs(compile_graph(equalized), HELD_OUT), fp32_ref, rtol=1e-5, atol=1e-5)

    def int8_error(graph):
        config, _ = config_for_rate(graph, CALIB, 100, "inorder")
        simulated = compile_model(graph, config, simulate=True)
        return config, simulated, float(np.mean((_outputs(simulated, HELD_OUT) - fp32_ref) ** 2))

    _, _, plain = int8_error(imported)
    config, simulated, equalized_error = int8_error(equalized)
    assert equalized_error < 0.5 * plain
    exported = build_qdq_onnx(equalized, config, onnx.load(str(path)))
    adds = [n for n in exported.model.graph.node if n.op_type == "Add" and any("equalized" in i for i in n.input)]
    assert adds  # the affine's add now adds one value per channel
    session = ort.InferenceSession(exported.model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert _steps(np.stack([session.run(None, f)[0] for f in HELD_OUT]), _outputs(simulated, HELD_OUT)) < 0.5


@pytest.mark.parametrize("geometry,shape", [
    (ConvGeometry((1, 1), (1, 1, 1, 1), (1, 1), 1), (4, 6, 3, 3)),
    (ConvGeometry((2, 2), (0, 0, 1, 1), (1, 1), 6), (6, 1, 3, 3)),  # depthwise, TF "SAME" padding
    (ConvGeometry((1, 2), (2, 1, 0, 2), (2, 1), 2), (6, 3, 3, 2)),  # grouped, dilated, asymmetric
])
def test_expected_weight_error_is_the_mean_output_error(geometry, shape):
    rng = np.random.default_rng(0)
    weight = rng.normal(size=shape).astype(np.float32)
    x = rng.normal(loc=0.7, size=(5, 6, 9, 11)).astype(np.float32)
    got = expected_weight_error(weight, 4, 0, x.mean(axis=0), geometry)

    def conv(w):
        top, left, bottom, right = geometry.padding
        padded = torch.nn.functional.pad(torch.from_numpy(x).double(), (left, right, top, bottom))
        return torch.nn.functional.conv2d(padded, torch.from_numpy(w).double(), stride=geometry.strides,
                                          dilation=geometry.dilation, groups=geometry.groups).numpy()

    want = (conv(fake_quant_weight(weight, 4, 0)) - conv(weight)).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    w2 = weight.reshape(weight.shape[0], -1).T.copy()  # a [K, N] dense weight
    rows = x.reshape(-1, w2.shape[0])
    dense = expected_weight_error(w2, 4, 1, rows, None)
    np.testing.assert_allclose(dense, (rows.astype(np.float64) @ (fake_quant_weight(w2, 4, 1) - w2)).mean(axis=0),
                               rtol=1e-6, atol=1e-9)


def test_bias_correction_lowers_the_output_error(graph):
    plain, _ = config_for_rate(graph, CALIB, 100, "inorder")
    corrected, _ = config_for_rate(graph, CALIB, 100, "inorder", bias_correction=True)
    assert plain.provenance["bias_correction"] is False and corrected.provenance["bias_correction"] is True
    assert all(lp.bias_correction is not None for lp in corrected.layers.values())
    assert compile_model(graph, corrected, simulate=True).stats["bias_corrected"] == len(corrected.layers)
    assert compile_model(graph, plain, simulate=True).stats["bias_corrected"] == 0
    ref = _outputs(compile_graph(graph), HELD_OUT)
    errors = {}
    for name, config in (("plain", plain), ("corrected", corrected)):
        out = _outputs(compile_model(graph, config, simulate=True), HELD_OUT)
        errors[name] = (float(np.mean((out - ref) ** 2)), float(np.abs((out - ref).mean(axis=0)).mean()))
    assert errors["corrected"][0] < 0.8 * errors["plain"][0]  # output MSE
    assert errors["corrected"][1] < errors["plain"][1]  # systematic (mean) error


def test_options_are_recorded_and_exported_identically(graph, net, tmp_path):
    """Equalized + bias-corrected config: JSON round trip, replay on the imported model, then the
    ONNX QDQ export runs in onnxruntime like the compiled model, with the same int32 biases."""
    equalized = equalize(graph)
    config, _ = config_for_rate(equalized, CALIB, 100, "inorder", bias_correction=True)
    path = tmp_path / "cfg.json"
    config.save(path)
    saved = json.loads(path.read_text())["provenance"]
    assert saved["bias_correction"] is True and list(saved["graph_transforms"]) == ["cross_layer_equalization"]
    loaded = PrecisionConfig.load(path)
    replayed = graph_for_config(graph, loaded)
    for name, value in equalized.params.items():
        np.testing.assert_array_equal(replayed.params[name], value)
    with pytest.raises(Exception, match="graph rewrites"):
        compile_model(graph, loaded, simulate=True)  # the imported model without the equalization
    simulated, integer = compile_model(replayed, loaded, simulate=True), compile_model(replayed, loaded)
    exported = build_qdq_onnx(replayed, loaded, fp32_onnx(replayed, net))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(exported.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    sim = _outputs(simulated, HELD_OUT)
    assert _steps(np.stack([session.run(None, f)[0] for f in HELD_OUT]), sim) < 0.1
    assert _steps(_outputs(integer, HELD_OUT), sim) <= 1
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in exported.model.graph.initializer}
    for layer in int8_layers(replayed, loaded):
        np.testing.assert_array_equal(inits[f"{layer.name}.bias_quantized"], layer.quantized_bias())
        assert layer.bias_correction is not None and np.any(layer.bias_correction != 0)
    fp32_ref = _outputs(compile_graph(graph), HELD_OUT)
    assert _steps(sim, fp32_ref) < 40  # the equalized, corrected model still computes the original


def test_cli_quantizer_options_are_recorded_and_replayed(tmp_path):
    """analyze/compile: bias correction is on by default and recorded in the provenance with the
    observer and the graph rewrites (--equalize); compile --config replays the equalization and
    adds the corrections (stats bias_corrected); --no-bias-correction records False."""
    from tvm_mpq.cli import main

    assert main(["analyze", "mtcnn-rnet", "--rate", "100", "--calib-size", "4", "--equalize",
                 "-o", str(tmp_path / "s.json")]) == 0
    saved = json.loads((tmp_path / "s.rate100.json").read_text())
    provenance = saved["provenance"]
    assert provenance["bias_correction"] is True and provenance["observer"] == "minmax"
    assert list(provenance["graph_transforms"]) == ["cross_layer_equalization"]
    int8 = [v for v in saved["layers"].values() if v != "fp32"]
    assert int8 and all(len(v["bias_correction"]) > 0 for v in int8)
    assert main(["compile", "mtcnn-rnet", "--config", str(tmp_path / "s.rate100.json"),
                 "-o", str(tmp_path / "m.so")]) == 0
    assert (tmp_path / "m.so").is_file()
    assert main(["analyze", "mtcnn-rnet", "--rate", "100", "--calib-size", "4", "--no-bias-correction",
                 "--observer", "mse", "--weight-rounding", "hessian", "-o", str(tmp_path / "n.json")]) == 0
    plain = json.loads((tmp_path / "n.rate100.json").read_text())
    assert plain["provenance"]["bias_correction"] is False and plain["provenance"]["observer"] == "mse"
    assert plain["provenance"]["weight_rounding"] == "hessian" and "weight_rounding" not in provenance
    assert all(isinstance(v["weight_rounding"], str) for v in plain["layers"].values() if v != "fp32")
    assert "graph_transforms" not in plain["provenance"]
    assert all("bias_correction" not in v for v in plain["layers"].values() if v != "fp32")


class HardswishDepthwiseNet(torch.nn.Module):
    """stem conv -> hard-swish -> depthwise 3x3 (padded) -> relu6 -> 1x1 -> pool -> fc, the stem's
    channels scaled over two decades and the depthwise's back (as batch-norms folded on both
    sides do in mobile networks): the depthwise input's channel ranges differ widely and all dip
    below zero (non-zero, different zero points per channel)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.project = torch.nn.Conv2d(16, 8, 1)
        self.fc = torch.nn.Linear(8, 10)
        with torch.no_grad():
            spread = torch.logspace(-1.5, 0.5, 16).reshape(16, 1, 1, 1)
            self.stem.weight.mul_(spread * 4)
            self.stem.bias.copy_(spread.reshape(-1))
            self.dw.weight.div_(spread)  # (a batch-norm after it evens the channels out again)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = y * torch.clamp(y + 3, 0, 6) / 6
        y = torch.clamp(self.dw(y), 0, 6)
        return self.fc(self.project(y).mean((2, 3)))


def test_per_channel_depthwise_inputs_compile_simulate_and_export_alike(tmp_path):
    """--channel-act: the depthwise conv's input gets one quantizer per channel (zero points
    differ, so the integer conv pads each channel with its own code); the integer build agrees
    with the simulation to a step, the ONNX QDQ export (the per-channel quantizer as float ops)
    runs in onnxruntime like it, as written and with onnxruntime's Q/DQ fusion, the
    output error drops against per-tensor quantizers, and the config round-trips and is checked."""
    from tvm_mpq.errors import MpqError
    from tvm_mpq.frontends.torch_frontend import from_module
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.quantization.quantizers import ActQParams

    net = HardswishDepthwiseNet().eval()
    graph = from_module(net, {"x": np.zeros((1, 3, 24, 24), np.float32)}, "hswish-dw")
    table = build_layer_table(graph)
    dw = next(layer.name for layer in table if layer.kind == "depthwise_conv2d")
    plain, report = config_for_rate(graph, CALIB, 100, "inorder")
    config, _ = config_for_rate(graph, CALIB, 100, "inorder", report=report, channel_act=True)
    assert plain.provenance["channel_act"] is False and config.provenance["channel_act"] is True
    act = config.layers[dw].act
    assert act.per_channel and act.channels == 16 and len(set(act.zero_point)) > 4 and min(act.zero_point) > 0
    assert max(act.scale) > 10 * min(act.scale)
    assert all(not lp.act.per_channel for name, lp in config.layers.items() if name != dw)
    path = tmp_path / "cfg.json"
    config.save(path)
    loaded = PrecisionConfig.load(path)
    assert loaded.layers[dw].act == act
    simulated, integer = compile_model(graph, loaded, simulate=True), compile_model(graph, loaded)
    sim = _outputs(simulated, HELD_OUT)
    assert _steps(_outputs(integer, HELD_OUT), sim) <= 1
    ref = _outputs(compile_graph(graph), HELD_OUT)
    per_tensor = _outputs(compile_model(graph, plain, simulate=True), HELD_OUT)
    assert np.mean((sim - ref) ** 2) < 0.5 * np.mean((per_tensor - ref) ** 2)
    exported = build_qdq_onnx(graph, loaded, fp32_onnx(graph, net))
    nodes = exported.model.graph.node
    assert sum(n.op_type == "Round" for n in nodes) == 1  #  # the per-channel quantizer, as float ops
    assert not any(a.name == "axis" for n in nodes if n.op_type == "QuantizeLinear" for a in n.attribute)
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        # as written, and as onnxruntime's default session fuses the Q/DQ around the convs (a
        # per-channel QuantizeLinear next to a conv made its QLinearConv fail at run time)
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(exported.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        got = np.stack([session.run(None, f)[0] for f in HELD_OUT])
        assert _steps(got, sim) < (0.1 if level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL else 2), level
    stem = next(layer.name for layer in table if layer.kind == "conv2d")
    loaded.layers[stem].act = ActQParams(act.scale[:3], act.zero_point[:3], 8)
    with pytest.raises(MpqError, match="per-channel activation quantizer .* depthwise conv inputs only"):
        loaded.validate(table)


def test_a_per_channel_zero_point_pad_is_read_in_place_by_the_depthwise_kernel():
    """ChannelPad: the lowering pads a per-channel quantized depthwise input with ``pad`` +
    ``where`` (each channel its own zero point); the CPU build turns them into one pad that
    FusePadIntoMac moves into the depthwise kernel (no pad or where kernel left), and the outputs
    are those of TVM's default build of the same lowered module, bit for bit."""
    import tvm
    from tvm import relax

    from tvm_mpq.frontends.torch_frontend import from_module
    from tvm_mpq.runtime.executor import flatten_outputs

    net = HardswishDepthwiseNet().eval()
    graph = from_module(net, {"x": np.zeros((1, 3, 24, 24), np.float32)}, "hswish-dw")
    config, _ = config_for_rate(graph, CALIB, 100, "inorder", channel_act=True)
    assert any(lp.act.per_channel for lp in config.layers.values() if not lp.is_fp32)
    compiled = compile_model(graph, config)
    assert "R.where(" in compiled.mod.script()  # what the lowering writes
    kernels = compiled.stats["build"]["kernels"]
    assert not [k for k in kernels if "where" in k or k.startswith(("pad", "channel_pad"))]
    assert [k for k, rule in kernels.items() if "_padded" in k and rule == "DepthwiseChannelsLast"]
    vm = relax.VirtualMachine(tvm.compile(compiled.mod, target="llvm"), tvm.cpu())
    for feed in HELD_OUT[:3]:
        want = flatten_outputs(vm["main"](tvm.runtime.tensor(feed["x"])))
        np.testing.assert_array_equal(compiled.run(feed)[0], want[0])


def test_per_channel_is_declined_where_it_measures_no_better():
    """A depthwise conv straight on the image (three channels alike): the held-out-half
    measurement keeps its input per tensor; the option is still recorded."""

    class ImageDepthwise(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(4)
            self.dw, self.fc = torch.nn.Conv2d(3, 6, 3, groups=3), torch.nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.dw(x).mean((2, 3)))

    from tvm_mpq.frontends.torch_frontend import from_module

    graph = from_module(ImageDepthwise().eval(), {"x": np.zeros((1, 3, 24, 24), np.float32)}, "image-dw")
    config, _ = config_for_rate(graph, CALIB, 100, "inorder", channel_act=True)
    assert config.provenance["channel_act"] is True
    assert all(not lp.act.per_channel for lp in config.layers.values() if lp.act is not None)


def test_measured_bias_replaces_the_depthwise_correction_and_lowers_the_error(graph):
    """--measured-bias: the int8 depthwise conv's correction is measured on the int8 model (the
    mean output error the quantized activations upstream add comes on top of the weight's),
    the other layers keep the analytic vectors, the provenance names the layer, and the output
    MSE on held-out inputs goes down; the offset module run with the measured vector puts the
    depthwise output's mean over the calibration set on fp32's."""
    from relay_passes.lower_to_integer import LowerToInteger
    from relay_passes.offset_outputs import OffsetLayerOutputs
    from tvm_mpq.calibration.input_means import mean_tensors
    from tvm_mpq.compiler.build import build_passes
    from tvm_mpq.compiler.pipeline import annotation_passes
    from tvm_mpq.compiler.stages import folded_graph
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.runtime.executor import flatten_outputs, host_target, host_tensor

    analytic, _ = config_for_rate(graph, CALIB, 100, "inorder", bias_correction=True)
    measured, _ = config_for_rate(graph, CALIB, 100, "inorder", bias_correction=True, measured_bias=True)
    assert measured.provenance["measured_bias"] == ["dw"] and "measured_bias" not in analytic.provenance
    for name, lp in measured.layers.items():
        same = np.allclose(lp.bias_correction, analytic.layers[name].bias_correction)
        assert same == (name != "dw"), name
    ref = _outputs(compile_graph(graph), HELD_OUT)
    errors = {}
    for name, config in (("analytic", analytic), ("measured", measured)):
        out = _outputs(compile_model(graph, config), HELD_OUT)
        errors[name] = float(np.mean((out - ref) ** 2))
    assert errors["measured"] < 0.95 * errors["analytic"], errors  # output MSE
    # the measurement itself: the MAC's mean plus the measured vector is the fp32 MAC's mean
    table = build_layer_table(graph)
    passes = [*annotation_passes(graph, analytic, "A->C", table), OffsetLayerOutputs(["dw"]), LowerToInteger(),
              *build_passes(host_target())]
    offset = compile_model(graph, analytic, pipeline=__import__("tvm").transform.Sequential(passes))
    vm = offset.vm()
    vector = np.asarray(measured.layers["dw"].bias_correction, np.float32)
    macs = [flatten_outputs(vm["main"](host_tensor(f["x"]), host_tensor(vector.reshape(1, -1, 1, 1))))[-1] for f in CALIB]
    folded = folded_graph(graph)
    fp32 = mean_tensors(folded, CALIB, [build_layer_table(folded).by_name["dw"].var]).popitem()[1].mean(axis=(1, 2))
    int8 = np.mean([m.mean(axis=(0, 2, 3)) for m in macs], axis=0)
    np.testing.assert_allclose(int8 + vector, fp32, rtol=1e-4, atol=1e-4 * np.abs(fp32).max())
    assert np.abs(int8 + np.asarray(analytic.layers["dw"].bias_correction) - fp32).max() > 1e-3 * np.abs(fp32).max()


# -- Hessian-weighted weight rounding ------------------------------------------------------------

def _layer_outputs(x: np.ndarray, w: np.ndarray, groups: int) -> np.ndarray:
    return torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w.astype(np.float32)), padding=1,
                                      groups=groups).numpy().astype(np.float64)


@pytest.mark.parametrize("groups,out_ch,in_per_group", [(1, 24, 8), (12, 12, 1), (4, 8, 3)])
def test_hessian_rounding_lowers_the_layer_output_error(groups, out_ch, in_per_group):
    """Dense, depthwise and grouped convs: every code stays on one of the two grid points next to
    its weight (``|code - W/s| < 1``), the rounding differs from nearest for some weights, and the
    output error on the inputs it was computed from (its total, and its variance with the
    centred Hessian) is lower than round-to-nearest's."""
    from tvm_mpq.quantization.adaptive_rounding import hessian_flips, patch_moments, rounded_codes
    from tvm_mpq.quantization.quantizers import weight_scales

    rng = np.random.default_rng(groups)
    x = (rng.normal(size=(4, groups * in_per_group, 10, 10)) + 0.7).astype(np.float32)
    w = rng.normal(size=(out_ch, in_per_group, 3, 3)).astype(np.float32)
    moments = patch_moments(x, (3, 3), ConvGeometry((1, 1), (1, 1, 1, 1), (1, 1), groups))
    scales = weight_scales(w, 8, 0)
    s = scales.reshape(-1, 1, 1, 1)
    exact = _layer_outputs(x, w, groups)
    nearest = _layer_outputs(x, rounded_codes(w, scales, 8, 0, None) * s, groups) - exact
    for centered in (False, True):
        flips = hessian_flips(w, scales, 8, 0, moments.hessians(centered))
        codes = rounded_codes(w, scales, 8, 0, flips)
        assert flips.shape == w.shape and 0 < flips.sum() < flips.size
        assert np.abs(codes - w / s).max() < 1 and np.all(np.abs(codes) <= 127)
        error = _layer_outputs(x, codes * s, groups) - exact
        if centered:  # what bias correction leaves: the error minus its per-channel mean
            assert np.var(error, axis=(0, 2, 3)).sum() < np.var(nearest, axis=(0, 2, 3)).sum()
        else:
            assert np.sum(error ** 2) < np.sum(nearest ** 2)


def test_hessian_rounding_of_a_matmul_and_the_mask_encoding():
    from tvm_mpq.quantization.adaptive_rounding import (decode_flips, encode_flips, hessian_flips, patch_moments,
                                                        rounded_codes)
    from tvm_mpq.quantization.quantizers import weight_scales

    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 16, 40)) + 0.3
    w = rng.normal(size=(40, 24)).astype(np.float32)  # K x N: output channels on axis 1
    scales = weight_scales(w, 8, 1)
    flips = hessian_flips(w, scales, 8, 1, patch_moments(x, None, None).hessians(False))
    errors = [np.sum((x @ (rounded_codes(w, scales, 8, 1, f) * scales) - x @ w) ** 2) for f in (None, flips)]
    assert errors[1] < errors[0]
    text = encode_flips(flips)
    np.testing.assert_array_equal(decode_flips(text, w.shape), flips)
    with pytest.raises(ValueError, match="bits for a weight of"):
        decode_flips(text, (41, 24))
    with pytest.raises(ValueError, match="not a weight-rounding mask"):
        decode_flips("not base64!", w.shape)


def test_weight_rounding_is_recorded_compiled_and_exported_identically(graph, net, tmp_path):
    """--weight-rounding hessian (with bias correction): every int8 layer's mask is in the config
    and survives the JSON round trip; the module the lowering reads has each weight on its
    rounded codes (nearest except where the mask says, one grid step at most from nearest);
    bias correction is computed from the rounded weight; the integer build, the QDQ simulation
    and the ONNX export compute the same model, and the replayed config the same outputs."""
    import tvm

    from relay_passes.precision_annotation import annotated_layers, relax_functions, weight_channel_axis
    from relay_passes.round_weights import RoundWeights, rounded_layers
    from tvm_mpq.compiler.pipeline import annotation_passes
    from tvm_mpq.quantization.adaptive_rounding import decode_flips
    from tvm_mpq.quantization.quantizers import weight_codes

    nearest, _ = config_for_rate(graph, CALIB, 100, "inorder", bias_correction=True)
    config, _ = config_for_rate(graph, CALIB, 100, "inorder", bias_correction=True, weight_rounding="hessian")
    assert config.provenance["weight_rounding"] == "hessian" and "weight_rounding" not in nearest.provenance
    assert all(lp.weight_rounding is not None for lp in config.layers.values())
    path = tmp_path / "cfg.json"
    config.save(path)
    loaded = PrecisionConfig.load(path)
    assert {n: lp.weight_rounding for n, lp in loaded.layers.items()} == \
        {n: lp.weight_rounding for n, lp in config.layers.items()}
    with tvm.transform.PassContext(opt_level=3):
        prepared = tvm.transform.Sequential(annotation_passes(graph, loaded, "A->C"))(graph.mod)
        plain = tvm.transform.Sequential(annotation_passes(graph, nearest, "A->C"))(graph.mod)
    assert rounded_layers(prepared) == sorted(config.layers)
    original = {a.layer: b.value.args[1].value.numpy() for _, f in relax_functions(plain) for b, a in annotated_layers(f)}
    flipped = 0
    for _, func in relax_functions(prepared):
        for binding, annotation in annotated_layers(func):
            weight, axis = binding.value.args[1].value.numpy(), weight_channel_axis(binding.value)
            shape = [1] * weight.ndim
            shape[axis] = -1
            s = annotation.weight_scales.reshape(shape)
            codes = weight / s
            np.testing.assert_allclose(codes, np.round(codes), rtol=0, atol=1e-4)  # on the grid
            near = weight_codes(original[annotation.layer], 8, axis, annotation.weight_scales)
            mask = decode_flips(loaded.layers[annotation.layer].weight_rounding, weight.shape)
            np.testing.assert_array_equal(np.round(codes) != near, mask)
            assert np.abs(np.round(codes) - near).max() <= 1
            flipped += int(mask.sum())
    assert flipped > 0
    assert any(not np.allclose(config.layers[n].bias_correction, nearest.layers[n].bias_correction)
               for n in config.layers)
    simulated, integer = compile_model(graph, loaded, simulate=True), compile_model(graph, loaded)
    sim = _outputs(simulated, HELD_OUT)
    assert _steps(_outputs(integer, HELD_OUT), sim) <= 1
    np.testing.assert_array_equal(_outputs(compile_model(graph, config), HELD_OUT), _outputs(integer, HELD_OUT))
    exported = build_qdq_onnx(graph, loaded, fp32_onnx(graph, net))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(exported.model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert _steps(np.stack([session.run(None, f)[0] for f in HELD_OUT]), sim) < 0.1
    ref = _outputs(compile_graph(graph), HELD_OUT)
    assert np.mean((sim - ref) ** 2) < 0.5 * np.mean((_outputs(compile_model(graph, config_for_rate(
        graph, CALIB, 100, "inorder")[0], simulate=True), HELD_OUT) - ref) ** 2)  # still a close int8 model
    from tvm_mpq.errors import MpqError
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.quantization.adaptive_rounding import encode_flips

    loaded.layers["dw"].weight_rounding = encode_flips(np.zeros(7, bool))
    with pytest.raises(MpqError, match="config layer 'dw': weight_rounding: a weight-rounding mask of 8 bits"):
        loaded.validate(build_layer_table(graph))
    with pytest.raises(KeyError, match="no quantized layer annotated"):
        RoundWeights({"nope": "x"})(plain)
    with pytest.raises(ValueError, match="not a weight-rounding mask"):
        RoundWeights({"fc": "x"})(plain)
