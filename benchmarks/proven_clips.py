"""Clips whose input is already within their bounds dropped (``relay_passes.proven_clips``, since
2026-12-07: a requantize's clamp to the code range after ReLU6) against the same builds keeping
them, whole models, both builds in one process::

    python benchmarks/proven_clips.py [--models efficientnet-lite0,mobilenetv2,resnet18]
        [--rates 100] [--rounds 7] [--runs 10] [-o out/bench/proven_clips]

Zoo or corpus models, each QuantuneV2 config per rate built by the pipeline ("dropped") and with
``DropProvenClips`` left out ("kept"), timed interleaved
(:func:`benchkit.two_builds.compare_with_pass_left_out`). The pass leaves the results as they
are, so the outputs' difference is 0. Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from benchkit.two_builds import compare_with_pass_left_out

    compare_with_pass_left_out(__doc__, "100", "out/bench/proven_clips", "efficientnet-lite0,mobilenetv2,resnet18",
                               "relay_passes.proven_clips", "DropProvenClips", ("dropped", "kept"),
                               "Clips already met by their input dropped (dropped) vs kept")


if __name__ == "__main__":
    main()
