"""Two interleaved sweeps run back to back: does every point's ratio to fp32 repeat? (a benchmark)

Runs ``tvm-mpq sweep MODEL --target TARGET --rates RATES`` twice in a row (same options, same
calibration cache, each with its own local RPC server) and compares, point by point, the
median of the within-round ratios to fp32 (``ratio_to_fp32.median``): the two runs agree when
``|ratio_2 / ratio_1 - 1| <= --tolerance`` for every point. Other jobs share the machine, so
the 1-minute load average is sampled every 5 s during each run and reported with the CPU's
flags (``avx2``, ``avx512f``, ``avx512_vnni``, ``avx_vnni``, ``amx_int8``)::

    python benchmarks/sweep_back_to_back.py [--model resnet18] [--target x86] [--rates 0,25,50,75,100]

Writes out/bench/sweep_back_to_back/run1/, run2/ (each sweep's report.json/.md/.png) and
summary.json / summary.md; exits 1 when a point's ratios differ by more than the tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> list[str]:
    """Which of :data:`FLAGS` this machine's CPU has (``/proc/cpuinfo``)."""
    try:
        words = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return [f for f in FLAGS if f in words]


class LoadSampler:
    """The 1-minute load average, sampled every ``period`` s in a background thread."""

    def __init__(self, period: float = 5.0) -> None:
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.period):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def to_json(self) -> dict:
        """``{"min", "mean", "max", "samples"}`` of the 1-minute load average."""
        s = self.samples
        return {"min": min(s), "mean": sum(s) / len(s), "max": max(s), "samples": len(s)}


def run_once(args: argparse.Namespace, out: Path) -> tuple[dict, dict, float]:
    """One sweep: its report, the load during it and its wall time."""
    from tvm_mpq.sweep import SweepOptions, parse_rates, run_sweep

    options = SweepOptions(args.model, args.target, rates=parse_rates(args.rates), methods=[args.method],
                           rounds=args.rounds, cache_dir=args.out / "cache")
    start = time.perf_counter()
    with LoadSampler() as load:
        report = run_sweep(options, out / "report.json")
    return report, load.to_json(), time.perf_counter() - start


def compare(first: dict, second: dict, tolerance: float) -> list[dict]:
    """Per point: both runs' median ratio to fp32, their relative difference, and whether it is
    within ``tolerance``."""
    rows = []
    for a, b in zip(first["points"], second["points"]):
        r1, r2 = a["ratio_to_fp32"]["median"], b["ratio_to_fp32"]["median"]
        diff = r2 / r1 - 1.0
        rows.append({"method": a["method"], "requested_rate": a["requested_rate"],
                     "bops_reduction_rate": a["bops_reduction_rate"], "ratio_run1": r1, "ratio_run2": r2,
                     "ratio_run1_per_round": a["ratio_to_fp32"]["per_round"],
                     "ratio_run2_per_round": b["ratio_to_fp32"]["per_round"],
                     "median_ms_run1": a["latency_ms"]["median"], "median_ms_run2": b["latency_ms"]["median"],
                     "relative_difference": diff, "within_tolerance": abs(diff) <= tolerance})
    return rows


def markdown(summary: dict) -> str:
    runs = summary["runs"]
    lines = [f"# {summary['model']} on {summary['target']}: two interleaved sweeps back to back", "",
             f"- device: {summary['device']}; CPU flags: {' '.join(summary['cpu_flags']) or 'none of ' + ', '.join(FLAGS)}",
             f"- {summary['rounds']} rounds per sweep; tolerance {summary['tolerance'] * 100:g}% on the median ratio to fp32",
             *(f"- run {i + 1}: {r['seconds']:.0f} s wall, load average (1 min) {r['load']['min']:.2f}-"
               f"{r['load']['max']:.2f} (mean {r['load']['mean']:.2f}), fp32 baseline moved "
               f"{r['fp32_spread_pct']:.1f}% between rounds, latency vs rate: {r['monotonicity']}"
               for i, r in enumerate(runs)),
             "", "| method | requested % | achieved % | run 1 median ms | run 2 median ms | run 1 x fp32 | "
                 "run 2 x fp32 | difference | within |", "|---|---|---|---|---|---|---|---|---|"]
    for row in summary["points"]:
        lines.append(f"| {row['method']} | {row['requested_rate']:g} | {row['bops_reduction_rate']:.1f} | "
                     f"{row['median_ms_run1']:.2f} | {row['median_ms_run2']:.2f} | {row['ratio_run1']:.3f} | "
                     f"{row['ratio_run2']:.3f} | {row['relative_difference'] * 100:+.1f}% | "
                     f"{'yes' if row['within_tolerance'] else 'NO'} |")
    lines += ["", f"Every point within {summary['tolerance'] * 100:g}%: **{'yes' if summary['agree'] else 'no'}**"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--target", default="x86")
    parser.add_argument("--rates", default="0,25,50,75,100")
    parser.add_argument("--method", default="quantunev2")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds per sweep (default: the sweep's)")
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/sweep_back_to_back"))
    args = parser.parse_args()
    os.environ.setdefault("TVM_MPQ_NO_PROGRESS", "1")
    runs = []
    for i in (1, 2):
        report, load, seconds = run_once(args, args.out / f"run{i}")
        runs.append((report, load, seconds))
    rows = compare(runs[0][0], runs[1][0], args.tolerance)
    summary = {"model": args.model, "target": args.target, "device": runs[0][0]["device"], "cpu_flags": cpu_flags(),
               "rounds": runs[0][0]["rounds"], "tolerance": args.tolerance,
               "runs": [{"seconds": s, "load": load, "fp32_spread_pct": r["stability"]["fp32_spread_pct"],
                         "monotonicity": "; ".join(f"{m} {v['verdict']}" for m, v in r["monotonicity"].items())}
                        for r, load, s in runs],
               "points": rows, "agree": all(row["within_tolerance"] for row in rows)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    md = markdown(summary)
    (args.out / "summary.md").write_text(md)
    print(md)
    return 0 if summary["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
