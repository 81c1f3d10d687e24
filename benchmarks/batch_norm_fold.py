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

import statistics
import sys
from itertools import groupby
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from benchkit.two_builds import parse_args, write_report, zoo_points

    args = parse_args(__doc__, "0,50", "out/bench/bn_fold")
    import tvm
    from tvm import relax

    from benchkit.machine import flags_text, machine_info
    from benchkit.timing import interleaved_min
    from relay_passes.fold_batch_norm import FoldBatchNorm
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.pipeline import compile_pipeline
    from tvm_mpq.runtime.executor import flatten_outputs, host_target

    target = host_target()
    info = machine_info(args.threads, target)

    def with_fold(graph, config, fold: FoldBatchNorm) -> tvm.transform.Sequential:
        pipeline = compile_pipeline(graph, config, target)
        passes = [fold if p.info.name == "FoldBatchNorm" else p for p in pipeline.passes]
        return tvm.transform.Sequential(passes, opt_level=pipeline.info.opt_level, name=pipeline.info.name)

    rows = []
    for name, points in groupby(zoo_points(args.models, args.rates), key=lambda p: p.model):
        runners, outputs = {}, {}
        for point in points:
            for how, fold in (("folded", FoldBatchNorm()), ("kept", FoldBatchNorm(quantized_only=True))):
                pipeline = with_fold(point.graph, point.config, fold)
                executable = compile_model(point.graph, point.config, target, pipeline=pipeline).executable
                vm = relax.VirtualMachine(executable, tvm.cpu())
                runners[(point.rate, how)] = (lambda vm=vm, inputs=point.inputs: vm["main"](*inputs))
                outputs[(point.rate, how)] = flatten_outputs(vm["main"](*point.inputs))[0]
            print(f"{name} rate {point.rate:g}: {len(point.config.fp32_layers())} fp32 layers, both builds compiled",
                  flush=True)
        times = interleaved_min({f"{r:g} {h}": run for (r, h), run in runners.items()}, args.rounds, args.runs)
        for rate in sorted({r for r, _ in runners}):
            folded, kept_ms = times[f"{rate:g} folded"], times[f"{rate:g} kept"]
            ref = outputs[(rate, "kept")]
            rows.append({"model": name, "rate": rate, "folded_ms": round(statistics.median(folded), 3),
                         "kept_ms": round(statistics.median(kept_ms), 3),
                         "folded_over_kept": round(statistics.median(f / k for f, k in zip(folded, kept_ms)), 3),
                         "max_rel_diff": float(np.abs(outputs[(rate, "folded")] - ref).max() / np.abs(ref).max())})
            r = rows[-1]
            print(f"{name} rate {rate:g}: folded {r['folded_ms']:.2f} ms, kept {r['kept_ms']:.2f} ms, "
                  f"ratio {r['folded_over_kept']:.3f}, max rel diff {r['max_rel_diff']:.1e}", flush=True)
    lines = ["# fp32 batch norms folded vs kept", "", f"{flags_text(info)}; {args.threads} threads; "
             f"{args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| model | rate | folded ms | kept ms | folded / kept | max rel. output diff |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rate']:g} | {r['folded_ms']:.2f} | {r['kept_ms']:.2f} | {r['folded_over_kept']:.3f} | "
              f"{r['max_rel_diff']:.1e} |" for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
