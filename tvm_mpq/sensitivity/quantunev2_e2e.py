"""QuantuneV2 refined by end-to-end measurements (``quantunev2-e2e``).

QuantuneV2 (:mod:`tvm_mpq.sensitivity.quantunev2`, unchanged) ranks layers by local SQNR deltas
measured in two inference passes; error that a layer causes and later layers amplify is
invisible to it (efficientnet-lite0: ``_blocks.0._depthwise_conv`` ranks 22nd although it is the
layer that hurts the output most). This method keeps QuantuneV2's list and measures its first
``budget`` layers (all by default) end to end: each one int8 alone (weights and input, the
calibrated quantizers), every other layer fp32, on the first ``samples`` calibration samples (all
by default), scored by the output SQNR against fp32. The measured layers come first, the
unmeasured rest keep QuantuneV2's order. ``order`` says how the measured ones are ordered
(QuantuneV2's order breaks ties):

* ``"output-sqnr"`` (default): lowest output SQNR first, whatever the layer costs;
* ``"per-bop"``: by the output noise a layer adds per BOP it would save,
  ``10 ** (-SQNR / 10) / MACs``, the greedy knapsack order for the allocation's prefix rule: the
  fp32 budget goes first where it removes the most measured error per BOP.

Why these defaults (docs/results.md, "End-to-end orders against Top-1 order"): on
efficientnet-lite0's 94 held-out photos, for each of three noise measures and two sample counts,
``per-bop`` gave the higher output SQNR at the same rates and ``output-sqnr`` the higher top-1
agreement (6 of 6 pairs, by 0.5-1.3 points averaged over the rates 50-20%); with all 16 calibration
samples ``output-sqnr`` meets Top-1 order's agreement on issue 14's 32 photos at every rate,
where 4 samples and ``per-bop`` (the defaults before) trailed it by up to two photos.

Cost beyond QuantuneV2's two passes: one compile of the switchable model
(:class:`~tvm_mpq.sensitivity.probe.PrecisionProbe`) and ``budget + 1`` runs over ``samples``
samples (``(budget + 1) * samples`` single-sample inferences; efficientnet-lite0 with its 16
calibration samples: 51 runs, 816 inferences), reported in the summary.
"""

from __future__ import annotations

import time

from tvm_mpq.allocation.bops import INT8
from tvm_mpq.errors import MpqError
from tvm_mpq.metrics.task_metrics import output_sqnr_db
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.sensitivity.context import MethodContext
from tvm_mpq.sensitivity.layer_metrics import LayerMetrics
from tvm_mpq.sensitivity.methods import register_method
from tvm_mpq.sensitivity.quantunev2 import QuantuneV2, quantunev2_rank


@register_method
class QuantuneV2EndToEnd(QuantuneV2):
    """QuantuneV2's list with its top ``budget`` layers re-ordered by measured output SQNR."""

    name = "quantunev2-e2e"

    ORDERS = ("output-sqnr", "per-bop")

    def __init__(self, g: float = 2.0, budget: int | None = None, samples: int | None = None, order: str = "output-sqnr",
                 **quantunev2_options):
        super().__init__(g, **quantunev2_options)
        if order not in self.ORDERS:
            raise MpqError(f"quantunev2-e2e order must be one of {', '.join(self.ORDERS)}, not '{order}'")
        if budget is not None and budget < 1:
            raise MpqError(f"quantunev2-e2e budget must be >= 1 layer, got {budget}")
        if samples is not None and samples < 1:
            raise MpqError(f"quantunev2-e2e needs at least 1 sample, got {samples}")
        self.budget, self.samples, self.order = budget, samples, order
        self._e2e: dict[str, float] = {}
        self._summary: dict = {}

    def measure(self, ctx: MethodContext) -> None:
        start = time.perf_counter()
        ranked, _ = quantunev2_rank(ctx.table, ctx.measurement.metrics, self.g, self.mse_factor, delta=self.delta,
                                    activations=self.activations, mse_first=self.mse_first)
        candidates = ranked[:self.budget or len(ranked)]
        feeds = ctx.feeds if self.samples is None else ctx.feeds[:self.samples]
        reference = ctx.reference(feeds)
        self._e2e = {name: output_sqnr_db(ctx.run({name: INT8}, feeds), reference) for name in candidates}
        self._summary = {"measured_layers": len(candidates), "samples": len(feeds), "order": self.order, "compiles": 1,
                         "runs": len(candidates) + 1, "sample_inferences": (len(candidates) + 1) * len(feeds),
                         "seconds": time.perf_counter() - start}

    def rank(self, table: LayerTable, metrics: dict[str, LayerMetrics]) -> list[str]:
        base = super().rank(table, metrics)
        if not self._e2e:
            raise RuntimeError("quantunev2-e2e: measure(ctx) must run before rank")
        position = {name: k for k, name in enumerate(base)}
        macs = {layer.name: max(layer.macs, 1) for layer in table}

        def key(name: str) -> tuple[float, int]:
            if self.order == "output-sqnr":
                return self._e2e[name], position[name]
            return -(10.0 ** (-self._e2e[name] / 10.0)) / macs[name], position[name]

        measured = sorted(self._e2e, key=key)
        for name in base:
            self._details[name]["e2e_output_sqnr_db"] = self._e2e.get(name)
            self._details[name]["quantunev2_rank"] = position[name]
        return measured + [n for n in base if n not in self._e2e]

    def summary(self) -> dict:
        return self._summary
