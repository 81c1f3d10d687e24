"""The int8 kernels' requantizing divisions as a multiply and three FMAs, the same floats
(``relay_passes.exact_quotients``, since 2026-12-05), against the same builds dividing, whole
models, both builds in one process::

    python benchmarks/exact_quotients.py [--models efficientnet-lite0,resnet18,mobilenetv2]
        [--rates 50,100] [--rounds 7] [--runs 10] [-o out/bench/exact_quotients]

Zoo or corpus models, each QuantuneV2 config per rate built both ways and timed interleaved
(:func:`benchkit.two_builds.compare_two_builds`: each runner's minimum of ``--runs`` runs per
round, medians over rounds, the ratio exact / divide taken within rounds). "divide": the pass
leaves every PrimFunc as it is. The two compute the same floats, so the outputs' difference is
0. Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from benchkit.two_builds import compare_two_builds, parse_args, with_constant

    args = parse_args(__doc__, "50,100", "out/bench/exact_quotients")
    from benchkit.machine import machine_info
    import relay_passes.exact_quotients as exact_quotients
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    compare_two_builds(args, machine_info(args.threads, target), ("exact", "divide"),
                       with_constant(exact_quotients, "exact_quotients", lambda func: func, "divide", target),
                       "Requantizing divisions as a multiply and FMAs (exact) vs divisions (divide)")


if __name__ == "__main__":
    main()
