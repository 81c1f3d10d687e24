"""Convs and matmuls split among threads by rows where their weight is small
(``tvm_mpq.kernels.cpu_mac.rows_outer``: convs up to 256 KiB, matmuls and float32 1x1 convs over
>= 128 pixels up to 1 MiB) against
every one split by output channels, in one process, interleaved (``--models minilm``: a
transformer's matmuls).

    python benchmarks/thread_split.py [--models efficientnet-lite0,resnet18,mobilenetv2]
        [--rates 0,100] [--rounds 7] [--runs 10] [-o out/bench/thread_split]

Each model's QuantuneV2 config at each rate (default quantizers) is compiled twice for this
host: as every build is ("rows": a conv with a weight of at most 256 KiB runs its parallel
tile loops over rows, then channels) and with every conv over channels, then rows (the kernels
before 2026-12-03: "channels"). Both take turns in every round (each runner's minimum of
``--runs`` runs per round; medians over rounds, the ratio taken within rounds) and their outputs
must be identical (only the order of the tiles changes). Prints and saves ``report.json`` /
``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from benchkit.two_builds import parse_args, time_two_builds, write_report, zoo_points

    args = parse_args(__doc__, "0,100", "out/bench/thread_split")
    from benchkit.machine import flags_text, machine_info
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.kernels import cpu_mac
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    info = machine_info(args.threads, target)
    by_rows = cpu_mac.rows_outer

    def compile_point(point, how: str):
        cpu_mac.rows_outer = by_rows if how == "rows" else (lambda _info: False)
        try:
            return compile_model(point.graph, point.config, target)
        finally:
            cpu_mac.rows_outer = by_rows

    rows = []
    for timed in time_two_builds(zoo_points(args.models, args.rates), ("rows", "channels"), compile_point,
                                 args.rounds, args.runs):
        rows.append({"model": timed["model"], "rate": timed["rate"], "rows_ms": timed["ms"]["rows"],
                     "channels_ms": timed["ms"]["channels"], "rows_over_channels": timed["ratio"],
                     "identical": timed["max_rel_diff"] == 0.0})
        r = rows[-1]
        print(f"{r['model']} rate {r['rate']:g}: rows {r['rows_ms']:.2f} ms, channels {r['channels_ms']:.2f} ms, "
              f"ratio {r['rows_over_channels']:.3f}, identical outputs {r['identical']}", flush=True)
    lines = ["# Convs split among threads by rows (small weights) vs by output channels", "",
             f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| model | rate | rows ms | channels ms | rows / channels | identical outputs |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rate']:g} | {r['rows_ms']:.2f} | {r['channels_ms']:.2f} | "
              f"{r['rows_over_channels']:.3f} | {'yes' if r['identical'] else 'NO'} |" for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
