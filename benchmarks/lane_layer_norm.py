"""Layer norms over the last axis as lane sums (``relay_passes.lane_variance.LaneVariance``)
against TVM's own layer norm, in one process, interleaved.

    python benchmarks/lane_layer_norm.py [--models minilm,sudachi-tagger,khmersm] [--rates 0,100]
        [--rounds 7] [--runs 10] [-o out/bench/lane_layer_norm]
    python benchmarks/lane_layer_norm.py --ops [--rounds 7] [--runs 50]

Each config is compiled twice for this host: "lanes" (the pipeline: each row's sum and sum of
squared deviations over 16 lane partials, ``1 / sqrt`` once per row) and "tvm" (LaneVariance
leaving ``nn.layer_norm`` to TVM's legalization, which its CPU reduction rule scheduled with the
rows on vector lanes). Both builds take turns in every round (each runner's minimum of
``--runs`` runs per round; medians over rounds, the ratio taken within rounds), with the largest
output difference between them. ``--ops``: one layer norm (seeded gamma and beta, eps 1e-12) of
several row counts and widths, both builds and onnxruntime's ``LayerNormalization`` (opset 17, its
session call included) interleaved, in microseconds. Prints and saves ``report.json`` /
``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

HOWS = ("lanes", "tvm")


OP_SHAPES = ((32, 384), (128, 384), (256, 156), (1024, 768))
"""Rows x width of the ``--ops`` layer norms (minilm's, a wider batch, sudachi-tagger's, BERT-base's)."""


def _layer_norm(rows: int, width: int, gamma, beta, threads: int):
    """The Relax module and the onnxruntime session of one last-axis layer norm of ``[1, rows, width]``."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, rows, width), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.layer_norm(x, relax.const(gamma), relax.const(beta), axes=[-1], epsilon=1e-12))
        bb.emit_func_output(y)
    node = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-12)
    graph = helper.make_graph([node], "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, rows, width])],
                              [numpy_helper.from_array(gamma, "g"), numpy_helper.from_array(beta, "b")])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                   options, providers=["CPUExecutionProvider"])
    return bb.get(), session


def time_ops(args, info: dict, target, build_as) -> None:
    """``build_as(how)``: a context inside which the pipeline builds as ``how``."""
    import numpy as np

    from benchkit.machine import flags_text
    from benchkit.two_builds import time_op_builds, write_report
    from tvm_mpq.compiler.build import build_module

    rng = np.random.default_rng(0)
    rows = []
    for n_rows, width in OP_SHAPES:
        gamma, beta = (rng.normal(size=width).astype(np.float32) for _ in range(2))
        mod, session = _layer_norm(n_rows, width, gamma, beta, args.threads)
        data = rng.normal(size=(1, n_rows, width)).astype(np.float32)
        rows.append({"rows": n_rows, "width": width, **time_op_builds(
            HOWS, build_as, lambda mod=mod: build_module(mod, target)[0], data,
            lambda x, session=session: session.run(None, {"x": x})[0], args.rounds, args.runs)})
        print(rows[-1], flush=True)
    lines = ["# One layer norm: lane sums vs TVM's vs onnxruntime (microseconds)", "",
             f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| rows x width | lane sums | TVM's layer norm | onnxruntime |", "|---|---|---|---|"]
    lines += [f"| {r['rows']} x {r['width']} | {r['lanes_us']} | {r['tvm_us']} | {r['ort_us']} |" for r in rows]
    write_report(args.out, info, rows, lines)


def main() -> None:
    import contextlib

    from benchkit.machine import machine_info
    from benchkit.two_builds import compare_two_builds, constants_set, parse_args, with_constant

    args = parse_args(__doc__, "0,100", "out/bench/lane_layer_norm", models="minilm,sudachi-tagger,khmersm",
                      ops="one layer norm, both builds and onnxruntime")
    from relay_passes import lane_variance
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    info = machine_info(args.threads, target)
    left_to_tvm = lambda _builder, _call: None  # noqa: E731 - LaneVariance's layer-norm rewrite declining
    if args.ops:
        if args.out == Path("out/bench/lane_layer_norm"):
            args.out = Path("out/bench/lane_layer_norm_ops")
        time_ops(args, info, target, lambda how: constants_set(lane_variance, _lane_layer_norm=left_to_tvm)
                 if how == "tvm" else contextlib.nullcontext())
        return
    compare_two_builds(args, info, HOWS, with_constant(lane_variance, "_lane_layer_norm", left_to_tvm, "tvm", target),
                       "Layer norms as lane sums (LaneVariance) vs TVM's layer norm")


if __name__ == "__main__":
    main()
