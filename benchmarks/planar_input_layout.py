"""The layout change in front of a channels-last model's first conv (an NCHW image made NHWC,
the input quantize fused into it) computed row by row through a plane-major row buffer
(``tvm_mpq.kernels.cpu_generic.schedule_from_planes``, since 2026-12-05) against the vector loop
over the output as it is written (each vector gathering a few pixels' channels from three
planes, the rule before), whole models, both builds in one process::

    python benchmarks/planar_input_layout.py [--models resnet18,mobilenetv2,efficientnet-lite0]
        [--rates 0,100] [--rounds 7] [--runs 10] [-o out/bench/planar_input_layout]

Zoo or corpus models, each QuantuneV2 config per rate built both ways and timed interleaved
(:func:`benchkit.two_builds.compare_two_builds`: each runner's minimum of ``--runs`` runs per
round, medians over rounds, the ratio rows / before taken within rounds; the same values are
computed, so the outputs' difference is 0). Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from benchkit.two_builds import compare_two_builds, parse_args, with_constant

    args = parse_args(__doc__, "0,100", "out/bench/planar_input_layout")
    from benchkit.machine import machine_info
    from tvm_mpq.kernels import cpu_generic
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    compare_two_builds(args, machine_info(args.threads, target), ("rows", "before"),
                       with_constant(cpu_generic, "from_planes", lambda *_args: False, "before", target),
                       "NCHW image to channels-last through a plane-major row buffer (rows) vs one vector loop over the output (before)")


if __name__ == "__main__":
    main()
