"""fp32 vs fully int8, timed interleaved: a steadier ratio on a noisy machine (a benchmark, not a test).

``benchmarks/kernels.py`` times each build once, one after the other; on a shared VM the machine's
speed drifts between those runs. This script builds, per model, the fp32 config and the fully int8
config; it then times them in
alternation for ``--rounds`` rounds and reports each build's minimum::

    python benchmarks/int8_vs_fp32_interleaved.py --models resnet18,efficientnet-lite0 --threads 1

and, with ``--ops``, the same for single int8 ops of those models' shapes. Prints a table and
writes ``out/bench/int8_vs_fp32/report.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path



def build_variants(make_fp32, make_int8) -> dict:
    """{name: executable} for fp32 and int8."""
    return {"fp32": make_fp32(), "int8": make_int8()}


def interleaved_min(builds: dict, inputs: dict, rounds: int, timing) -> dict:
    """Minimum latency (ms) of each build over ``rounds`` rounds, builds alternating."""
    from benchkit.timing import time_tvm

    best = {name: float("inf") for name in builds}
    for _ in range(rounds):
        for name, executable in builds.items():
            best[name] = min(best[name], time_tvm(executable, inputs[name], timing)["min_ms"])
    return {name: round(ms, 3) for name, ms in best.items()}


def model_row(name: str, args, timing) -> dict:
    from benchkit.models import load_model

    from tvm_mpq import zoo
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.runtime.executor import host_target

    graph, _ = load_model(name)
    feeds = zoo.get(name).calibration(args.calib_size)
    inputs = [feeds[0][s.name] for s in graph.inputs]
    configs = {rate: config_for_rate(graph, feeds, rate, "inorder")[0] for rate in (0, 100)}
    target = host_target()
    builds = build_variants(lambda: compile_model(graph, configs[0], target).executable,
                            lambda: compile_model(graph, configs[100], target).executable)
    return {"what": name, **interleaved_min(builds, {n: inputs for n in builds}, args.rounds, timing)}


def op_rows(args, timing) -> list[dict]:
    from benchkit.ops import OpSpec, make_case, tvm_fp32_module, tvm_int8_module

    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.runtime.executor import host_target

    specs = [OpSpec("conv2d", (1, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1)),
             OpSpec("conv2d", (1, 3, 225, 225), (32, 3, 3, 3), (2, 2)),
             OpSpec("conv2d", (1, 112, 14, 14), (672, 112, 1, 1)),
             OpSpec("conv2d", (1, 64, 56, 56), (128, 64, 1, 1), (2, 2)),
             OpSpec("conv2d", (1, 672, 18, 18), (672, 1, 5, 5), (1, 1), (2, 2, 2, 2), 672),
             OpSpec("dense", (1, 1280), (1280, 1000))]
    target = host_target()
    rows = []
    for spec in specs:
        case = make_case(spec)
        builds = build_variants(lambda: build_module(tvm_fp32_module(case), target)[0],
                                lambda: build_module(tvm_int8_module(case), target)[0])
        inputs = {n: [case.x_f32 if n == "fp32" else case.x_u8] for n in builds}
        rows.append({"what": spec.label, **interleaved_min(builds, inputs, args.rounds, timing)})
        print(_line(rows[-1]), flush=True)
    return rows


def _line(row: dict) -> str:
    cells = "  ".join(f"{k} {v:8.3f} ms" for k, v in row.items() if k != "what")
    return f"{row['what']:30s} {cells}  fp32/int8 {row['fp32'] / row['int8']:.2f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,efficientnet-lite0")
    p.add_argument("--ops", action="store_true", help="also single ops of those models' shapes")
    p.add_argument("--threads", type=int, default=1, help="TVM threads (default 1: steadier)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calib-size", type=int, default=8)
    p.add_argument("-o", "--out", type=Path, default=Path("out/bench/int8_vs_fp32"))
    args = p.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    from benchkit.timing import Timing

    timing = Timing(repeat=3, min_repeat_ms=50, max_seconds=30)
    rows = op_rows(args, timing) if args.ops else []
    for name in [m for m in args.models.split(",") if m]:
        rows.append(model_row(name, args, timing))
        print(_line(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps({"threads": args.threads, "rounds": args.rounds,
                                                      "rows": rows}, indent=1))
    print(f"written: {args.out / 'report.json'}")


if __name__ == "__main__":
    main()
