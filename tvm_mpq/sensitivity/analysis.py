"""``analyze``: model + calibration data + method -> sensitivity report (the ``analyze`` command)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import tvm

from tvm_mpq.calibration.calibrate import CalibrationCache
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable, build_layer_table
from tvm_mpq.sensitivity.layer_metrics import Measurement, measure_layers
from tvm_mpq.sensitivity.methods import make_method
from tvm_mpq.zoo.registry import Feed


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
        }

    def save(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False, default=_finite))


def _finite(value: object) -> object:
    raise TypeError(f"not JSON serializable: {value!r}")


def analyze(graph: ModelGraph, feeds: list[Feed], method: str = "quantunev2", *, observer: str = "minmax",
            g: float = 2.0, cache: CalibrationCache | None = None,
            table: LayerTable | None = None) -> SensitivityReport:
    """Measure what ``method`` needs (weights only, or the two inference passes) and rank."""
    start = time.perf_counter()
    table = table or build_layer_table(graph)
    options = {"g": g} if method == "quantunev2" else {}
    ranker = make_method(method, **options)
    measurement = measure_layers(graph, table, feeds, observer=observer,
                                 activations=ranker.needs_activations, cache=cache)
    ranked = ranker.rank(table, measurement.metrics)
    seconds = time.perf_counter() - start
    return SensitivityReport(graph.name, method, table, measurement, ranked, ranker.details(), seconds,
                             len(feeds), observer)
