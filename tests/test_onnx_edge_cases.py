"""ONNX exports' edge cases, on tiny models written with onnx.helper: scalar constants keep rank 0
through import and run; a conv whose result is the model output is lowered int8 (its border
named); a Keras-style NHWC PReLU net builds channels-last."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_mpq.api import config_for_rate
from tvm_mpq.compiler import compile_model
from tvm_mpq.metrics.task_metrics import output_sqnr_db
from tvm_mpq.runtime.executor import compile_graph
from tvm_mpq.zoo import load_model


def _save(tmp_path, nodes, inputs, outputs, initializers, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


def _feeds(shape, count=4):
    rng = np.random.default_rng(0)
    return [{"x": rng.normal(size=shape).astype(np.float32)} for _ in range(count)]


def _ort(path, feed):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_scalar_initializers_and_constants_keep_rank_0(tmp_path):
    """YOLOv8's DFL decode divides by a scalar Constant, Magika multiplies by a scalar
    initializer: both reach the VM as rank-0 values (they used to arrive as shape (1,))."""
    w = numpy_helper.from_array(np.random.default_rng(1).normal(size=(4, 3, 1, 1)).astype(np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "scale")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Mul", ["c", "scale"], ["m"]),
             helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.array(4.0, np.float32))),
             helper.make_node("Div", ["m", "k"], ["y"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w, scale])
    graph = load_model(str(path))
    assert all(v.ndim >= 1 for v in graph.params.values())  # scalars are constants, not parameters
    feed = _feeds((1, 3, 8, 8), 1)[0]
    np.testing.assert_allclose(compile_graph(graph).run(feed)[0], _ort(path, feed)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("stage", "dequantized_for"), [("A->C", "output"), ("A", "per-layer lowering (stage A)")])
def test_a_conv_whose_result_is_the_model_output_runs_int8(tmp_path, stage, dequantized_for):
    """One Conv, no bias, its output the model's output: fully int8 it is one int8 layer with
    two borders, the input's quantize and the output's dequantize (it used to stay fp32)."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    path = _save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w], opset=13)
    graph = load_model(str(path))
    feeds = _feeds((1, 3, 8, 8))
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    compiled = compile_model(graph, config, stage=stage)
    assert compiled.stats["int8_layers"] == 1 and compiled.n_qdq == 2
    borders = [(b["kind"], b["op"]) for b in compiled.stats["borders"]]
    assert borders == [("quantize", "input"), ("dequantize", dequantized_for)]
    reference = compile_model(graph, None)
    sqnr = output_sqnr_db([compiled.run(f) for f in feeds], [reference.run(f) for f in feeds])
    assert sqnr > 30


def test_an_nhwc_prelu_net_builds_channels_last_and_matches_onnxruntime(tmp_path):
    """tf2onnx's Keras PReLU: an NHWC input transposed to NCHW, a (1, C, 1, 1) slope."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(0.1, 0.3, size=(1, 8, 1, 1)).astype(np.float32), "slope")]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["c"]),
             helper.make_node("PRelu", ["c", "slope"], ["p"]),
             helper.make_node("Transpose", ["p"], ["y"], perm=[0, 2, 3, 1])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10, 10, 3])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits, opset=12)
    graph = load_model(str(path))
    feed = _feeds((1, 10, 10, 3), 1)[0]
    np.testing.assert_allclose(compile_model(graph, None).run(feed)[0], _ort(path, feed)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset", [6, 13])
def test_onnx_clip_between_int8_convs_fuses_into_the_group(tmp_path, opset):
    """TVM's importer writes an ONNX Clip (ReLU6) as two TE-built call_tir; RecoverMinMax turns
    them back into R.maximum / R.minimum, so fully int8 the clip is part of the conv's group: no
    border at it (only the input's quantize and the output's dequantize), the same outputs as
    the model with the call_tir, and close to onnxruntime's."""
    from tvm import relax

    from relay_passes.te_elementwise import RecoverMinMax

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(4, 8, 1, 1)).astype(np.float32) * 0.3, "w2")
    inits = [w1, w2]
    if opset >= 11:
        inits += [numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
        clip = helper.make_node("Clip", ["c1", "lo", "hi"], ["r"])
    else:
        clip = helper.make_node("Clip", ["c1"], ["r"], min=0.0, max=6.0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), clip,
             helper.make_node("Conv", ["r", "w2"], ["y"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits, opset=opset)
    graph = load_model(str(path))
    script = graph.mod.script()
    assert "call_tir" in script  # what the importer gives
    recovered = RecoverMinMax()(graph.mod)
    assert "call_tir" not in recovered.script() and "R.maximum" in recovered.script()
    assert not [gv for gv, f in recovered.functions_items() if not isinstance(f, relax.Function)]
    feeds = _feeds((1, 3, 8, 8))
    np.testing.assert_allclose(compile_graph(graph.with_module(recovered)).run(feeds[0])[0],
                               _ort(path, feeds[0])[0], rtol=1e-4, atol=1e-4)
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    compiled = compile_model(graph, config)
    ops = sorted(f"{b['kind']} {b['op']}" for b in compiled.stats["borders"])
    assert ops == ["dequantize output", "quantize input"], ops
    assert compiled.stats["int8_layers"] == 2
    assert output_sqnr_db([compiled.run(f) for f in feeds], [_ort(path, f) for f in feeds]) > 20
