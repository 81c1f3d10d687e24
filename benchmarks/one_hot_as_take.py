"""One-hot rows times a weight as lookups of its rows
(``relay_passes.one_hot_matmul_as_take.OneHotMatmulAsTake``) against the one-hot tensor and its
GEMM as exported, in one process, interleaved.

    python benchmarks/one_hot_as_take.py [--models magika] [--rates 0,100]
        [--rounds 7] [--runs 5] [-o out/bench/one_hot_as_take]

Each config is compiled twice for this host, "lookup" (the pipeline) and "one_hot_gemm" (the
pass left out: the one-hot kernel and a float32 GEMM; the product is no layer, so it is fp32 at
every rate); both builds take turns in every round (each runner's minimum of ``--runs`` runs per
round; medians over rounds, the ratio taken within rounds), and the largest output difference
between them. Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = "magika"
HOWS = ("lookup", "one_hot_gemm")


def main() -> None:
    from benchkit.two_builds import compare_with_pass_left_out

    compare_with_pass_left_out(
        __doc__, "0,100", "out/bench/one_hot_as_take", MODELS,
        "relay_passes.one_hot_matmul_as_take", "OneHotMatmulAsTake", HOWS,
        "One-hot rows times a weight as row lookups (OneHotMatmulAsTake) vs the one-hot GEMM")


if __name__ == "__main__":
    main()
