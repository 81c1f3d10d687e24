"""Layer norms over the last axis as lane sums (``relay_passes.lane_variance.LaneVariance``)
against TVM's own layer norm, in one process, interleaved.

    python benchmarks/lane_layer_norm.py [--models minilm,sudachi-tagger,khmersm] [--rates 0,100]
        [--rounds 7] [--runs 10] [-o out/bench/lane_layer_norm]

Each config is compiled twice for this host: "lanes" (the pipeline: each row's sum and sum of
squared deviations over 16 lane partials, ``1 / sqrt`` once per row) and "tvm" (LaneVariance
leaving ``nn.layer_norm`` to TVM's legalization, which its CPU reduction rule scheduled with the
rows on vector lanes). Both builds take turns in every round (each runner's minimum of
``--runs`` runs per round; medians over rounds, the ratio taken within rounds), with the largest
output difference between them. Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

HOWS = ("lanes", "tvm")


def main() -> None:
    from benchkit.machine import machine_info
    from benchkit.two_builds import compare_two_builds, parse_args, with_constant

    args = parse_args(__doc__, "0,100", "out/bench/lane_layer_norm", models="minilm,sudachi-tagger,khmersm")
    from relay_passes import lane_variance
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    compare_two_builds(args, machine_info(args.threads, target), HOWS,
                       with_constant(lane_variance, "_lane_layer_norm", lambda _builder, _call: None, "tvm", target),
                       "Layer norms as lane sums (LaneVariance) vs TVM's layer norm")


if __name__ == "__main__":
    main()
