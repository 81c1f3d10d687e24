"""``analyze``: model + calibration data + method -> sensitivity report (the ``analyze`` command)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import tvm

from tvm_mpq.calibration.calibrate import CalibrationCache
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable, build_layer_table
from tvm_mpq.sensitivity.context import BitAllocation, EvalData, MethodContext
from tvm_mpq.sensitivity.layer_metrics import Measurement, measure_layers
from tvm_mpq.sensitivity.methods import SensitivityMethod, make_method
from tvm_mpq.types import Feed


@dataclass
class SensitivityReport:
    model: str
    method: str
    table: LayerTable
    measurement: Measurement
    sensitivity: list[str]
    details: dict[str, dict]
    seconds: float
    calib_size: int
    observer: str
    allocations: list[BitAllocation] = field(default_factory=list)
    method_info: dict = field(default_factory=dict)
    ranker: SensitivityMethod | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        position = {n: i for i, n in enumerate(self.sensitivity)}
        layers = []
        for layer in self.table:
            row = {"name": layer.name, "kind": layer.kind, "index": layer.index, "macs": layer.macs,
                   "rank": position[layer.name], "producers": layer.producers,
                   **self.measurement.metrics[layer.name].to_json(), **self.details.get(layer.name, {})}
            layers.append(row)
        return {
            "model": self.model, "tvm_version": tvm.__version__,
            "analysis": {"method": self.method, "seconds": self.seconds, "n_layers": len(self.table),
                         "inference_passes": self.measurement.inference_passes,
                         "calib_size": self.calib_size, "observer": self.observer},
            "sensitivity": self.sensitivity,
            "layers": layers,
            "method_info": self.method_info,
            "allocations": [a.to_json(self.table) for a in self.allocations],
        }

    def save(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False, default=_finite))

    def write_artifacts(self, path: Path | str) -> list[Path]:
        """The method's extra files next to the report at ``path`` (e.g. Pandey's Pareto plot)."""
        path = Path(path)
        return self.ranker.write_artifacts(path.with_suffix("")) if self.ranker is not None else []


def _finite(value: object) -> object:
    raise TypeError(f"not JSON serializable: {value!r}")


def g_option(method: str, g: float) -> dict:
    """``{"g": g}`` for the methods that take QuantuneV2's weight-delta weight (QuantuneV2 and
    its end-to-end refinement), ``{}`` for the others."""
    return {"g": g} if method in ("quantunev2", "quantunev2-e2e") else {}


def analyze(graph: ModelGraph, feeds: list[Feed], method: str = "quantunev2", *, observer: str = "minmax",
            g: float = 2.0, cache: CalibrationCache | None = None,
            table: LayerTable | None = None, options: dict | None = None,
            eval_data: EvalData | None = None, task: str = "generic") -> SensitivityReport:
    """Measure what ``method`` needs (weights only, or the two inference passes), let the method
    run its own measurements, rank, and collect the method's own precision assignments.

    ``options`` are the method's constructor options (e.g. ``{"samples": 50}`` for ``top1``,
    ``{"qems": [1, 2, 4]}`` for ``mixquant``, ``{"bops_budgets": [0.05]}`` for ``pandey``);
    ``eval_data`` labelled samples for task metrics; ``task`` the zoo task of the model.
    """
    start = time.perf_counter()
    table = table or build_layer_table(graph)
    method_options = g_option(method, g)
    method_options.update(options or {})
    ranker = make_method(method, **method_options)
    measurement = measure_layers(graph, table, feeds, observer=observer,
                                 activations=ranker.needs_activations, cache=cache)
    ctx = MethodContext(graph, table, feeds, measurement, observer=observer, cache=cache,
                        eval_data=eval_data, task=task)
    ranker.measure(ctx)
    ranked = ranker.rank(table, measurement.metrics)
    allocations = ranker.allocate(ctx)
    seconds = time.perf_counter() - start
    return SensitivityReport(graph.name, method, table, measurement, ranked, ranker.details(), seconds,
                             len(feeds), observer, allocations, ranker.summary(), ranker)
