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

import sys
from pathlib import Path

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
    from benchkit.two_builds import parse_args, time_two_builds, write_report, zoo_points

    args = parse_args(__doc__, "25,50,100", "out/bench/vector_rounding")
    import tvm

    from benchkit.machine import flags_text, machine_info
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.kernels.vector_intrinsics import VECTORIZABLE_OPS, mark_vectorizable
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    info = machine_info(args.threads, target)

    def compile_point(point, how: str):
        for name in VECTORIZABLE_OPS:
            tvm.ir.Op.get(name).reset_attr("TVectorizable")
        if how == "vector":
            mark_vectorizable()
        try:
            return compile_model(point.graph, point.config, target)
        finally:
            mark_vectorizable()

    rows = []
    points = zoo_points(args.models, args.rates, bias_correction=True, channel_act=True)
    for timed in time_two_builds(points, ("vector", "scalar"), compile_point, args.rounds, args.runs):
        rows.append({"model": timed["model"], "rate": timed["rate"], "vector_ms": timed["ms"]["vector"],
                     "scalar_ms": timed["ms"]["scalar"], "vector_over_scalar": timed["ratio"],
                     "scalar_rounds": {how: scalar_rounds(timed["compiled"][how].executable) for how in ("vector", "scalar")},
                     "identical": timed["max_rel_diff"] == 0.0})
        r = rows[-1]
        print(f"{r['model']} rate {r['rate']:g}: vector {r['vector_ms']:.2f} ms, scalar {r['scalar_ms']:.2f} ms, "
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
