"""ONNX ``Attention`` (opset 23), which PyTorch's exporter writes for scaled dot-product attention
and TVM's importer reads as onnxruntime's contrib op: imported as its products and softmax, equal
to onnxruntime in fp32 for every input form, its projections int8 around them; what it cannot
take is one line naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_mpq.api import config_for_rate
from tvm_mpq.compiler import compile_model
from tvm_mpq.compiler.validate import keep_unsupported_fp32
from tvm_mpq.errors import MpqError
from tvm_mpq.graph import build_layer_table
from tvm_mpq.metrics.task_metrics import output_sqnr_db
from tvm_mpq.runtime.executor import compile_graph
from tvm_mpq.zoo import load_model

OPSET = 23


def _attention_model(tmp_path, q_shape, kv_shape, attrs, mask=None, past=None, presents=False):
    """``x`` (the queries' source) -> three projections -> Attention -> output projection. The
    keys and values come from ``x`` too (their length and width from ``kv_shape``, by a
    projection over the sequence); ``mask``: a constant (bool or float); ``past``: the shape of
    constant past keys / values."""
    rng = np.random.default_rng(0)
    batch, length, width = q_shape[0], q_shape[-2] if len(q_shape) == 4 else q_shape[1], 16
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def project(name, shape):  # x [B, L, 16] -> shape (3-D [B, S, hidden] or 4-D [B, H, S, D])
        hidden = int(np.prod(shape[1:])) // shape[-2 if len(shape) == 3 else 2]
        seq = shape[1] if len(shape) == 3 else shape[2]
        t = [name + "_seq", name + "_proj", name]
        nodes.append(helper.make_node("Transpose", ["x"], [t[0] + "_xt"], perm=[0, 2, 1]))
        nodes.append(helper.make_node("MatMul", [t[0] + "_xt", const(t[0] + "_w", rng.normal(size=(length, seq)).astype(np.float32) / 4)], [t[0]]))
        nodes.append(helper.make_node("Transpose", [t[0]], [t[0] + "_t"], perm=[0, 2, 1]))
        nodes.append(helper.make_node("MatMul", [t[0] + "_t", const(t[1] + "_w", rng.normal(size=(width, hidden)).astype(np.float32) / 4)], [t[1]]))
        nodes.append(helper.make_node("Reshape", [t[1], const(name + "_shape", np.array(shape, np.int64))], [name]))
        return name

    inputs = [project("q", q_shape), project("k", kv_shape), project("v", kv_shape)]
    inputs.append(const("mask", mask) if mask is not None else "")
    if past is not None:
        inputs += [const("past_k", rng.normal(size=past).astype(np.float32)),
                   const("past_v", rng.normal(size=past).astype(np.float32))]
    outputs = ["y"] + (["present_k", "present_v"] if presents else [])
    nodes.append(helper.make_node("Attention", inputs if mask is not None or past is not None else inputs[:3], outputs,
                                  **attrs))
    flat = helper.make_node("Reshape", ["y", const("flat", np.array([batch, -1], np.int64))], ["y_flat"])
    nodes.append(flat)
    graph_outputs = [helper.make_tensor_value_info("y_flat", TensorProto.FLOAT, ["b", "n"])]
    graph_outputs += [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["b", "h", "l", "d"]) for o in outputs[1:]]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, length, width])],
                              graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    path = tmp_path / "attn.onnx"
    onnx.save(model, str(path))
    return path, (batch, length, width)


def _ort(path, feed):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


_CASES = {
    "4d-plain": dict(q_shape=(1, 4, 10, 8), kv_shape=(1, 4, 10, 8), attrs={}),
    "3d-grouped-causal-scaled": dict(q_shape=(2, 10, 32), kv_shape=(2, 10, 16),
                                     attrs=dict(q_num_heads=4, kv_num_heads=2, is_causal=1, scale=0.3)),
    "4d-bool-mask-softcap": dict(q_shape=(1, 2, 10, 8), kv_shape=(1, 2, 12, 8), attrs=dict(softcap=2.0),
                                 mask=np.random.default_rng(1).random((10, 12)) > 0.3),
    "4d-float-mask-past-causal": dict(q_shape=(1, 2, 6, 8), kv_shape=(1, 2, 6, 8), attrs=dict(is_causal=1),
                                      mask=np.random.default_rng(2).normal(size=(1, 1, 6, 10)).astype(np.float32),
                                      past=(1, 2, 4, 8), presents=True),
}


@pytest.mark.parametrize("case", list(_CASES), ids=list(_CASES))
def test_an_attention_node_imports_as_its_products_like_onnxruntime(tmp_path, case):
    path, x_shape = _attention_model(tmp_path, **_CASES[case])
    graph = load_model(str(path))
    table = build_layer_table(graph)
    assert [entry.kind for entry in table].count("matmul") == 2  # scores and context: activation x activation
    rng = np.random.default_rng(3)
    feeds = [{"x": rng.normal(size=x_shape).astype(np.float32)} for _ in range(4)]
    fp32 = compile_graph(graph)
    for feed in feeds:
        want, got = _ort(path, feed), fp32.run(feed)
        assert len(got) == len(want)
        for g, r in zip(got, want):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * float(np.abs(r).max()))
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    keep_unsupported_fp32(config, table)
    compiled = compile_model(graph, config)
    assert compiled.stats["int8_layers"] == len(table) - 2
    assert output_sqnr_db([compiled.run(f)[:1] for f in feeds], [_ort(path, f)[:1] for f in feeds]) > 20


@pytest.mark.parametrize("attrs, extra, message", [
    (dict(q_num_heads=2), {}, "need the q_num_heads and kv_num_heads"),
    ({}, dict(mask=np.ones((10, 6), bool)), "covers 6 keys of 10"),
])
def test_an_attention_the_rewrite_cannot_take_is_one_line_naming_it(tmp_path, attrs, extra, message):
    shapes = dict(q_shape=(1, 10, 16), kv_shape=(1, 10, 16)) if "q_num_heads" in attrs else \
        dict(q_shape=(1, 2, 10, 8), kv_shape=(1, 2, 10, 8))
    path, _ = _attention_model(tmp_path, attrs=attrs, **shapes, **extra)
    with pytest.raises(MpqError, match=f"ONNX Attention '.*': .*{message}"):
        load_model(str(path))
