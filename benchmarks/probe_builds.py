"""The sensitivity probe on TVM's default loops against the compile's CPU kernels, per method.

    python benchmarks/probe_builds.py [--models efficientnet-lite0,ppocr-cls,mtcnn-rnet]
        [--methods top1,quantunev2-e2e,quantunev2] [--threads 2] [-o out/bench/probe_builds]

The methods that score many precision assignments (Top-1 order, ``quantunev2-e2e``, Pandey et
al.) run them on one switchable build of the model (:class:`tvm_mpq.sensitivity.probe.PrecisionProbe`).
For each zoo model and method this times the eval's own analysis (``tvm-mpq eval``'s sample
counts, :func:`tvm_mpq.evaluation.method_runs.run_method`) twice, the probe built by TVM's default
pipeline (unscheduled loops) and on the CPU kernels (:func:`tvm_mpq.target_build.parameter_build`),
alternating which goes first per model, and reports both times and whether the two
sensitivity lists are the same (the kernels sum in another order: float rounding can
swap two layers whose scores tie). Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="efficientnet-lite0,ppocr-cls,mtcnn-rnet")
    parser.add_argument("--methods", default="top1,quantunev2-e2e,quantunev2")
    parser.add_argument("--rates", default="100,50,40,30,20")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/probe_builds"))
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    from benchkit.machine import flags_text, machine_info
    from benchkit.two_builds import write_report
    from tvm_mpq.evaluation.method_runs import Stages, run_method
    from tvm_mpq.evaluation.model_data import counts_for, load_model_data
    from tvm_mpq.runtime.executor import host_target
    from tvm_mpq.sensitivity import probe

    info = machine_info(args.threads, host_target())
    rates = [float(r) for r in args.rates.split(",")]
    rows = []
    for k, name in enumerate(args.models.split(",")):
        data = load_model_data(name, counts_for(name))
        stages = Stages.build(data)
        for method in args.methods.split(","):
            seconds, order = {}, {}
            builds = ("default", "kernels") if k % 2 == 0 else ("kernels", "default")
            for how in builds:
                probe.KERNELS = how == "kernels"
                try:
                    start = time.perf_counter()
                    run = run_method(method, data, stages, rates)
                    seconds[how] = round(time.perf_counter() - start, 1)
                finally:
                    probe.KERNELS = True
                order[how] = list(run.report.sensitivity)
                print(f"{name} {method}: probe on the {how} build {seconds[how]:.1f} s", flush=True)
            same = order["default"] == order["kernels"]
            first_diff = next((i for i, (a, b) in enumerate(zip(order["default"], order["kernels"])) if a != b), None)
            rows.append({"model": name, "method": method, "seconds": seconds, "same_order": same,
                         "first_difference": first_diff, "layers": len(order["default"])})
    lines = ["# The sensitivity probe: TVM's default loops vs the compile's CPU kernels", "",
             f"{flags_text(info)}; {args.threads} threads; the eval's sample counts; analysis wall time "
             "(calibration, the probe's build and its runs)", "",
             "| model | method | default build s | kernel build s | speed-up | same sensitivity list |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['method']} | {r['seconds']['default']:.1f} | {r['seconds']['kernels']:.1f} | "
              f"{r['seconds']['default'] / max(r['seconds']['kernels'], 0.1):.1f}x | "
              f"{'yes' if r['same_order'] else 'from position ' + str(r['first_difference'] + 1) + ' of ' + str(r['layers'])} |"
              for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
