"""QuantuneV2 sensitivity ranking (SQNR delta, Eq. 16; Algorithm 2).

* SQNR delta of layer n: ``(SQNR_n - SQNR_p) / (L_n - L_p)``, p the nearest quantizable producer
  of n (highest topological index among the MAC layers feeding n), L the layer index. A layer
  with no quantizable producer (it reads the network input) is compared with the mean SQNR of
  all layers at distance 1, so it is neither favoured nor excluded.
* Ranking: layers whose activation MSE exceeds ``mse_factor`` (5) x the mean MSE come first,
  largest MSE first; the rest by ``g * rank(weight delta) + rank(activation delta)``, ranks
  taken over ascending deltas (a large SQNR drop is rank 0, the most sensitive), ``g > 1``
  (default 2); ties by topological index.

Ablation options (QuantuneV2 Table 8; the defaults are the full method): ``delta=False`` ranks
by the raw SQNR instead of the Eq. 16 delta, ``activations=False`` drops the activation term
(weight SQNR / delta only: no inference needed), ``mse_first=False`` drops the MSE > 5x mean
prefix. ``tvm_mpq/sensitivity/ablation.py`` registers the intermediate variants as methods.
"""

from __future__ import annotations

import numpy as np

from tvm_mpq.errors import MpqError
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.sensitivity.layer_metrics import LayerMetrics
from tvm_mpq.sensitivity.methods import SensitivityMethod, register_method


def sqnr_deltas(table: LayerTable, sqnr: dict[str, float]) -> dict[str, float]:
    """Eq. 16 for every layer in ``sqnr`` (see module docstring for layers without a producer;
    a producer missing from ``sqnr`` counts as none)."""
    mean = float(np.mean(list(sqnr.values())))
    deltas = {}
    for layer in table:
        if layer.name not in sqnr:
            continue
        producer = table.nearest_producer(layer)
        if producer is None or producer.name not in sqnr:
            deltas[layer.name] = sqnr[layer.name] - mean
        else:
            deltas[layer.name] = (sqnr[layer.name] - sqnr[producer.name]) / (layer.index - producer.index)
    return deltas


def ascending_ranks(values: dict[str, float], order: dict[str, int]) -> dict[str, int]:
    """Rank 0 for the smallest value; ties broken by ``order``."""
    ranked = sorted(values, key=lambda n: (values[n], order[n]))
    return {name: r for r, name in enumerate(ranked)}


def g_problem(g: float) -> str | None:
    """Why ``g`` cannot weight the weight deltas (it must be finite and above 1: the weight delta
    counts more; NaN fails too), or None."""
    if 1 < g < float("inf"):
        return None
    return f"QuantuneV2 needs a finite g > 1 (--g: the weight delta counts more), got {g}"


def quantunev2_rank(table: LayerTable, metrics: dict[str, LayerMetrics], g: float = 2.0,
                    mse_factor: float = 5.0, *, delta: bool = True, activations: bool = True,
                    mse_first: bool = True) -> tuple[list[str], dict[str, dict]]:
    """Algorithm 2: the sensitivity list and, per layer, the fields that produced it.

    ``delta``/``activations``/``mse_first`` switch off parts of the method (module docstring);
    a weight-only ranking (``activations=False``) puts layers without a weight SQNR (activation x
    activation matmuls measured without inference) last, in topological order.
    """
    problem = g_problem(g)
    if problem is not None:
        raise ValueError(problem)
    if mse_first and not activations:
        raise ValueError("the MSE prefix needs activation metrics (activations=True)")
    order = {layer.name: layer.index for layer in table}
    w_sqnr = {n: m.w_sqnr_db for n, m in metrics.items() if m.w_sqnr_db is not None}
    unmeasured = [n for n in order if n not in w_sqnr]
    if unmeasured and activations:
        raise ValueError(f"no weight SQNR for {unmeasured[:3]}: measure activations first")
    w_value = sqnr_deltas(table, w_sqnr) if delta else dict(w_sqnr)
    a_value: dict[str, float] = {}
    high: list[str] = []
    if activations:
        a_sqnr = {n: m.a_sqnr_db for n, m in metrics.items()}
        a_value = sqnr_deltas(table, a_sqnr) if delta else dict(a_sqnr)
    if mse_first:
        mse = {n: m.a_mse for n, m in metrics.items()}
        mean_mse = float(np.mean(list(mse.values())))
        high = sorted((n for n in mse if mse[n] > mse_factor * mean_mse), key=lambda n: (-mse[n], order[n]))
    rest = [n for n in order if n not in set(high) and n in w_value]
    w_rank = ascending_ranks({n: w_value[n] for n in rest}, order)
    a_rank = ascending_ranks({n: a_value[n] for n in rest}, order) if activations else {n: 0 for n in rest}
    score = {n: (g if activations else 1.0) * w_rank[n] + a_rank[n] for n in rest}
    ranked = high + sorted(rest, key=lambda n: (score[n], order[n])) + unmeasured
    w_key, a_key = ("w_sqnr_delta", "a_sqnr_delta") if delta else ("w_sqnr_rank_value", "a_sqnr_rank_value")
    details = {n: {w_key: w_value.get(n), a_key: a_value.get(n), "high_mse": n in high,
                   "score": score.get(n)} for n in order}
    return ranked, details


@register_method
class QuantuneV2(SensitivityMethod):
    name = "quantunev2"

    def __init__(self, g: float = 2.0, mse_factor: float = 5.0, delta: bool = True, activations: bool = True,
                 mse_first: bool = True):
        problem = g_problem(g)
        if problem is not None:  # before any inference pass
            raise MpqError(problem)
        self.g, self.mse_factor = g, mse_factor
        self.delta, self.activations, self.mse_first = delta, activations, mse_first
        self._details: dict[str, dict] = {}

    def rank(self, table: LayerTable, metrics: dict[str, LayerMetrics]) -> list[str]:
        ranked, self._details = quantunev2_rank(table, metrics, self.g, self.mse_factor, delta=self.delta,
                                                activations=self.activations, mse_first=self.mse_first)
        return ranked

    def details(self) -> dict[str, dict]:
        return self._details
