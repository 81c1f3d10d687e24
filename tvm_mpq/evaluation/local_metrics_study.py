"""The local-metric study (the paper's Fig. 3): which per-layer metric orders layers best.

Eight sensitivity lists from one stage-C measurement (every layer int8-simulated at once,
weights compared directly, activations over the calibration set), most sensitive first:

=================  ===========================================================================
``W-SQNR``         weight SQNR, lowest first
``A-SQNR``         output (activation) SQNR of the layer, lowest first
``W-delta``        weight SQNR delta (QuantuneV2 Eq. 16), most negative first
``A-delta``        activation SQNR delta, most negative first
``W&A-delta``      ``g * rank(W-delta) + rank(A-delta)`` (QuantuneV2 without the MSE prefix)
``MSE``            output MSE, largest first
``cosine``         output cosine similarity with fp32, lowest first
``KL``             KL divergence of the output value histograms, largest first
=================  ===========================================================================

``QuantuneV2`` (``W&A-delta`` after the MSE > 5x mean layers) is plotted with them as the
reference. Ties are broken by topological order.
"""

from __future__ import annotations

from typing import Callable

from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.sensitivity.layer_metrics import LayerMetrics
from tvm_mpq.sensitivity.quantunev2 import quantunev2_rank, sqnr_deltas

Ranking = Callable[[LayerTable, dict[str, LayerMetrics]], list[str]]


def _by(value: Callable[[LayerMetrics], float | None], descending: bool = False) -> Ranking:
    def rank(table: LayerTable, metrics: dict[str, LayerMetrics]) -> list[str]:
        def key(layer):
            v = value(metrics[layer.name])
            return (v is None, 0.0 if v is None else (-v if descending else v), layer.index)
        return [layer.name for layer in sorted(table, key=key)]
    return rank


def _delta(field: str) -> Ranking:
    def rank(table: LayerTable, metrics: dict[str, LayerMetrics]) -> list[str]:
        values = {n: getattr(m, field) for n, m in metrics.items() if getattr(m, field) is not None}
        deltas = sqnr_deltas(table, values)
        return [l.name for l in sorted(table, key=lambda l: (l.name not in deltas, deltas.get(l.name, 0.0), l.index))]
    return rank


def _qv2(mse_first: bool, g: float) -> Ranking:
    def rank(table: LayerTable, metrics: dict[str, LayerMetrics]) -> list[str]:
        return quantunev2_rank(table, metrics, g, mse_first=mse_first)[0]
    return rank


def local_metric_rankings(g: float = 2.0) -> dict[str, Ranking]:
    """The eight rankings of the study, in the order of the module docstring."""
    return {
        "W-SQNR": _by(lambda m: m.w_sqnr_db),
        "A-SQNR": _by(lambda m: m.a_sqnr_db),
        "W-delta": _delta("w_sqnr_db"),
        "A-delta": _delta("a_sqnr_db"),
        "W&A-delta": _qv2(False, g),
        "MSE": _by(lambda m: m.a_mse, descending=True),
        "cosine": _by(lambda m: m.a_cosine),
        "KL": _by(lambda m: m.a_kl, descending=True),
    }


def reference_ranking(g: float = 2.0) -> Ranking:
    """Full QuantuneV2 (plotted with the eight as the reference)."""
    return _qv2(True, g)
