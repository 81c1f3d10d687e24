"""A channels-last concat (NHWC, along the channels) two ways and onnxruntime's ``Concat``, in
one process, interleaved.

    python benchmarks/channel_concat.py [--cases 160:16+16,80:8+8,80:4+4,80:8+8+8+8,40:16+16+16,80:12+20,80:1+1+1+1]
        [--dtypes uint8,float32] [--threads 2] [--rounds 7] [--runs 50] [-o out/bench/channel_concat]

A case ``S:C1+C2+...`` concatenates ``1 x S x S x Ck`` maps. "per source": the build as it is
(``InjectiveCpu``: the channel loop partitioned where the source changes, each piece a vector
loop of its own, :func:`tvm_mpq.kernels.cpu_generic.source_cuts`); "selects": the same rule with
no source cuts found, so each element picks its source by a select (the short-axis path puts
whole runs of pixels in one vector where the channels are fewer than the lanes: 64 uint8 lanes
on AVX-512). Every build's output is checked against numpy. Medians over rounds of each
runner's best of ``--runs``, in microseconds. Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def concat_module(size: int, channels: tuple[int, ...], dtype: str):
    from tvm import relax

    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType((1, size, size, c), dtype)) for i, c in enumerate(channels)]
    with bb.function("main", params):
        with bb.dataflow():
            y = bb.emit_output(relax.op.concat(params, axis=3))
        bb.emit_func_output(y)
    return bb.get()


def ort_concat(size: int, channels: tuple[int, ...], dtype: str, threads: int):
    from onnx import TensorProto, helper

    from benchkit.timing import ort_session

    elem = TensorProto.UINT8 if dtype == "uint8" else TensorProto.FLOAT
    names = [f"x{i}" for i in range(len(channels))]
    graph = helper.make_graph([helper.make_node("Concat", names, ["y"], axis=3)], "concat",
                              [helper.make_tensor_value_info(n, elem, (1, size, size, c)) for n, c in zip(names, channels)],
                              [helper.make_tensor_value_info("y", elem, (1, size, size, sum(channels)))])
    return ort_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), threads)


@contextlib.contextmanager
def without_source_cuts():
    """Inside it, :func:`~tvm_mpq.kernels.cpu_generic.source_cuts` finds none (the "selects" build)."""
    from tvm_mpq.kernels import cpu_generic

    kept = cpu_generic.source_cuts
    cpu_generic.source_cuts = lambda sch, block: []
    try:
        yield
    finally:
        cpu_generic.source_cuts = kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="160:16+16,80:8+8,80:4+4,80:8+8+8+8,40:16+16+16,80:12+20,80:1+1+1+1")
    parser.add_argument("--dtypes", default="uint8,float32")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/channel_concat"))
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    import tvm
    from tvm import relax

    from benchkit.machine import flags_text, machine_info
    from benchkit.timing import interleaved_min
    from benchkit.two_builds import write_report
    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    info = machine_info(args.threads, target)
    rng = np.random.default_rng(0)
    rows = []
    lines = [f"Channel concat, CPU flags {flags_text(info)}, {args.threads} thread(s), median of "
             f"{args.rounds} rounds of best-of-{args.runs} (us)", "",
             "| maps | dtype | per source | selects | onnxruntime | per source / onnxruntime |", "|---|---|---|---|---|---|"]
    for case in args.cases.split(","):
        size_text, parts = case.split(":")
        size, channels = int(size_text), tuple(int(c) for c in parts.split("+"))
        for dtype in args.dtypes.split(","):
            xs = [rng.integers(0, 200, size=(1, size, size, c)).astype(dtype) for c in channels]
            want = np.concatenate(xs, axis=3)
            tensors = [tvm.runtime.tensor(x) for x in xs]
            runners = {}
            for how, context in (("per source", contextlib.nullcontext()), ("selects", without_source_cuts())):
                with context:
                    executable, _ = build_module(concat_module(size, channels, dtype), target)
                run = relax.VirtualMachine(executable, tvm.cpu())["main"]
                np.testing.assert_array_equal(run(*tensors).numpy(), want)
                runners[how] = (lambda run=run: run(*tensors))
            session = ort_concat(size, channels, dtype, args.threads)
            feed = {f"x{i}": x for i, x in enumerate(xs)}
            runners["onnxruntime"] = lambda session=session, feed=feed: session.run(None, feed)
            times = interleaved_min(runners, args.rounds, args.runs)
            us = {how: round(statistics.median(t) * 1e3, 1) for how, t in times.items()}
            row = {"size": size, "channels": list(channels), "dtype": dtype, **{f"{k}_us": v for k, v in us.items()}}
            rows.append(row)
            lines.append(f"| {size}x{size}x({'+'.join(map(str, channels))}) | {dtype} | {us['per source']} | "
                         f"{us['selects']} | {us['onnxruntime']} | {us['per source'] / us['onnxruntime']:.2f} |")
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
