"""The MetaSchedule tuning database round trip: tune once, reuse for every config (not a test:
it takes ~5 minutes on 2 cores, because TVM 0.27 imports ``tvm.s_tir.tensor_intrin`` (~70 s)
in the tuner and in every builder worker).

    python benchmarks/tuning_reuse.py [--model mtcnn-rnet] [--trials 1]

Fills an empty per-target database (in a temporary folder) with a real MetaSchedule run on the
fully int8 config, then checks and prints that (1) building the same config again reuses every
record and tunes nothing, with the same outputs, and (2) a mixed config (rate 50) reuses the
kernels it shares. Exits 1 if a check fails. Writes out/bench/tuning_reuse.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mtcnn-rnet")
    parser.add_argument("--trials", type=int, default=1, help="MetaSchedule trials per kernel")
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/tuning_reuse.json"))
    args = parser.parse_args()

    from tvm_mpq.api import config_for_rate
    from tvm_mpq.calibration import load_calibration
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.build import TuningOptions
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.zoo import load_model

    graph = load_model(args.model, {})
    feeds = load_calibration(graph, None, 8, 0.0, 1.0)
    configs = {}
    for rate in (100, 50):
        configs[rate], _ = config_for_rate(graph, feeds, rate, "inorder")
        keep_unsupported_fp32(configs[rate], build_layer_table(graph))
    root = Path(tempfile.mkdtemp(prefix="tvm-mpq-tuning-"))
    options = TuningOptions(trials=args.trials, root=root, strategy="replay-trace", cost_model="random")
    results: dict = {"model": args.model, "trials": args.trials, "database": str(root)}
    failures: list[str] = []

    start = time.perf_counter()
    first = compile_model(graph, configs[100], tuning=options)
    results["fill"] = {**first.stats["build"], "seconds": round(time.perf_counter() - start, 1)}
    print(f"fill (rate 100): {results['fill']}")
    start = time.perf_counter()
    again = compile_model(graph, configs[100], tuning=options)
    results["same_config"] = {**again.stats["build"], "seconds": round(time.perf_counter() - start, 1)}
    print(f"same config again: {results['same_config']}")
    info = again.stats["build"]["tuning"]
    if info["tuned"] != 0 or info["reused"] != info["tasks"]:
        failures.append(f"rebuilding the same config tuned {info['tuned']} of {info['tasks']} kernels")
    if again.stats["build"]["scheduled_by"]["database"] != info["tasks"]:
        failures.append("the database records were not applied to every tuned kernel")
    for feed in feeds[:2]:
        a, b = first.run(feed)[0], again.run(feed)[0]
        if not np.array_equal(a, b):
            failures.append(f"outputs differ between the two builds (max {np.abs(a - b).max():.3g})")
    mixed = compile_model(graph, configs[50], tuning=options)
    results["rate_50"] = mixed.stats["build"]
    print(f"rate 50: {results['rate_50']}")
    info = mixed.stats["build"]["tuning"]
    if info["tasks"] and info["reused"] < 1:
        failures.append("the mixed config reused none of the tuned kernels")

    results["failures"] = failures
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str))
    print("\n".join(["FAILED: " + f for f in failures] or ["all reuse checks passed"]), f"\nwritten: {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
