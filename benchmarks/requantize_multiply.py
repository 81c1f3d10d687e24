"""Requantizations multiplied by the reciprocal of the output scale (``relay_passes.divide_as_multiply``,
since 2026-12-05) against the same builds dividing by it, whole models, both builds in one process::

    python benchmarks/requantize_multiply.py [--models efficientnet-lite0,resnet18,mobilenetv2]
        [--rates 50,100] [--rounds 7] [--runs 10] [-o out/bench/requantize_multiply]

Zoo or corpus models, each QuantuneV2 config per rate built both ways and timed interleaved
(:func:`benchkit.two_builds.compare_two_builds`: each runner's minimum of ``--runs`` runs per
round, medians over rounds, the ratio multiply / divide taken within rounds). "divide": every
quantize step divides, as before (``_integer_derived`` answers no). The outputs differ where a
requantized value lies within a float32 rounding of a ``.5`` tie (one code) and that code
travels on: the largest output difference relative to the output's largest value is printed.
Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from benchkit.two_builds import compare_two_builds, parse_args, with_constant

    args = parse_args(__doc__, "50,100", "out/bench/requantize_multiply")
    from benchkit.machine import machine_info
    import relay_passes.divide_as_multiply as divide_as_multiply
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    compare_two_builds(args, machine_info(args.threads, target), ("multiply", "divide"),
                       with_constant(divide_as_multiply, "_integer_derived", lambda *_args: False, "divide", target),
                       "Requantizations as a multiply by the reciprocal (multiply) vs a division (divide)")


if __name__ == "__main__":
    main()
