"""Where a corpus model's time goes: fp32 and fully int8 builds timed interleaved, then each
kernel profiled (:mod:`tvm_mpq.runtime.profiler`), summed by kind and the slowest listed::

    python benchmarks/kernel_profile.py rapidocr-dbnet|mobilenetv2 [--top 12] [--threads 2] [--isolated]
        [--int8-attention]

Prints the borders left at 100%, the interleaved minimum latencies and, per build, the time by
kernel kind and the ``--top`` kernels (ms per inference over all their calls, and the number of
calls) with the rule that scheduled each. ``--isolated``: each
kernel call timed on its own (:func:`tvm_mpq.runtime.profiler.profile_kernels_isolated`, best of
7 rounds of 20 calls), steadier on a noisy VM than the in-model profile. Prints only (the
corpus benchmark's ``ms_by_kind`` is the recorded figure).
"""

from __future__ import annotations

import argparse
import os

from benchkit.machine import flags_text, machine_info
from benchkit.models import corpus_or_zoo
from benchkit.timing import interleaved_min


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a corpus model name (tvm_mpq.corpus.catalog) or a zoo model (tvm_mpq.zoo)")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--isolated", action="store_true", help="time each kernel call on its own")
    parser.add_argument("--int8-attention", action="store_true", help="products of two activations int8 too")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.runtime.executor import host_target, host_tensor
    from tvm_mpq.runtime.profiler import profile_kernels, profile_kernels_isolated, time_by_kind

    graph, calib = corpus_or_zoo(args.model, 8)
    target = host_target()
    builds = {}
    for rate in (0, 100):
        config, report = config_for_rate(graph, calib, rate, "quantunev2")
        keep_unsupported_fp32(config, report.table, args.int8_attention)
        builds[rate] = compile_model(graph, config, target)
    print(f"{args.model}: CPU flags {flags_text(machine_info(args.threads, target))}, {args.threads} thread(s)")
    print("borders at 100%:", sorted({f"{b['kind']} {b['op']}" for b in builds[100].stats["borders"]}))
    first = [calib[0][s.name] for s in graph.inputs]
    inputs = [host_tensor(x) for x in first]
    runners = {}
    for rate, built in builds.items():
        vm = built.vm()
        runners[rate] = lambda vm=vm: vm["main"](*inputs)
    times = interleaved_min(runners, 5, 10)
    fp32, int8 = min(times[0]), min(times[100])
    print(f"fp32 {fp32:.3f} ms, int8 {int8:.3f} ms: {fp32 / int8:.2f}x")
    for rate, built in builds.items():
        if args.isolated:
            rows = profile_kernels_isolated(built.executable, first, built.stats["build"]["kernels"])
        else:
            rows = profile_kernels(built.executable, first, built.stats["build"]["kernels"], 20)
        by_kind = {k: round(v, 3) for k, v in time_by_kind(rows).items() if v >= 0.0005}
        how = "isolated kernels" if args.isolated else "profiled"
        print(f"rate {rate}: {how} {sum(r.ms for r in rows):.3f} ms {by_kind}")
        for row in rows[:args.top]:
            print(f"  {row.ms:.4f} ms  {row.calls:3d}x  {row.kind:18s} {row.name[:70]}  ({built.stats['build']['kernels'].get(row.name)})")


if __name__ == "__main__":
    main()
