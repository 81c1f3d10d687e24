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

import argparse
import json
import os
import statistics
import sys
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="efficientnet-lite0,resnet18,mobilenetv2")
    parser.add_argument("--rates", default="25,50,100")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/vector_rounding"))
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's thread pool starts
    import tvm
    from tvm import relax

    from benchkit.machine import flags_text, machine_info
    from benchkit.timing import interleaved_min
    from tvm_mpq import zoo
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.calibration import CalibrationCache
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.kernels.vector_intrinsics import VECTORIZABLE_OPS, mark_vectorizable
    from tvm_mpq.runtime.executor import flatten_outputs, host_target, host_tensor

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
    for name in args.models.split(","):
        entry = zoo.get(name)
        graph = entry.build_graph()
        table = build_layer_table(graph)
        feeds = entry.calibration(16)
        inputs = [host_tensor(np.ascontiguousarray(feeds[0][s.name])) for s in graph.inputs]
        runners, outputs, scalars, report = {}, {}, {}, None
        for rate in (float(r) for r in args.rates.split(",")):
            config, report = config_for_rate(graph, feeds, rate, "quantunev2", cache=CalibrationCache(), report=report,
                                             bias_correction=True, channel_act=True)
            keep_unsupported_fp32(config, table)
            for how in ("vector", "scalar"):
                executable = build(graph, config, how == "vector")
                vm = relax.VirtualMachine(executable, tvm.cpu())
                runners[(rate, how)] = (lambda vm=vm: vm["main"](*inputs))
                outputs[(rate, how)] = flatten_outputs(vm["main"](*inputs))[0]
                scalars[(rate, how)] = scalar_rounds(executable)
            print(f"{name} rate {rate:g}: both builds compiled", flush=True)
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
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
