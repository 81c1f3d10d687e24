"""Analysis runs of a large model are built with the compile's CPU kernels
(:mod:`tvm_mpq.target_build.runs`) and compute what TVM's default build computes."""

from __future__ import annotations

import numpy as np

from tvm_mpq.calibration import calibrate
from tvm_mpq.calibration.calibrate import compile_exposed
from tvm_mpq.graph import build_layer_table
from tvm_mpq.runtime import compile_graph
from tvm_mpq.target_build import runs


def test_a_large_models_calibration_runs_on_the_kernel_build_with_the_default_builds_ranges(
        small_graph, small_feeds, monkeypatch):
    table = build_layer_table(small_graph)
    names = table.activation_operands()
    assert table.total_macs() < runs.KERNEL_BUILD_MACS
    assert compile_exposed(small_graph, names).built_by == compile_graph(small_graph).built_by
    default = calibrate(small_graph, small_feeds, names)

    monkeypatch.setattr(runs, "KERNEL_BUILD_MACS", table.total_macs())  # this model now counts as large
    built = compile_exposed(small_graph, names)
    assert built.built_by.startswith("tvm-mpq kernel rules")
    assert int(built.built_by.split("(")[1].split()[0]) >= len(table), built.built_by  # every MAC layer scheduled
    kernels = calibrate(small_graph, small_feeds, names)
    for name in names:
        span = default[name][8][1] - default[name][8][0]
        np.testing.assert_allclose(kernels[name][8], default[name][8], rtol=0, atol=1e-5 * span)
    outputs = built.run(small_feeds[0])
    reference = compile_graph(small_graph).run(small_feeds[0])
    np.testing.assert_allclose(outputs[0], reference[0], rtol=1e-5, atol=1e-5 * np.abs(reference[0]).max())


def test_a_scatter_elements_beside_prepacked_weights_builds_and_runs_like_tvms_default_build():
    """A legalized ``scatter_elements`` (one opaque block under its root) in the same module as a
    kernel whose weight layout is rewritten: weight prepacking sets it aside instead of failing
    (onnx-asr's ``kaldi_conv`` failed there: ``There should be a compute block ...``)."""
    import tvm
    from tvm import relax

    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.runtime.executor import host_target, host_tensor

    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 256), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            index = relax.const(np.array([[0, 5, 7]], "int64"))
            update = relax.const(np.array([[1.0, -2.0, 3.0]], "float32"))
            y = bb.emit(relax.op.scatter_elements(x, index, update, axis=1))
            w = relax.const(rng.normal(size=(256, 64)).astype("float32"))
            out = bb.emit_output(relax.op.nn.relu(relax.op.matmul(y, w)))
        bb.emit_func_output(out)
    mod = bb.get()
    executable, info = build_module(mod, host_target())
    assert any(name.endswith("_prepacked") for name in info["kernels"]), info["kernels"]  # a weight was prepacked
    feed = rng.normal(size=(1, 256)).astype("float32")
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](host_tensor(feed)).numpy()
    ref = relax.VirtualMachine(tvm.compile(mod, target=host_target()), tvm.cpu())["main"](host_tensor(feed)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_a_parameter_build_runs_weight_parameters_on_the_conv_kernel_and_swaps_them():
    """:func:`runs.parameter_build`: a model whose weights stay parameters (the sensitivity probe
    swaps them for fake-quantized copies) runs on the CPU conv kernel all the same: the weights'
    layout changes (a conv1d's kernel along a row, channels-last, the kernel's prepacking) are
    lifted into ``main_transform_params``, run once per weight set; the values are the
    definition's for each set (TVM's generic reduction ran this conv1d before: 1.0 s against the
    default build's 0.22 s a sample on atspm-detector's pair network, 8 ms now)."""
    import torch
    import tvm
    from tvm import relax
    from tvm.script import relax as R

    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 8, 40)).astype(np.float32)

    @tvm.script.ir_module
    class Conv1d:
        @R.function
        def main(x: R.Tensor((1, 8, 40), "float32"), w: R.Tensor((16, 8, 3), "float32"),
                 b: R.Tensor((1, 16, 1), "float32")) -> R.Tensor((1, 16, 40), "float32"):
            R.func_attr({"num_input": 1})
            with R.dataflow():
                y = R.nn.relu(R.add(R.nn.conv1d(x, w, padding=[1, 1]), b))
                R.output(y)
            return y

    built = runs.parameter_build(Conv1d)
    assert built.lifted and "Conv2dChannelsLast" in built.rules, built.rules
    for _ in range(2):  # two weight sets through one build
        w = rng.normal(size=(16, 8, 3)).astype(np.float32)
        b = rng.normal(size=(1, 16, 1)).astype(np.float32)
        prepared = built.prepare([tvm.runtime.tensor(w), tvm.runtime.tensor(b)])
        got = built.run([tvm.runtime.tensor(x)], prepared)[0]
        want = torch.relu(torch.nn.functional.conv1d(torch.tensor(x), torch.tensor(w), padding=1) + torch.tensor(b))
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    default = runs.parameter_build(Conv1d, kernels=False)
    assert not default.lifted
    np.testing.assert_allclose(default.run([tvm.runtime.tensor(x)], [tvm.runtime.tensor(w), tvm.runtime.tensor(b)])[0],
                               got, rtol=1e-5, atol=1e-5)
