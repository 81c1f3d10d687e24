"""Evaluate per-layer precision assignments of one model on its evaluation samples.

Every point of the tables and curves is a precision assignment (layer -> ``Precision``, fp32 for
layers not named). They are all run on one switchable module
(:class:`~tvm_mpq.sensitivity.probe.PrecisionProbe`) of the model at **stage C** (batch-norm
folded, the graph the integer compiler quantizes), with the activation quantizers calibrated on
the calibration set: QDQ simulation, ``SimulateQuantization``'s arithmetic on the CPU kernels
(bit for bit where both are built by TVM's default loops; the kernels sum in another order), which
the integer compiler (``compile_model(..., stage="C")``) matches up to float accumulation order.
W8A8 layers have a real integer kernel; other bit-widths are simulated only, and each point says
how many of its layers are. Metrics are
:func:`~tvm_mpq.evaluation.fidelity.scores` against the stage-A fp32 model run on the host
(:func:`~tvm_mpq.evaluation.fidelity.fp32_reference`), on the model's named held-out sample set:
the sweep's and the benchmarks' reference and samples. Results are cached per assignment, so points
that coincide (every ranking's all-int8 and all-fp32 end, a rate met by the same prefix) run once.
"""

from __future__ import annotations

import time
from typing import Mapping

from tvm_mpq.allocation.bops import FP32, INT8, Precision, bops_ratio, bops_reduction_rate, raw_reduction_rate
from tvm_mpq.evaluation.fidelity import fp32_reference, scores
from tvm_mpq.evaluation.model_data import ModelData
from tvm_mpq.evaluation.model_size import model_size_mb
from tvm_mpq.evaluation.tasks import TaskMetricSet, metric_set
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.sensitivity.context import MethodContext, kernel_for
from tvm_mpq.sensitivity.layer_metrics import Measurement

EVALUATED_WITH = "PrecisionProbe at stage C (QDQ simulation on the CPU kernels, SimulateQuantization's arithmetic)"

Key = tuple[tuple[str, int, int], ...]


def assignment_key(precisions: Mapping[str, Precision]) -> Key:
    """A hashable form of an assignment (fp32 entries dropped: missing means fp32)."""
    return tuple(sorted((n, p.w_bits, p.a_bits) for n, p in precisions.items() if p != FP32))


class ConfigEvaluator:
    """Task metrics and costs of precision assignments (see module docstring).

    ``graph_c``/``table_c``: the stage-C model (same layer names as stage A);
    ``measurement_c``: a stage-C measurement holding the 8-bit activation ranges (other
    activation bit-widths are calibrated on first use).
    """

    def __init__(self, data: ModelData, graph_c: ModelGraph, table_c: LayerTable, measurement_c: Measurement,
                 observer: str = "minmax"):
        if table_c.names() != data.table.names():
            raise ValueError("stage-C layer names differ from stage A's")
        self.data = data
        self.metrics: TaskMetricSet = metric_set(data.task, data.labels is not None)
        self.ctx = MethodContext(graph_c, table_c, data.calib, measurement_c, observer=observer)
        start = time.perf_counter()
        self.fp32 = fp32_reference(data.graph, data.samples)  # the sweep's and the benchmarks' reference
        self.reference = self.fp32.outputs
        self.ctx.run({}, data.eval_feeds[:1])  # compiles the evaluation module (timed here)
        self.compile_seconds = time.perf_counter() - start
        self._cache: dict[tuple[Key, int], dict[str, float]] = {}
        self.runs = 0
        self.samples_run = 0
        self.run_seconds = 0.0

    @property
    def primary(self) -> str:
        """The metric that judges a point."""
        return self.metrics.primary

    def metrics_of(self, precisions: Mapping[str, Precision], samples: int | None = None) -> dict[str, float]:
        """Task metrics of ``precisions`` on the (first ``samples``) evaluation samples (cached)."""
        key = assignment_key(precisions)
        n = len(self.data.eval_feeds) if samples is None else min(samples, len(self.data.eval_feeds))
        if (key, n) not in self._cache:
            start = time.perf_counter()
            feeds, reference = self.data.eval_feeds[:n], self.reference[:n]
            labels = None if self.data.labels is None else self.data.labels[:n]
            outputs = reference if not key else self.ctx.run(dict(precisions), feeds)
            self._cache[key, n] = scores(self.data.task, outputs, reference, labels)
            self.runs += bool(key)
            self.samples_run += len(feeds) if key else 0
            self.run_seconds += time.perf_counter() - start
        return dict(self._cache[key, n])

    def fp32_metrics(self, samples: int | None = None) -> dict[str, float]:
        """The fp32 model's metrics (agreement 1, SQNR at its cap; accuracy where labelled)."""
        return self.metrics_of({}, samples)

    def int8_metrics(self, samples: int | None = None) -> dict[str, float]:
        """Every layer W8A8."""
        return self.metrics_of({n: INT8 for n in self.data.table.names()}, samples)

    def point(self, precisions: Mapping[str, Precision], samples: int | None = None) -> dict:
        """Costs, kernels and metrics (on the first ``samples`` evaluation samples; None: all) of
        one assignment (missing layers fp32)."""
        table = self.data.table
        full = {n: precisions.get(n, FP32) for n in table.names()}
        kernels = [kernel_for(p) for p in full.values()]
        return {"bops_reduction_rate": bops_reduction_rate(table, full), "bops_ratio": bops_ratio(table, full),
                "raw_reduction_rate": raw_reduction_rate(table, full),
                "fp32_layers": [n for n, p in full.items() if p == FP32],
                "n_int8": kernels.count("int8"), "n_simulated": kernels.count("simulated"),
                "n_fp32": kernels.count("fp32"),
                "kernels": "simulated" if "simulated" in kernels else "int8 + fp32",
                "model_size_mb": model_size_mb(self.data.graph, table, full),
                "metrics": self.metrics_of(full, samples)}
