"""Float32 pointwise (1x1) convs over >= 128 pixels split among threads by rows while their
weight is up to 1 MiB (``tvm_mpq.kernels.cpu_mac.rows_outer`` since 2026-12-05) against the rule
before (every conv by rows only up to 256 KiB), whole models, both builds in one process::

    python benchmarks/pointwise_rows_split.py [--models ppocrv6-rec-small,efficientnet-lite0]
        [--rates 0] [--rounds 7] [--runs 10] [-o out/bench/pointwise_rows_split]

Zoo or corpus models, each QuantuneV2 config per rate (0: fp32, where the rule changes
anything) built both ways and timed interleaved (:func:`benchkit.two_builds.compare_two_builds`:
each runner's minimum of ``--runs`` runs per round, medians over rounds, the ratio rule / before
taken within rounds; only the order of tiles changes, so the outputs' difference is 0). Prints
and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from benchkit.two_builds import compare_two_builds, parse_args, with_constant

    args = parse_args(__doc__, "0", "out/bench/pointwise_rows_split", models="ppocrv6-rec-small,efficientnet-lite0")
    from benchkit.machine import machine_info
    from tvm_mpq.kernels import cpu_mac
    from tvm_mpq.runtime.executor import host_target

    rule = cpu_mac.rows_outer

    def before(info) -> bool:  # the rule before 2026-12-05: convs by rows up to 256 KiB
        if info.kind == "conv2d":
            return cpu_mac.weight_bytes(info) <= cpu_mac.ROWS_OUTER_MAX_WEIGHT_BYTES
        return rule(info)

    target = host_target()
    compare_two_builds(args, machine_info(args.threads, target), ("rule", "before"),
                       with_constant(cpu_mac, "rows_outer", before, "before", target),
                       "Float32 1x1 convs over >= 128 pixels by rows up to 1 MiB (rule) vs every conv up to 256 KiB (before)")


if __name__ == "__main__":
    main()
