"""Group norms on per-channel statistics (``relay_passes.group_norm_by_channel.GroupNormByChannel``)
against the graph as exported (reshape to groups, transposed to NCHW and back in the
channels-last build), in one process, interleaved.

    python benchmarks/group_norm_by_channel.py [--models terrain-consistency-unet] [--rates 0]
        [--rounds 7] [--runs 5] [-o out/bench/group_norm_by_channel]

Each config is compiled twice for this host, "per_channel" (the pipeline) and "reshaped" (the
pass left out); both builds take turns in every round (each runner's minimum of ``--runs`` runs
per round; medians over rounds, the ratio taken within rounds), and the largest output
difference between them (float32 summation order). The group norms are not layers (they stay
fp32 at every rate), so the default is the fp32 build. Prints and saves ``report.json`` /
``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = "terrain-consistency-unet"
HOWS = ("per_channel", "reshaped")


def main() -> None:
    from benchkit.two_builds import compare_with_pass_left_out

    compare_with_pass_left_out(
        __doc__, "0", "out/bench/group_norm_by_channel", MODELS,
        "relay_passes.group_norm_by_channel", "GroupNormByChannel", HOWS,
        "Group norms on per-channel statistics (GroupNormByChannel) vs reshaped to groups")


if __name__ == "__main__":
    main()
