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

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="efficientnet-lite0,resnet18,mobilenetv2")
    parser.add_argument("--rates", default="0,50")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/bn_fold"))
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's thread pool starts
    import tvm
    from tvm import relax

    from benchkit.machine import flags_text, machine_info
    from benchkit.timing import interleaved_min
    from relay_passes.fold_batch_norm import FoldBatchNorm
    from tvm_mpq import zoo
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.calibration import CalibrationCache
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.pipeline import compile_pipeline
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.runtime.executor import flatten_outputs, host_target, host_tensor

    target = host_target()
    info = machine_info(args.threads, target)

    def with_fold(graph, config, fold: FoldBatchNorm) -> tvm.transform.Sequential:
        pipeline = compile_pipeline(graph, config, target)
        passes = [fold if p.info.name == "FoldBatchNorm" else p for p in pipeline.passes]
        return tvm.transform.Sequential(passes, opt_level=pipeline.info.opt_level, name=pipeline.info.name)

    rows = []
    for name in args.models.split(","):
        entry = zoo.get(name)
        graph = entry.build_graph()
        table = build_layer_table(graph)
        feeds = entry.calibration(16)
        inputs = [host_tensor(np.ascontiguousarray(feeds[0][s.name])) for s in graph.inputs]
        runners, outputs, report = {}, {}, None
        for rate in (float(r) for r in args.rates.split(",")):
            config, report = config_for_rate(graph, feeds, rate, "quantunev2", cache=CalibrationCache(), report=report)
            keep_unsupported_fp32(config, table)
            for how, fold in (("folded", FoldBatchNorm()), ("kept", FoldBatchNorm(quantized_only=True))):
                pipeline = with_fold(graph, config, fold)
                vm = relax.VirtualMachine(compile_model(graph, config, target, pipeline=pipeline).executable, tvm.cpu())
                runners[(rate, how)] = (lambda vm=vm: vm["main"](*inputs))
                outputs[(rate, how)] = flatten_outputs(vm["main"](*inputs))[0]
            print(f"{name} rate {rate:g}: {len(config.fp32_layers())} fp32 layers, both builds compiled", flush=True)
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
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
