"""fp32 layers with their batch norm kept as arithmetic in the conv's epilogue (the compile
pipeline) against folded into the conv's weight and bias (as onnxruntime builds fp32), in one
process, interleaved.

    python benchmarks/batch_norm_fold.py [--models efficientnet-lite0,resnet18,mobilenetv2]
        [--rates 0,50] [--rounds 7] [--runs 10] [-o out/bench/bn_fold]

Each model's QuantuneV2 config at each rate is compiled twice for this host: with
``FoldBatchNorm()`` (every conv's folded: "folded", the compile pipeline since 2026-12-02 17:30
UTC) and with ``FoldBatchNorm(quantized_only=True)`` in its place (only the int8 layers' folded,
the fp32 layers' batch norms kept as arithmetic in their convs' epilogues: "kept", the pipeline
before). Both builds take turns in every round (each
runner's minimum of ``--runs`` runs per round; medians over rounds, the ratio taken within
rounds). Prints and saves ``report.json`` / ``report.md``, with the largest output difference
between the two builds (float rounding only: the fold is exact in real arithmetic).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from benchkit.two_builds import parse_args, time_two_builds, write_report, zoo_points

    args = parse_args(__doc__, "0,50", "out/bench/bn_fold")
    import tvm

    from benchkit.machine import flags_text, machine_info
    from relay_passes.fold_batch_norm import FoldBatchNorm
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.pipeline import compile_pipeline
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    info = machine_info(args.threads, target)
    folds = {"folded": FoldBatchNorm(), "kept": FoldBatchNorm(quantized_only=True)}

    def compile_point(point, how: str):
        pipeline = compile_pipeline(point.graph, point.config, target)
        passes = [folds[how] if p.info.name == "FoldBatchNorm" else p for p in pipeline.passes]
        pipeline = tvm.transform.Sequential(passes, opt_level=pipeline.info.opt_level, name=pipeline.info.name)
        return compile_model(point.graph, point.config, target, pipeline=pipeline)

    rows = []
    for timed in time_two_builds(zoo_points(args.models, args.rates), ("folded", "kept"), compile_point,
                                 args.rounds, args.runs):
        rows.append({"model": timed["model"], "rate": timed["rate"], "folded_ms": timed["ms"]["folded"],
                     "kept_ms": timed["ms"]["kept"], "folded_over_kept": timed["ratio"],
                     "max_rel_diff": timed["max_rel_diff"]})
        r = rows[-1]
        print(f"{r['model']} rate {r['rate']:g}: folded {r['folded_ms']:.2f} ms, kept {r['kept_ms']:.2f} ms, "
              f"ratio {r['folded_over_kept']:.3f}, max rel diff {r['max_rel_diff']:.1e}", flush=True)
    lines = ["# fp32 batch norms folded vs kept", "", f"{flags_text(info)}; {args.threads} threads; "
             f"{args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| model | rate | folded ms | kept ms | folded / kept | max rel. output diff |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rate']:g} | {r['folded_ms']:.2f} | {r['kept_ms']:.2f} | {r['folded_over_kept']:.3f} | "
              f"{r['max_rel_diff']:.1e} |" for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
