"""Divisions by a constant as multiplications by its reciprocal (``relay_passes.divide_as_multiply``),
against the same kernels dividing, in one process, interleaved.

    python benchmarks/divide_as_multiply.py [--threads 2] [--rounds 9] [--runs 30]
        [-o out/bench/divide_as_multiply]

Two kernels of sudachi-tagger's ALBERT encoder, each built for this host twice from the same
Relax module: as every build is (``DivideAsMultiply`` in the target's graph passes: "multiply")
and with that pass left out ("divide"): an attention's scores (``QK^T / sqrt 26 + mask``, 6 heads
x 256 x 256 over 26 channels) and an MLP matmul with the exact GELU (``256 x 156 x 624``,
``x / sqrt 2`` inside ``erf``). Each runner's minimum of ``--runs`` runs per round, the median over
rounds; the outputs' largest difference in units of the output's scale is printed. Prints and
saves ``report.json`` / ``report.md``.
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


def attention(rng: np.random.Generator):
    from tvm import relax

    bb = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType((1, 6, 256, 26), "float32"))
    k = relax.Var("k", relax.TensorType((1, 6, 26, 256), "float32"))
    mask = relax.const(rng.normal(size=(1, 1, 1, 256)).astype("float32"))
    with bb.function("main", [q, k]):
        with bb.dataflow():
            scores = relax.op.divide(relax.op.matmul(q, k), relax.const(np.float32(np.sqrt(26.0))))
            y = bb.emit_output(relax.op.add(scores, mask))
        bb.emit_func_output(y)
    return bb.get(), [rng.normal(size=(1, 6, 256, 26)).astype("float32"), rng.normal(size=(1, 6, 26, 256)).astype("float32")]


def gelu_matmul(rng: np.random.Generator):
    from tvm import relax

    weight = relax.const((rng.normal(size=(156, 624)) / 12).astype("float32"))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 256, 156), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h = relax.op.matmul(x, weight)
            erf = relax.op.erf(relax.op.divide(h, relax.const(np.float32(np.sqrt(2.0)))))
            y = bb.emit_output(relax.op.multiply(relax.op.multiply(h, relax.op.add(erf, relax.const(np.float32(1.0)))),
                                                 relax.const(np.float32(0.5))))
        bb.emit_func_output(y)
    return bb.get(), [rng.normal(size=(1, 256, 156)).astype("float32")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/divide_as_multiply"))
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    import tvm
    from tvm import relax

    from benchkit.graph_build import build_without
    from benchkit.machine import flags_text, machine_info
    from benchkit.timing import interleaved_min
    from benchkit.two_builds import write_report
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    meta = machine_info(args.threads, target)
    rows = []
    for name, make in (("attention scores", attention), ("matmul + exact GELU", gelu_matmul)):
        mod, data = make(np.random.default_rng(0))
        runners, outputs, rules = {}, {}, {}
        for how in ("divide", "multiply"):
            executable, rules[how] = build_without(mod, target, "DivideAsMultiply" if how == "divide" else None)
            fn = relax.VirtualMachine(executable, tvm.cpu())["main"]
            tensors = [tvm.runtime.tensor(a) for a in data]
            outputs[how] = fn(*tensors).numpy()
            runners[how] = lambda fn=fn, tensors=tensors: fn(*tensors)
        times = interleaved_min(runners, args.rounds, args.runs)
        scale = float(np.abs(outputs["divide"]).max())
        row = {"kernel": name, "ms": {k: round(statistics.median(v), 4) for k, v in times.items()},
               "multiply_over_divide": round(statistics.median(m / d for m, d in zip(times["multiply"], times["divide"])), 3),
               "max_difference_of_scale": float(np.abs(outputs["multiply"] - outputs["divide"]).max() / scale),
               "rules": rules}
        rows.append(row)
        print(json.dumps(row))
    lines = [f"Division by a constant vs multiplication by its reciprocal; {meta['cpu']} (`{meta['llvm_mcpu']}`), CPU flags "
             f"`{flags_text(meta)}`, {args.threads} thread(s), {args.rounds} interleaved rounds of {args.runs} runs.", "",
             "| kernel | divide ms | multiply ms | multiply / divide | max difference / output scale |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['ms']['divide']:.4f} | {r['ms']['multiply']:.4f} | {r['multiply_over_divide']:.3f} | "
                     f"{r['max_difference_of_scale']:.1e} |")
    write_report(args.out, meta, rows, lines)


if __name__ == "__main__":
    main()
