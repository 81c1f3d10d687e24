"""The analysis's own runs on TVM's default build against the compile's CPU kernels, per model.

    python benchmarks/analysis_builds.py [--models efficientnet-lite0,resnet18] [--rate 50]
        [--threads 2] [-o out/bench/analysis_builds]

For each zoo model, QuantuneV2's whole analysis at ``--rate`` with the CLI's quantizer defaults
(bias correction, per-channel depthwise inputs; 16 calibration samples) is timed twice, each
time with an empty calibration cache: with every analysis run built by TVM's default pipeline
and with every one built by :func:`tvm_mpq.target_build.kernel_build`
(``KERNEL_BUILD_MACS`` moved below / above the model's MACs). Prints and saves
``report.json`` / ``report.md`` with both times, the model's MACs, which build
``compile_for_runs`` picks for it, and whether both analyses chose the same fp32 layers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="efficientnet-lite0,resnet18")
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/analysis_builds"))
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    from benchkit.machine import flags_text, machine_info
    from benchkit.two_builds import write_report
    from tvm_mpq import zoo
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.calibration import CalibrationCache
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.ptq import channel_ranges
    from tvm_mpq.runtime.executor import host_target
    from tvm_mpq.target_build import runs

    info = machine_info(args.threads, host_target())
    picked_at = runs.KERNEL_BUILD_MACS
    rows = []
    for name in args.models.split(","):
        entry = zoo.get(name)
        graph, calib = entry.build_graph(), entry.calibration(16)
        macs = build_layer_table(graph).total_macs()
        seconds, fp32 = {}, {}
        for how, threshold in (("default", macs + 1), ("kernels", 0)):
            runs.KERNEL_BUILD_MACS = threshold
            channel_ranges._MEMO.clear()  # (this process's per-channel measurements: each analysis measures its own)
            try:
                with tempfile.TemporaryDirectory() as cache_dir:
                    start = time.perf_counter()
                    config, _ = config_for_rate(graph, calib, args.rate, "quantunev2", cache=CalibrationCache(Path(cache_dir)),
                                                bias_correction=True, channel_act=True)
                    seconds[how] = round(time.perf_counter() - start, 1)
            finally:
                runs.KERNEL_BUILD_MACS = picked_at
            fp32[how] = sorted(config.fp32_layers())
            print(f"{name}: analysis on the {how} build {seconds[how]:.1f} s, {len(fp32[how])} layers fp32", flush=True)
        rows.append({"model": name, "g_macs": round(macs / 1e9, 2), "seconds": seconds,
                     "picked": "kernels" if macs >= picked_at else "default",
                     "same_fp32_layers": fp32["default"] == fp32["kernels"]})
    lines = ["# QuantuneV2 analysis: runs on TVM's default build vs the compile's CPU kernels", "",
             f"{flags_text(info)}; {args.threads} threads; rate {args.rate:g}%, bias correction, per-channel depthwise "
             f"inputs, 16 calibration samples, empty cache", "",
             "| model | G MACs | default build s | kernel build s | compile_for_runs picks | same fp32 layers |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['g_macs']:.2f} | {r['seconds']['default']:.1f} | {r['seconds']['kernels']:.1f} | "
              f"{r['picked']} | {'yes' if r['same_fp32_layers'] else 'NO'} |" for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
