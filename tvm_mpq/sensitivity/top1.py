"""Top-1 order: quantize one layer at a time, rank by the drop of the task metric.

For every layer, only that layer runs int8 (weights and data operand, the calibrated
quantizers), every other layer fp32; the task metric over N samples is compared with the fp32
model's. The larger the drop, the more sensitive the layer. With true labels the metric is the
task's accuracy (LFW face / non-face accuracy for mtcnn-rnet); without them, agreement with the
fp32 predictions (fp32 pseudo-labels) on the calibration samples. N is an option (the paper's 50
vs all). Few samples make many drops tie (often at 0); ties are broken by the output SQNR
measured on the same runs (lower SQNR = more sensitive), then by topological order.

Cost: one fp32 calibration pass, one compile (the switchable probe), L + 1 runs over N samples.
"""

from __future__ import annotations

import time

import numpy as np

from tvm_mpq.allocation.bops import INT8, Precision
from tvm_mpq.errors import MpqError
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.metrics.task_metrics import default_metric, make_task_metric, output_sqnr_db
from tvm_mpq.sensitivity.context import MethodContext
from tvm_mpq.sensitivity.layer_metrics import LayerMetrics
from tvm_mpq.sensitivity.methods import SensitivityMethod, register_method
from tvm_mpq.types import Feed

LABEL_MODES = ("auto", "true", "pseudo")


def select_samples(ctx: MethodContext, samples: int | None, labels: str) -> tuple[list[Feed], np.ndarray | None]:
    """The first ``samples`` evaluation feeds (all if None) and their true labels (None: pseudo).

    ``labels``: ``"true"`` requires labelled data (MpqError otherwise), ``"pseudo"`` uses fp32
    predictions, ``"auto"`` true labels where the model has them.
    """
    if labels not in LABEL_MODES:
        raise MpqError(f"top1 labels must be one of {', '.join(LABEL_MODES)}, not '{labels}'")
    has_labels = ctx.eval_data is not None and ctx.eval_data.labels is not None
    if labels == "true" and not has_labels:
        raise MpqError(f"top1 asked for true labels, but model '{ctx.graph.name}' has no labelled data "
                       "(use pseudo-labels)")
    use_true = has_labels and labels != "pseudo"
    feeds = ctx.eval_data.feeds if ctx.eval_data is not None else ctx.feeds
    if samples is not None:
        if samples < 1:
            raise MpqError(f"top1 needs at least 1 sample, got {samples}")
        if samples > len(feeds):
            raise MpqError(f"top1: {samples} samples asked, only {len(feeds)} available")
        feeds = feeds[:samples]
    truth = np.asarray(ctx.eval_data.labels)[:len(feeds)] if use_true else None
    return feeds, truth


@register_method
class Top1Order(SensitivityMethod):
    """Rank by the task-metric drop with one layer int8 at a time (see module docstring)."""

    name = "top1"
    needs_activations = False

    def __init__(self, samples: int | None = None, labels: str = "auto", metric: str | None = None,
                 precision: Precision = INT8):
        if labels not in LABEL_MODES:
            raise MpqError(f"top1 labels must be one of {', '.join(LABEL_MODES)}, not '{labels}'")
        self.samples, self.labels, self.metric_name, self.precision = samples, labels, metric, precision
        self._details: dict[str, dict] = {}
        self._summary: dict = {}

    def measure(self, ctx: MethodContext) -> None:
        start = time.perf_counter()
        feeds, truth = select_samples(ctx, self.samples, self.labels)
        name = self.metric_name or default_metric(ctx.task, truth is not None)
        metric = make_task_metric(name)
        if metric.needs_labels and truth is None:
            raise MpqError(f"top1 metric '{name}' needs labels, and model '{ctx.graph.name}' has none here")
        reference = ctx.reference(feeds)
        baseline = metric(reference, reference, truth)
        sign = 1.0 if metric.higher_is_better else -1.0
        for layer in ctx.table:
            outputs = ctx.run({layer.name: self.precision}, feeds)
            value = metric(outputs, reference, truth)
            self._details[layer.name] = {"top1_metric": value, "top1_drop": sign * (baseline - value),
                                         "top1_output_sqnr_db": output_sqnr_db(outputs, reference)}
        self._summary = {"metric": name, "labels": "true" if truth is not None else "pseudo (fp32 top-1)",
                         "samples": len(feeds), "fp32_metric": baseline,
                         "precision": f"W{self.precision.w_bits}A{self.precision.a_bits}",
                         "runs": len(ctx.table) + 1, "compiles": 1,
                         "seconds": time.perf_counter() - start}

    def rank(self, table: LayerTable, metrics: dict[str, LayerMetrics]) -> list[str]:
        if not self._details:
            raise RuntimeError("top1: measure(ctx) must run before rank")
        d = self._details
        return [layer.name for layer in sorted(
            table, key=lambda l: (-d[l.name]["top1_drop"], d[l.name]["top1_output_sqnr_db"], l.index))]

    def details(self) -> dict[str, dict]:
        return self._details

    def summary(self) -> dict:
        return self._summary
