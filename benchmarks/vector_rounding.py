"""Quantize epilogues with TVM's vectorizer able to round (``tvm_mpq.kernels.vector_intrinsics``)
against without, in one process, interleaved.

    python benchmarks/vector_rounding.py [--models efficientnet-lite0,resnet18,mobilenetv2]
        [--rates 25,50,100] [--rounds 7] [--runs 10] [-o out/bench/vector_rounding]

Each model's QuantuneV2 config at each rate (default quantizers) is compiled twice for this
host: with ``tirx.nearbyint`` marked ``TVectorizable`` (what every build does since that module
exists: "vector") and with the mark removed (TVM 0.27 as shipped: "scalar"). Both builds take turns
in every round (each runner's minimum of ``--runs`` runs per round; medians over rounds, the
ratio taken within rounds). Also reports how many of each build's kernels round lane by lane
(``nearbyint`` left on scalars in the LLVM IR) and checks the two builds' outputs are identical
(only the instruction changes, not the arithmetic). Prints and saves ``report.json`` /
``report.md``.
"""

from __future__ import annotations

import statistics
import sys
from itertools import groupby
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def scalar_rounds(executable) -> int:
    """Scalar ``llvm.nearbyint`` calls in the built host code (LLVM IR)."""
    module = executable.mod if hasattr(executable, "mod") else executable
    count = 0
    for mod in [module, *getattr(module, "imports", [])]:
        try:
            count += mod.inspect_source("ll").count("float @llvm.nearbyint.f32(")
        except Exception:  # a module without LLVM source (the VM's own)
            continue
    return count


def main() -> None:
    from benchkit.two_builds import parse_args, write_report, zoo_points

    args = parse_args(__doc__, "25,50,100", "out/bench/vector_rounding")
    import tvm
    from tvm import relax

    from benchkit.machine import flags_text, machine_info
    from benchkit.timing import interleaved_min
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.kernels.vector_intrinsics import VECTORIZABLE_OPS, mark_vectorizable
    from tvm_mpq.runtime.executor import flatten_outputs, host_target

    target = host_target()
    info = machine_info(args.threads, target)

    def build(graph, config, vector: bool):
        for name in VECTORIZABLE_OPS:
            tvm.ir.Op.get(name).reset_attr("TVectorizable")
        if vector:
            mark_vectorizable()
        try:
            return compile_model(graph, config, target).executable
        finally:
            mark_vectorizable()

    rows = []
    points = zoo_points(args.models, args.rates, bias_correction=True, channel_act=True)
    for name, model_points in groupby(points, key=lambda p: p.model):
        runners, outputs, scalars = {}, {}, {}
        for point in model_points:
            for how in ("vector", "scalar"):
                executable = build(point.graph, point.config, how == "vector")
                vm = relax.VirtualMachine(executable, tvm.cpu())
                runners[(point.rate, how)] = (lambda vm=vm, inputs=point.inputs: vm["main"](*inputs))
                outputs[(point.rate, how)] = flatten_outputs(vm["main"](*point.inputs))[0]
                scalars[(point.rate, how)] = scalar_rounds(executable)
            print(f"{name} rate {point.rate:g}: both builds compiled", flush=True)
        times = interleaved_min({f"{r:g} {h}": run for (r, h), run in runners.items()}, args.rounds, args.runs)
        for rate in sorted({r for r, _ in runners}):
            vector, scalar = times[f"{rate:g} vector"], times[f"{rate:g} scalar"]
            rows.append({"model": name, "rate": rate, "vector_ms": round(statistics.median(vector), 3),
                         "scalar_ms": round(statistics.median(scalar), 3),
                         "vector_over_scalar": round(statistics.median(v / s for v, s in zip(vector, scalar)), 3),
                         "scalar_rounds": {h: scalars[(rate, h)] for h in ("vector", "scalar")},
                         "identical": bool(np.array_equal(outputs[(rate, "vector")], outputs[(rate, "scalar")]))})
            r = rows[-1]
            print(f"{name} rate {rate:g}: vector {r['vector_ms']:.2f} ms, scalar {r['scalar_ms']:.2f} ms, "
                  f"ratio {r['vector_over_scalar']:.3f}, scalar nearbyint {r['scalar_rounds']}, "
                  f"identical outputs {r['identical']}", flush=True)
    lines = ["# Quantize epilogues: vectorized rounding vs TVM 0.27's", "",
             f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| model | rate | vector ms | scalar ms | vector / scalar | scalar nearbyint in LLVM IR (vector / scalar build) "
             "| identical outputs |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rate']:g} | {r['vector_ms']:.2f} | {r['scalar_ms']:.2f} | "
              f"{r['vector_over_scalar']:.3f} | {r['scalar_rounds']['vector']} / {r['scalar_rounds']['scalar']} | "
              f"{'yes' if r['identical'] else 'NO'} |" for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
