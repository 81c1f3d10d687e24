"""The Relax passes: QDQ simulation is bit-exact against the numpy quantizers; exposure works;
both compose with TVM's own passes in a Sequential."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from relay_passes import ExposeIntermediates, LayerQuantPlan, SimulateQuantization
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
    plan = LayerQuantPlan(data=qp, w_bits=w_bits, weight_scales=scales, channel_axis=layer.channel_axis)
    mod = SimulateQuantization({layer.var: plan})(small_graph.mod)
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


def test_simulation_rejects_unknown_layer(small_graph):
    with pytest.raises(Exception, match="no MAC op bound"):
        SimulateQuantization({"nope": LayerQuantPlan(data=None)})(small_graph.mod)


def test_passes_compose_in_sequential(small_graph, small_feeds):
    table = build_layer_table(small_graph)
    plans = {}
    for layer in table:
        w = layer.weight_operand(small_graph.params)
        plans[layer.var] = LayerQuantPlan(data=act_qparams(-4, 4, 8), w_bits=8,
                                          weight_scales=weight_scales(w, 8, layer.channel_axis),
                                          channel_axis=layer.channel_axis)
    seq = tvm.transform.Sequential([
        SimulateQuantization(plans),
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


def _bound(graph) -> tvm.IRModule:
    from tvm_mpq.compiler.pipeline import bind_params

    with tvm.transform.PassContext(opt_level=3):
        return relax.transform.FoldConstant()(bind_params(graph))


def _run_bound(graph, mod: tvm.IRModule, feed) -> np.ndarray:
    bound = small_graph_like(graph, mod)
    return compile_graph(bound).run(feed)[0]


def small_graph_like(graph, mod: tvm.IRModule):
    from tvm_mpq.frontends.model_graph import ModelGraph

    return ModelGraph(graph.name, mod, graph.inputs, {}, graph.layer_names, graph.source)


def test_correct_bias_folds_into_the_bias_or_adds_one(small_graph, small_feeds):
    """CorrectBias adds the vector to the layer output: into the conv's folded bias constant, or
    as a new add (a layer whose output has several readers); the model moves by exactly it."""
    from relay_passes import CorrectBias, FoldBatchNorm, LayerKeys

    table = build_layer_table(small_graph)
    with tvm.transform.PassContext(opt_level=3):
        folded = tvm.transform.Sequential([FoldBatchNorm(None), relax.transform.FoldConstant()])(_bound(small_graph))
    keys = LayerKeys.for_main(table.names())
    rng = np.random.default_rng(0)
    vectors = {"pw": rng.normal(size=8).astype(np.float32), "fc": rng.normal(size=5).astype(np.float32)}
    correct = CorrectBias(vectors, keys)
    seq = tvm.transform.Sequential([correct, relax.transform.FoldConstant()])  # composes with TVM's passes
    with tvm.transform.PassContext(opt_level=3):
        corrected = seq(folded)
    assert sorted(correct.folded + correct.inserted) == ["fc", "pw"]
    before, after = _run_bound(small_graph, folded, small_feeds[0]), _run_bound(small_graph, corrected, small_feeds[0])
    # pw's correction reaches the logits through the mean pool and fc; fc's directly
    w_fc = small_graph.params[table.by_name["fc"].weight_param]  # [5, 8] (torch Linear)
    expected = vectors["pw"] @ w_fc.T + vectors["fc"]
    np.testing.assert_allclose(after - before, expected[None], rtol=1e-4, atol=1e-4)
    with pytest.raises(KeyError):
        CorrectBias({"nope": np.zeros(1)}, keys)(folded)
    with pytest.raises(ValueError):
        CorrectBias({"pw": np.zeros(3)}, keys)(folded)


def test_equalize_cross_layer_is_exact_and_keeps_layers(small_graph, small_feeds):
    """conv-bn-relu -> depthwise-bn-relu -> 1x1: only dw -> pw is equalizable (conv1's output
    also feeds the residual add); the function is unchanged, the weights are not."""
    from relay_passes import EqualizeCrossLayer, LayerKeys

    table = build_layer_table(small_graph)
    bound = _bound(small_graph)
    rewrite = EqualizeCrossLayer(LayerKeys.for_main(table.names()))
    with tvm.transform.PassContext(opt_level=3):
        equalized = rewrite(bound)
    assert [(p.first, p.second) for p in rewrite.pairs] == [("dw", "pw")]
    scales = rewrite.pairs[0].scales
    assert scales.shape == (8,) and np.all(scales > 0) and np.ptp(np.log(scales)) > 0.1
    for feed in small_feeds:
        np.testing.assert_allclose(_run_bound(small_graph, equalized, feed), _run_bound(small_graph, bound, feed),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):  # given scales must name an equalizable pair
        EqualizeCrossLayer(LayerKeys.for_main(table.names()), {("conv1", "dw"): np.ones(8)})(bound)
