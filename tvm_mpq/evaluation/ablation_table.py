"""The paper's Table 8: QuantuneV2's ingredients added one at a time.

Rows (:data:`~tvm_mpq.sensitivity.ablation.ABLATION_STEPS`): W-SQNR order on the framework
graph (stage A); the same on the compiler's graph (stage C, batch-norm folded: "IR-opt"); weight
SQNR delta; weight and activation SQNR deltas mixed; the MSE prefix (= QuantuneV2). Each row's
sensitivity list is evaluated at every rate like Table 2, plus its accuracy-recovery curve's mean.
Weight-only rows need no inference (stage A: weights only; stage C: the weights of the stage-C
measurement); the last two rank from the stage-C measurement QuantuneV2 made.
"""

from __future__ import annotations

import time

from tvm_mpq.allocation.allocate import allocate_by_rate
from tvm_mpq.evaluation.evaluator import ConfigEvaluator
from tvm_mpq.evaluation.method_runs import Stages
from tvm_mpq.sensitivity.ablation import ABLATION_STEPS
from tvm_mpq.sensitivity.layer_metrics import Measurement, measure_layers
from tvm_mpq.sensitivity.methods import make_method
from tvm_mpq.types import SOURCE


def ablation_rankings(stages: Stages, measurement_c: Measurement, g: float = 2.0) -> list[dict]:
    """Per row: label, method, stage, sensitivity list and the seconds its ranking took
    (source graph, stage A: weight measurement + ranking; folded graph, stage C: ranking on the
    given measurement)."""
    rows = []
    weights_a: Measurement | None = None
    for label, method, stage in ABLATION_STEPS:
        start = time.perf_counter()
        if stage == SOURCE:
            if weights_a is None:
                weights_a = measure_layers(stages.graph_a, stages.table_a, [], activations=False)
            metrics, table = weights_a.metrics, stages.table_a
        else:
            metrics, table = measurement_c.metrics, stages.table_c
        ranking = make_method(method, g=g).rank(table, metrics)
        rows.append({"label": label, "method": method, "stage": stage, "sensitivity": ranking,
                     "rank_seconds": time.perf_counter() - start})
    return rows


def ablation_points(evaluator: ConfigEvaluator, rows: list[dict], rates: list[float]) -> None:
    """Add ``points`` (one per rate, as Table 2's) to every row, in place."""
    table = evaluator.data.table
    for row in rows:
        row["points"] = [{"requested_rate": rate, **evaluator.point(allocate_by_rate(table, row["sensitivity"], rate))}
                         for rate in rates]
