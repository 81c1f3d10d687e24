"""A float32 softmax along rows: tvm-mpq's build (``relay_passes.lane_softmax`` +
``RowChainCpu``), TVM's own softmax (dlight's CPU ``Reduction`` rule) and onnxruntime's
``Softmax``, in one process, interleaved.

    python benchmarks/row_softmax.py [--shapes 1x40x18710,1x40x18720,1x4x64x64] [--threads 2]
        [--rounds 7] [--runs 20] [-o out/bench/row_softmax]

Per shape: the same Relax softmax compiled for this host with ``LaneSoftmax`` (every build
since that pass exists: "lanes") and without it ("tvm": the module TVM's softmax op lowers to,
scheduled by the rules that took it before), and an onnxruntime session of one ``Softmax``
node. Each runner's minimum of ``--runs`` runs per round, the median over rounds; the outputs
are checked against numpy (float64). Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def build(shape: tuple[int, ...], lanes: bool, target):
    """The softmax executable for ``target``, with or without ``LaneSoftmax``."""
    from tvm import relax

    from benchkit.graph_build import build_without

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.softmax(x, axis=-1))
        bb.emit_func_output(y)
    return build_without(bb.get(), target, None if lanes else "LaneSoftmax")


def ort_softmax(shape: tuple[int, ...], threads: int):
    from onnx import TensorProto, helper

    from benchkit.timing import ort_session

    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "softmax",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    return ort_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="1x40x18710,1x40x18720,1x4x64x64")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/row_softmax"))
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    import tvm
    from tvm import relax

    from benchkit.machine import flags_text, machine_info
    from benchkit.timing import interleaved_min
    from benchkit.two_builds import write_report
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    meta = machine_info(args.threads, target)
    rows = []
    for text in args.shapes.split(","):
        shape = tuple(int(d) for d in text.split("x"))
        data = np.random.default_rng(0).normal(size=shape).astype(np.float32) * 3
        want = np.exp(data.astype(np.float64) - data.max(-1, keepdims=True))
        want /= want.sum(-1, keepdims=True)
        runners, rules, errors = {}, {}, {}
        for name, lanes in (("lanes", True), ("tvm", False)):
            executable, rules[name] = build(shape, lanes, target)
            fn = relax.VirtualMachine(executable, tvm.cpu())["main"]
            arg = tvm.runtime.tensor(data)
            errors[name] = float(np.max(np.abs(fn(arg).numpy() - want) / want))
            runners[name] = lambda fn=fn, arg=arg: fn(arg)
        sess = ort_softmax(shape, args.threads)
        errors["onnxruntime"] = float(np.max(np.abs(sess.run(None, {"x": data})[0] - want) / want))
        runners["onnxruntime"] = lambda sess=sess, data=data: sess.run(None, {"x": data})
        times = interleaved_min(runners, args.rounds, args.runs)
        row = {"shape": text, "ms": {k: round(statistics.median(v), 4) for k, v in times.items()},
               "lanes_over_ort": round(statistics.median(a / b for a, b in zip(times["lanes"], times["onnxruntime"])), 3),
               "max_rel_error": errors, "rules": rules}
        rows.append(row)
        print(json.dumps(row))
    lines = [f"Row softmax, float32, last axis; {meta['cpu']} (`{meta['llvm_mcpu']}`), CPU flags `{flags_text(meta)}`, "
             f"{args.threads} thread(s), {args.rounds} interleaved rounds of {args.runs} runs (median of per-round minima).", "",
             "| shape | tvm-mpq (lanes) ms | TVM softmax ms | onnxruntime ms | lanes / onnxruntime | max rel. error lanes / TVM / ort |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        e = r["max_rel_error"]
        lines.append(f"| {r['shape']} | {r['ms']['lanes']:.4f} | {r['ms']['tvm']:.4f} | {r['ms']['onnxruntime']:.4f} | "
                     f"{r['lanes_over_ort']:.2f} | {e['lanes']:.1e} / {e['tvm']:.1e} / {e['onnxruntime']:.1e} |")
    write_report(args.out, meta, rows, lines)


if __name__ == "__main__":
    main()
