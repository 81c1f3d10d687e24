"""Builds with LLVM's ``fast-dpwssd`` tuning (``vpmaddwd`` + ``vpaddd`` fused into one VNNI
``vpdpwssd``; :data:`tvm_mpq.kernels.cpu_isa.FUSED_DPWSSD`, on every VNNI target since
2026-12-07) against the same builds with it off, whole models and their depthwise kernels, both
builds in one process::

    python benchmarks/fused_dpwssd.py [--models efficientnet-lite0,mobilenetv2,ppocrv6-det-tiny]
        [--rates 100] [--rounds 7] [--runs 10] [-o out/bench/fused_dpwssd]

Zoo or corpus models, each QuantuneV2 config per rate built for this host's target as it is
("fused") and with ``-fast-dpwssd`` ("split", LLVM's choice for its Intel models), timed
interleaved (:func:`benchkit.two_builds.time_two_builds`); then each build's kernels timed one
call at a time (:func:`tvm_mpq.runtime.profiler.profile_kernels_isolated`, best of five
passes, the builds taking turns), summed for the int8 depthwise kernels
(``DepthwiseChannelsLast``) and for the rest. The integer results are the same, so the
outputs' difference is 0. On a target without VNNI both builds are the same. Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEPTHWISE_RULE = "DepthwiseChannelsLast"


def kernel_ms(builds: dict, feed: list, passes: int = 5) -> dict[str, dict[str, float]]:
    """Each build's kernels' best isolated times (ms per inference, by name) over ``passes``
    profiles, the builds taking turns."""
    import numpy as np

    from tvm_mpq.runtime.profiler import profile_kernels_isolated

    inputs = [np.asarray(t.numpy()) for t in feed]
    best: dict[str, dict[str, float]] = {how: {} for how in builds}
    for _ in range(passes):
        for how, compiled in builds.items():
            for row in profile_kernels_isolated(compiled.executable, inputs, compiled.stats["build"]["kernels"]):
                best[how][row.name] = min(best[how].get(row.name, float("inf")), row.ms)
    return best


def main() -> None:
    from benchkit.two_builds import parse_args, time_two_builds, write_report, zoo_points

    args = parse_args(__doc__, "100", "out/bench/fused_dpwssd", "efficientnet-lite0,mobilenetv2,ppocrv6-det-tiny")
    import tvm

    from benchkit.machine import flags_text, machine_info
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.kernels.cpu_isa import FUSED_DPWSSD
    from tvm_mpq.runtime.executor import host_target

    fused = host_target()
    config = dict(fused.export())
    config["mattr"] = [f for f in config.get("mattr", []) if f.lstrip("+-") != FUSED_DPWSSD] + [f"-{FUSED_DPWSSD}"]
    targets = {"fused": fused, "split": tvm.target.Target(config)}
    info = machine_info(args.threads, fused)

    def compile_point(point, how: str):
        return compile_model(point.graph, point.config, targets[how])

    rows = []
    zoo = zoo_points(args.models, args.rates, bias_correction=True, channel_act=True)
    for timed in time_two_builds(zoo, ("fused", "split"), compile_point, args.rounds, args.runs):
        row = {"model": timed["model"], "rate": timed["rate"], "fused_ms": timed["ms"]["fused"],
               "split_ms": timed["ms"]["split"], "ratio": timed["ratio"], "max_rel_diff": timed["max_rel_diff"]}
        by_build = kernel_ms(timed["compiled"], timed["inputs"])
        for how, compiled in timed["compiled"].items():
            rules, ms = compiled.stats["build"]["kernels"], by_build[how]
            row[f"{how}_depthwise_ms"] = round(sum(t for n, t in ms.items() if rules.get(n) == DEPTHWISE_RULE), 4)
            row[f"{how}_other_ms"] = round(sum(t for n, t in ms.items() if rules.get(n) != DEPTHWISE_RULE), 4)
        rows.append(row)
        print(f"{row['model']} rate {row['rate']:g}: fused {row['fused_ms']:.3f} ms, split {row['split_ms']:.3f} ms "
              f"(ratio {row['ratio']:.3f}); depthwise kernels {row['fused_depthwise_ms']:.4f} / "
              f"{row['split_depthwise_ms']:.4f} ms, the rest {row['fused_other_ms']:.4f} / {row['split_other_ms']:.4f} ms",
              flush=True)
    lines = ["# vpmaddwd + vpaddd fused into vpdpwssd (fused) vs split (LLVM's Intel tuning)", "",
             f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved; "
             "kernels: isolated, best of 5 passes taking turns", "",
             "| model | rate | fused ms | split ms | ratio | depthwise kernels fused / split ms | other kernels fused / split ms "
             "| max rel. output diff |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rate']:g} | {r['fused_ms']:.3f} | {r['split_ms']:.3f} | {r['ratio']:.3f} | "
              f"{r['fused_depthwise_ms']:.4f} / {r['split_depthwise_ms']:.4f} | {r['fused_other_ms']:.4f} / "
              f"{r['split_other_ms']:.4f} | {r['max_rel_diff']:.1e} |" for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
