"""ONNX QDQ export: onnxruntime runs the exported model with the compiled model's numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import ConvBnReluNet

from tvm_mpq.allocation.bops import FP32, Precision
from tvm_mpq.calibration import calibrate
from tvm_mpq.compiler import compile_model
from tvm_mpq.config.build import build_config
from tvm_mpq.config.precision_config import LayerPrecision, PrecisionConfig
from tvm_mpq.errors import MpqError
from tvm_mpq.export import build_qdq_onnx, export_qdq_onnx
from tvm_mpq.export.fp32_onnx import fp32_onnx, load_with_source
from tvm_mpq.graph import build_layer_table
from tvm_mpq.quantization.quantizers import ActQParams
from tvm_mpq.zoo import get


def _session(model: onnx.ModelProto, optimized: bool = True) -> ort.InferenceSession:
    """``optimized``: onnxruntime's default (QDQ fused into its own integer kernels); otherwise
    the graph as written (float ops between Q/DQ: the QDQ semantics exactly)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _steps(got: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Max |difference| over a batch, in int8 steps of the reference outputs' range (over the
    batch: a 2-logit output's own range says little)."""
    ref = np.stack(reference)
    return float(np.abs(np.stack(got) - ref).max() / ((ref.max() - ref.min()) / 255))


def _config(graph, feeds, fp32_layers: tuple[str, ...] = ()) -> PrecisionConfig:
    table = build_layer_table(graph)
    ranges = {v: r[8] for v, r in calibrate(graph, feeds, table.activation_operands(), "minmax").items()}
    precisions = {n: FP32 if n in fp32_layers else Precision(8, 8) for n in table.names()}
    return build_config(graph, table, precisions, ranges, {})


def _count(model: onnx.ModelProto, op: str) -> int:
    return sum(node.op_type == op for node in model.graph.node)


def _exports_like_simulation(graph, config, source, feeds, sim: list[np.ndarray]):
    """The QDQ export of ``config`` from ``source``: every layer of the table exported int8, and
    onnxruntime running it as written within 0.1 step of the simulation's outputs ``sim``."""
    exported = build_qdq_onnx(graph, config, fp32_onnx(graph, source))
    assert sorted(exported.int8_layers) == sorted(build_layer_table(graph).names())
    assert _steps([_session(exported.model, optimized=False).run(None, feed)[0] for feed in feeds], sim) < 0.1
    return exported


@pytest.fixture(scope="module")
def small_source() -> ConvBnReluNet:
    return ConvBnReluNet()  # seeded: the same weights as the small_graph fixture


@pytest.mark.parametrize("fp32_layers", [(), ("dw", "fc")], ids=["int8", "mixed"])
def test_small_model_runs_in_onnxruntime_like_the_compiled_model(small_graph, small_feeds, small_source, fp32_layers):
    config = _config(small_graph, small_feeds, fp32_layers)
    exported = build_qdq_onnx(small_graph, config, fp32_onnx(small_graph, small_source))
    assert sorted(exported.int8_layers) == sorted(set(["conv1", "dw", "pw", "fc"]) - set(fp32_layers))
    model = exported.model
    assert _count(model, "BatchNormalization") == 0  # torch's exporter folded them
    n_int8 = len(exported.int8_layers)
    assert _count(model, "QuantizeLinear") == exported.n_act_qdq >= n_int8
    assert _count(model, "DequantizeLinear") == exported.n_act_qdq + n_int8 + exported.n_bias_dq
    weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 1]
    assert len(weights) == n_int8
    as_written, fused = _session(model, optimized=False), _session(model)
    simulated, integer = compile_model(small_graph, config, simulate=True), compile_model(small_graph, config)
    sim = [simulated.run(feed)[0] for feed in small_feeds]
    assert _steps([as_written.run(None, feed)[0] for feed in small_feeds], sim) < 0.1  # same quantizers, values
    assert _steps([integer.run(feed)[0] for feed in small_feeds], sim) <= 1
    # onnxruntime's default session fuses Q/DQ into its own integer kernels (QLinearConv, QGemm):
    # their requantization rounds a few codes differently, and this random net amplifies a flip
    got = [fused.run(None, feed)[0] for feed in small_feeds]
    assert _steps(got, sim) <= 6 and all(g.argmax() == s.argmax() for g, s in zip(got, sim))


@pytest.fixture(scope="module")
def rnet():
    graph, source = load_with_source("mtcnn-rnet")
    feeds = get("mtcnn-rnet").calibration(8)
    return graph, source, feeds, _config(graph, feeds)


def test_mtcnn_rnet_int8_agrees_with_compiled_model(rnet):
    graph, source, feeds, config = rnet
    exported = build_qdq_onnx(graph, config, source)
    assert len(exported.int8_layers) == 5 and exported.n_bias_dq == 5
    assert _count(exported.model, "Gemm") == 2 and _count(exported.model, "Conv") == 3
    as_written, fused = _session(exported.model, optimized=False), _session(exported.model)
    simulated, integer = compile_model(graph, config, simulate=True), compile_model(graph, config)
    sim = [simulated.run(feed)[0] for feed in feeds]
    assert _steps([as_written.run(None, feed)[0] for feed in feeds], sim) < 0.1
    assert _steps([integer.run(feed)[0] for feed in feeds], sim) <= 1
    got = [fused.run(None, feed)[0] for feed in feeds]
    assert _steps(got, sim) <= 2 and all(g.argmax() == s.argmax() for g, s in zip(got, sim))


def test_mtcnn_rnet_mixed_config(rnet):
    graph, source, feeds, _ = rnet
    config = _config(graph, feeds, ("conv2", "dense4"))
    exported = build_qdq_onnx(graph, config, source)
    assert exported.fp32_layers == ["conv2", "dense4"]
    fp32_weights = {i.name for i in exported.model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert {"conv2.weight", "dense4.weight"} <= fp32_weights  # fp32 layers untouched
    as_written = _session(exported.model, optimized=False)
    simulated = compile_model(graph, config, simulate=True)
    assert _steps([as_written.run(None, feed)[0] for feed in feeds], [simulated.run(feed)[0] for feed in feeds]) < 0.1


def test_fp32_config_exports_the_fp32_model(rnet):
    graph, source, feeds, _ = rnet
    config = PrecisionConfig(graph.name, {n: LayerPrecision(None, None) for n in build_layer_table(graph).names()})
    exported = build_qdq_onnx(graph, config, source)
    assert exported.n_act_qdq == 0 and not exported.int8_layers
    assert _count(exported.model, "QuantizeLinear") == _count(exported.model, "DequantizeLinear") == 0
    fp32, plain = _session(exported.model), _session(source)
    torch_ref = get("mtcnn-rnet").reference
    for feed in feeds[:4]:
        out = fp32.run(None, feed)[0]
        np.testing.assert_array_equal(out, plain.run(None, feed)[0])
        np.testing.assert_allclose(out, torch_ref(feed)[0], rtol=1e-4, atol=1e-5)


def test_config_of_another_model_is_rejected(rnet, small_graph, small_feeds, small_source):
    graph, source, _, config = rnet
    with pytest.raises(MpqError, match=r"config names 4 layer\(s\) not in the model: conv2"):
        build_qdq_onnx(small_graph, config, fp32_onnx(small_graph, small_source))
    # right layer names, wrong model: the weights do not match any ONNX node
    with pytest.raises(MpqError, match="int8 layer 'conv1' .* matches no Conv node"):
        build_qdq_onnx(small_graph, _config(small_graph, small_feeds), source)


def test_unsupported_activation_bits_are_rejected(rnet):
    graph, source, _, config = rnet
    layers = dict(config.layers)
    layers["conv1"] = LayerPrecision(8, 4, ActQParams(0.1, 3, 4))
    with pytest.raises(MpqError, match="4-bit activations"):
        build_qdq_onnx(graph, PrecisionConfig(graph.name, layers), source)


def test_onnx_zoo_model_folds_batch_norm_and_runs():
    """ppocr-cls (paddle2onnx, opset 11, Conv + BatchNormalization, bias as Add(Reshape(b)))."""
    graph, source = load_with_source("ppocr-cls")
    table = build_layer_table(graph)
    act = ActQParams(0.05, 128, 8)  # structure test: no calibration (that needs a TVM build)
    config = PrecisionConfig(graph.name, {n: LayerPrecision(8, 8, act) for n in table.names()})
    exported = build_qdq_onnx(graph, config, source)
    model = exported.model
    assert len(exported.int8_layers) == len(table) == 54
    assert exported.n_bn_folded == 35 and _count(model, "BatchNormalization") == 0
    assert model.opset_import[0].version >= 13
    feed = get("ppocr-cls").calibration(1)[0]
    out = _session(model).run(None, feed)[0]
    assert out.shape == (1, 2) and np.all(np.isfinite(out))


def test_cli_export_onnx_end_to_end(tmp_path, small_graph, small_feeds, small_source):
    """A ``torch.export`` archive and a config file -> the same model as the library call."""
    ep = torch.export.export(small_source.eval(), (torch.zeros(1, 3, 16, 16),))
    archive = tmp_path / "small.pt2"
    torch.export.save(ep, str(archive))
    config = _config(small_graph, small_feeds, ("fc",))
    config_path = tmp_path / "cfg.json"
    config.save(config_path)
    out = tmp_path / "small_qdq.onnx"
    run = subprocess.run([sys.executable, "-m", "tvm_mpq.cli", "export-onnx", str(archive), "--config", str(config_path),
                          "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "3 int8 layer(s), 1 fp32" in run.stdout and "activation QDQ pair(s)" in run.stdout
    assert json.loads(out.with_suffix(".config.json").read_text())["provenance"]["exported_onnx"] == str(out)
    reference = export_qdq_onnx(small_graph, config, tmp_path / "lib.onnx", source=small_source)
    cli_model, lib_model = _session(onnx.load(str(out))), _session(onnx.load(str(reference)))
    for feed in small_feeds:
        np.testing.assert_array_equal(cli_model.run(None, feed)[0], lib_model.run(None, feed)[0])


def test_cli_errors_are_one_line(tmp_path, capsys, small_graph, small_feeds):
    from tvm_mpq.cli import main

    config_path = tmp_path / "cfg.json"
    _config(small_graph, small_feeds).save(config_path)
    assert main(["export-onnx", "mtcnn-rnet", "--config", str(config_path), "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "config names 3 layer(s) not in the model: dw, pw, fc" in err and len(err.strip().splitlines()) == 1
    assert main(["export-onnx", "mtcnn-rnet", "--rate", "50", "-o", str(tmp_path / "x.so")]) == 2
    assert "must be an .onnx file" in capsys.readouterr().err



class ConvIntoDepthwiseNet(torch.nn.Module):
    """A conv whose output is a depthwise conv's input with nothing between (PP-OCR's DBNet
    backbone has it), then pointwise conv, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = torch.nn.Conv2d(8, 8, 1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pw(torch.relu(self.dw(self.conv1(x)))).mean((2, 3)))


def test_a_per_channel_depthwise_input_runs_in_onnxruntimes_fused_session(small_feeds):
    """A depthwise conv's input quantized per channel (``--channel-act``), read straight from an
    int8 conv: written as QuantizeLinear(axis=1) it made onnxruntime's default session fuse
    that conv into a QLinearConv with a per-channel output zero point, which fails at run time
    (rapidocr-dbnet's export did); written as the quantizer's float ops, the model runs, as
    written and fused, with the simulation's values."""
    from tvm_mpq.frontends.torch_frontend import from_module

    net = ConvIntoDepthwiseNet().eval()
    graph = from_module(net, {"x": np.zeros((1, 3, 16, 16), np.float32)}, "conv-into-dw")
    table = build_layer_table(graph)
    config = _config(graph, small_feeds)
    dw = next(layer for layer in table if layer.kind == "depthwise_conv2d")
    act = config.layers[dw.name].act
    config.layers[dw.name].act = ActQParams(tuple(float(act.scale * f) for f in np.linspace(0.6, 1.4, dw.weight_shape[0])),
                                            tuple(int(z) for z in np.arange(dw.weight_shape[0]) % 5 + act.zero_point), 8)
    config.validate(table)
    model = build_qdq_onnx(graph, config, fp32_onnx(graph, net)).model
    assert _count(model, "Round") == 1
    assert not any(a.name == "axis" for n in model.graph.node if n.op_type == "QuantizeLinear" for a in n.attribute)
    sim = [compile_model(graph, config, simulate=True).run(feed)[0] for feed in small_feeds]
    assert _steps([_session(model, optimized=False).run(None, feed)[0] for feed in small_feeds], sim) < 0.1
    assert _steps([_session(model).run(None, feed)[0] for feed in small_feeds], sim) <= 2


class Conv1dNet(torch.nn.Module):
    """An audio / signal front end: padded, dilated and strided conv1d layers, a residual add."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.conv1 = torch.nn.Conv1d(4, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv1d(16, 16, 3, padding=2, dilation=2)
        self.down = torch.nn.Conv1d(16, 8, 5, stride=5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x))
        y = torch.relu(self.conv2(y) + y)
        return self.down(y)


def test_conv1d_layers_run_int8_and_export_like_the_compiled_model():
    """conv1d layers (signal and audio models) lower to int8 like 2-D convs: all three int8, the
    host build (a conv2d along a row on the integer kernel) within one step of the QDQ simulation,
    and the ONNX QDQ export (int8 weights on the 1-D Conv nodes) run by onnxruntime as written
    with the simulation's numbers."""
    from tvm_mpq.frontends.torch_frontend import from_module

    source = Conv1dNet()
    graph = from_module(source, {"x": np.zeros((1, 4, 60), np.float32)}, "conv1d-net")
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(size=(1, 4, 60)).astype(np.float32)} for _ in range(6)]
    table = build_layer_table(graph)
    assert [layer.kind for layer in table] == ["conv1d"] * 3
    config = _config(graph, feeds)
    integer, simulated = compile_model(graph, config), compile_model(graph, config, simulate=True)
    assert integer.stats["int8_layers"] == 3
    kernels = integer.stats["build"]["kernels"]  # a conv2d along a row, on the integer conv kernel
    assert not any("conv1d" in name for name in kernels) and "Conv2dChannelsLast" in kernels.values(), kernels
    sim = [simulated.run(feed)[0] for feed in feeds]
    assert _steps([integer.run(feed)[0] for feed in feeds], sim) <= 1
    fp32 = [compile_model(graph, None).run(feed)[0] for feed in feeds]
    assert _steps(sim, fp32) < 8  # int8, not a broken model
    _exports_like_simulation(graph, config, source, feeds, sim)


class TokenMlp(torch.nn.Module):
    """A transformer block's feed-forward part on ``[1, L, C]`` tokens: square and wide
    ``Linear`` layers with an exact GELU between them."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.square = torch.nn.Linear(24, 24)
        self.wide = torch.nn.Linear(24, 64)
        self.narrow = torch.nn.Linear(64, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.square(x) + x
        return self.narrow(torch.nn.functional.gelu(self.wide(y)))


def test_linear_layers_on_tokens_export_like_the_compiled_model():
    """``Linear`` layers on ``[1, L, C]`` tokens (minilm's): the graph ``torch.export`` gives has
    ``[L, C]`` outputs where the TorchScript exporter's MatMul nodes have ``[1, L, C]``; every
    layer is still found in the file (the export of minilm stopped with "matches no Gemm/MatMul
    node"), and onnxruntime runs the QDQ model as written with the simulation's numbers."""
    from tvm_mpq.frontends.torch_frontend import from_module

    source = TokenMlp()
    graph = from_module(source, {"x": np.zeros((1, 10, 24), np.float32)}, "token-mlp")
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(size=(1, 10, 24)).astype(np.float32)} for _ in range(6)]
    table = build_layer_table(graph)
    assert [layer.kind for layer in table] == ["dense"] * 3
    config = _config(graph, feeds)
    simulated = compile_model(graph, config, simulate=True)
    sim = [simulated.run(feed)[0] for feed in feeds]
    exported = _exports_like_simulation(graph, config, source, feeds, sim)
    assert _count(exported.model, "DequantizeLinear") >= 3


class _TwoBlocks(torch.nn.Module):
    """Two attention blocks whose four products of two activations all have one shape (16 tokens,
    heads of 16): only their order tells them apart."""

    def __init__(self) -> None:
        super().__init__()
        from test_compile import _Heads

        self.first, self.second = _Heads(32, 2), _Heads(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))


def test_int8_products_of_two_activations_export_in_order_like_the_compiled_model():
    """``--int8-attention``: each product's ONNX MatMul, the k-th of the file's MatMuls of two
    computed tensors (all four of one shape), gets both inputs quantized, and onnxruntime runs
    the QDQ model as written with the simulation's numbers."""
    from tvm_mpq.frontends.torch_frontend import from_module

    source = _TwoBlocks()
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.normal(size=(1, 16, 32)).astype(np.float32)} for _ in range(4)]
    graph = from_module(source, {"x": feeds[0]["x"]}, "two-blocks")
    table = build_layer_table(graph)
    products = [layer.name for layer in table if layer.kind == "matmul"]
    assert len(products) == 4 and len({table.by_name[n].output_shape for n in products}) == 1
    config = _config(graph, feeds)
    assert all(config.layers[n].b_act is not None for n in products)
    simulated = compile_model(graph, config, simulate=True)
    exported = _exports_like_simulation(graph, config, source, feeds, [simulated.run(f)[0] for f in feeds])
    nodes = list(exported.model.graph.node)
    position = {node.name: i for i, node in enumerate(nodes)}
    at = [position[exported.nodes[n]] for n in products]
    assert at == sorted(set(at)), at  # four MatMuls, in the products' order
    producers = {out: node.op_type for node in nodes for out in node.output}
    for i in at:
        assert nodes[i].op_type == "MatMul" and [producers.get(x) for x in nodes[i].input] == ["DequantizeLinear"] * 2


def test_transposed_conv_layers_export_int8_like_the_compiled_model():
    """int8 ``ConvTranspose`` layers (kernel 4 stride 2 padding 1, then kernel 2 stride 2, a
    batch norm between that the compiler keeps): the ONNX QDQ export has per-channel int8 weights
    on axis 1 (the ConvTranspose output channels) and int32 biases, and onnxruntime runs it as
    written with the simulation's numbers; the host build is within one step of them."""
    from test_compile import _Decoder

    from tvm_mpq.frontends.torch_frontend import from_module

    source = _Decoder()
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    graph = from_module(source, feeds[0], "decoder")
    config = _config(graph, feeds)
    integer, simulated = compile_model(graph, config), compile_model(graph, config, simulate=True)
    assert integer.stats["int8_layers"] == 5
    sim = [simulated.run(feed)[0] for feed in feeds]
    assert _steps([integer.run(feed)[0] for feed in feeds], sim) <= 1
    exported = _exports_like_simulation(graph, config, source, feeds, sim)
    weights = {init.name: init for init in exported.model.graph.initializer}
    transposed = [n for n in exported.model.graph.node if n.op_type == "ConvTranspose"]
    assert len(transposed) == 3  # (one with an output padding)
    for node in transposed:
        dequantize = next(n for n in exported.model.graph.node if n.output[0] == node.input[1])
        assert dequantize.op_type == "DequantizeLinear" and dequantize.attribute[0].i == 1
        assert onnx.numpy_helper.to_array(weights[dequantize.input[0]]).dtype == np.int8
    assert _steps([_session(exported.model).run(None, feed)[0] for feed in feeds], sim) <= 1


def test_a_bias_written_after_an_identity_is_found_as_paddle2onnx_writes_it():
    """paddle2onnx writes a transposed conv's bias as ``ConvTranspose -> Identity -> Add(b)``: the
    export drops the ``Identity`` nodes first, so the bias add is found and folded as for a
    ``Conv`` (PP-OCRv6's detector failed with 'the bias of ONNX node ... differs' before)."""
    from onnx import helper, numpy_helper

    from test_compile import _Decoder

    from tvm_mpq.frontends.torch_frontend import from_module

    source = _Decoder()
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)} for _ in range(3)]
    graph = from_module(source, feeds[0], "decoder")
    config = _config(graph, feeds)
    fp32 = fp32_onnx(graph, source)
    inits = {t.name: t for t in fp32.graph.initializer}
    for node in [n for n in fp32.graph.node if n.op_type == "ConvTranspose"]:
        bias = numpy_helper.to_array(inits[node.input[2]])
        del node.input[2]
        out = node.output[0]
        node.output[0] = out + "_raw"
        fp32.graph.initializer.append(numpy_helper.from_array(bias.reshape(1, -1, 1, 1), out + "_b"))
        fp32.graph.node.extend([helper.make_node("Identity", [out + "_raw"], [out + "_id"], name=out + "_identity"),
                                helper.make_node("Add", [out + "_id", out + "_b"], [out], name=out + "_add")])
    exported = build_qdq_onnx(graph, config, fp32)
    assert _count(exported.model, "Identity") == 0 and _count(exported.model, "ConvTranspose") == 3
    simulated = compile_model(graph, config, simulate=True)
    sim = [simulated.run(feed)[0] for feed in feeds]
    assert _steps([_session(exported.model, optimized=False).run(None, feed)[0] for feed in feeds], sim) < 0.1


def test_a_bias_correction_far_larger_than_the_bias_still_matches_the_onnx_bias():
    """The export checks that the ONNX node's bias is the compiled model's own (the compiled bias
    less its correction, in float32). A diffusion UNet's skip conv has bias 0.14 and correction
    -146: the float32 round trip moves the recovered bias by 3.4e-6, which the check (1e-5 of
    the bias) refused: ``export-onnx`` stopped on a valid config. The tolerance now includes
    the compiled bias's float32 step; a bias that really differs is still refused."""
    from tvm_mpq.export.onnx_qdq import _bias_tolerance

    rng = np.random.default_rng(0)
    source = rng.uniform(-0.2, 0.2, 64).astype(np.float32)
    correction = rng.uniform(-150, 150, 64).astype(np.float32)
    compiled = (source + correction).astype(np.float32)
    recovered = (compiled.astype(np.float64) - correction.astype(np.float64)).astype(np.float32)
    tolerance = _bias_tolerance(recovered, compiled)
    assert np.abs(recovered - source).max() > 1e-5 * np.abs(recovered).max()  # the old check's refusal
    assert np.allclose(source, recovered, rtol=1e-3, atol=tolerance)
    assert not np.allclose(source + 0.01, recovered, rtol=1e-3, atol=tolerance)
    assert _bias_tolerance(source, source) == 1e-5 * float(np.abs(source).max())  # no correction: as before
