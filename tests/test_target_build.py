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
