"""Models as PyTorch 2.13's default ``torch.onnx.export`` writes them (the dynamo exporter,
opset 20, batch norms fused into the convs by its optimizer, nodes named ``node_Conv_12``; and
at opset 23, attention as one ``Attention`` node): the layers carry the PyTorch module paths, the
fp32 build equals onnxruntime's, the int8 build is close to it, and the QDQ export runs in
onnxruntime like the int8 simulation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from tvm_mpq.api import config_for_rate
from tvm_mpq.compiler import compile_model
from tvm_mpq.compiler.validate import keep_unsupported_fp32
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.export import build_qdq_onnx
from tvm_mpq.graph import build_layer_table
from tvm_mpq.metrics.task_metrics import output_sqnr_db
from tvm_mpq.runtime.executor import compile_graph
from tvm_mpq.zoo import load_model

pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (a test dependency)")


class _Block(nn.Module):
    """A depthwise-separable block: depthwise conv, batch norm, ReLU6, 1x1 conv, batch norm."""

    def __init__(self, channels: int, out: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.project = nn.Conv2d(channels, out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.project(torch.clamp(self.bn1(self.depthwise(x)), 0, 6)))


class _ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.blocks = nn.Sequential(_Block(16, 24), _Block(24, 24))
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class _Encoder(nn.Module):
    """One transformer encoder layer (``LayerNormalization``, attention: products and softmax,
    or at opset 23 one ``Attention`` node)."""

    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation="gelu", batch_first=True)
        self.out = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.layer(x))


def _trained_bn(module: nn.Module) -> nn.Module:
    """Batch norms with statistics and affine parameters other than the identity (seeded)."""
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return module.eval()


def _export(module: nn.Module, shape: tuple[int, ...], path, opset: int | None) -> None:
    torch.manual_seed(1)
    program = torch.onnx.export(module, (torch.randn(*shape),), dynamo=True, verbose=False,  # (the default exporter)
                                opset_version=opset)
    program.save(str(path))


def _ort(path, feed):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: next(iter(feed.values()))})


@pytest.mark.parametrize("net, shape, opset, layers", [
    (lambda: _trained_bn(_ConvNet()), (1, 3, 32, 32), None,
     ["stem.0", "blocks.0.depthwise", "blocks.0.project", "blocks.1.depthwise", "blocks.1.project", "head"]),
    (lambda: _Encoder().eval(), (1, 12, 32), None, ["layer.linear1", "layer.linear2", "out"]),
    (lambda: _Encoder().eval(), (1, 12, 32), 23, ["layer.linear1", "layer.linear2", "out"]),
], ids=["convs-with-folded-batch-norms", "transformer-encoder-layer", "encoder-layer-opset-23-attention"])
def test_a_default_torch_export_names_layers_by_module_and_builds_like_onnxruntime(tmp_path, net, shape, opset, layers):
    path = tmp_path / "m.onnx"
    _export(net(), shape, path, opset)
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 18 and not {n.name for n in model.graph.node} & set(layers)
    assert ("Attention" in {n.op_type for n in model.graph.node}) == (opset == 23)
    graph = load_model(str(path))
    names = [entry.name for entry in build_layer_table(graph) if entry.weight_param is not None]
    assert [n for n in names if n in layers] == layers, names  # (the attention's in-projection is a layer too)

    rng = np.random.default_rng(0)
    feeds = [{graph.inputs[0].name: rng.normal(size=shape).astype(np.float32)} for _ in range(6)]
    want = [_ort(path, f)[0] for f in feeds]
    fp32 = compile_graph(graph)
    for feed, ref in zip(feeds, want):
        np.testing.assert_allclose(fp32.run(feed)[0], ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))

    config, _ = config_for_rate(graph, feeds, 100, "quantunev2")
    table = build_layer_table(graph)
    with_products = PrecisionConfig.from_json(config.to_json())
    keep_unsupported_fp32(config, table)  # (attention products stay fp32, as compile does)
    compiled = compile_model(graph, config)
    assert compiled.stats["int8_layers"] == len([n for n in names if not config.layers[n].is_fp32]) > 0
    assert output_sqnr_db([compiled.run(f) for f in feeds], [[w] for w in want]) > 20
    _export_computes_simulation(graph, config, feeds, tmp_path / "qdq.onnx")
    products = [layer.name for layer in table if layer.kind == "matmul"]
    assert bool(products) == ("layer.linear1" in layers)
    if not products:
        return
    keep_unsupported_fp32(with_products, table, int8_attention=True)  # --int8-attention
    assert output_sqnr_db([compile_model(graph, with_products).run(f) for f in feeds], [[w] for w in want]) > 20
    exported = _export_computes_simulation(graph, with_products, feeds, tmp_path / "qdq_products.onnx")
    assert set(products) <= set(exported.nodes)  # the MatMuls of q k^T and p v, inputs quantized


def _export_computes_simulation(graph, config, feeds, path):
    """The QDQ export of ``config``, checked: onnxruntime computes the QDQ simulation."""
    exported, simulated = build_qdq_onnx(graph, config), compile_model(graph, config, simulate=True)
    onnx.save(exported.model, str(path))
    for feed in feeds[:2]:
        sim = simulated.run(feed)[0]
        np.testing.assert_allclose(_ort(path, feed)[0], sim, atol=1e-4 * float(np.abs(sim).max()))
    return exported
