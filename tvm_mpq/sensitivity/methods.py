"""Sensitivity methods, registered by name: each turns measurements into a sensitivity list.

A sensitivity list orders the layers most-sensitive first; the top of the list stays fp32
under a BOPs budget (``tvm_mpq.allocation``). Add a method in one file: subclass
:class:`SensitivityMethod`, set ``name`` (and ``needs_activations`` if it only reads weights),
decorate with :func:`register_method`, import the module in ``tvm_mpq/sensitivity/__init__.py``.

``analyze`` drives every method the same way::

    measurement = measure_layers(...)      # weights, plus two inference passes if needs_activations
    method.measure(ctx)                    # optional: the method's own inference (MethodContext)
    ranked = method.rank(table, metrics)   # every method: the sensitivity list
    allocations = method.allocate(ctx)     # bit-width methods: their own precision assignments

Ranking methods (QuantuneV2, InOrder, Weight-SQNR, Top-1) leave the budget to
``allocate_by_rate``; bit-width methods (MixQuant, Pandey et al.) also return
:class:`~tvm_mpq.sensitivity.context.BitAllocation` objects from ``allocate``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from tvm_mpq.registry import Registry
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.sensitivity.context import BitAllocation, MethodContext
from tvm_mpq.sensitivity.layer_metrics import LayerMetrics

_METHODS: Registry["SensitivityMethod"] = Registry("--method")
register_method = _METHODS.register
method_names = _METHODS.names


def make_method(name: str, **options) -> "SensitivityMethod":
    return _METHODS.make(name, **options)


class SensitivityMethod(ABC):
    name: ClassVar[str]
    needs_activations: ClassVar[bool] = True
    """False: the method reads only weights, so no inference is run for it."""

    @abstractmethod
    def rank(self, table: LayerTable, metrics: dict[str, LayerMetrics]) -> list[str]:
        """All layer names, most sensitive first."""

    def details(self) -> dict[str, dict]:
        """Per-layer extra fields for the report (e.g. deltas), filled by ``rank``."""
        return {}

    def measure(self, ctx: MethodContext) -> None:
        """The method's own measurements, run before :meth:`rank` (default: none)."""

    def allocate(self, ctx: MethodContext) -> list[BitAllocation]:
        """Precision assignments the method chooses itself (bit-width methods); default none."""
        return []

    def summary(self) -> dict:
        """Method-level results for the report (options, timings, phase results); default none."""
        return {}

    def write_artifacts(self, stem: Path) -> list[Path]:
        """Write extra files next to the report (``stem`` + suffix); return their paths."""
        return []


@register_method
class InOrder(SensitivityMethod):
    """Quantize from the input onwards: at any rate the fp32 layers are the network's tail, so
    the sensitivity list is the reverse topological order."""

    name = "inorder"
    needs_activations = False

    def rank(self, table: LayerTable, metrics: dict[str, LayerMetrics]) -> list[str]:
        return [layer.name for layer in reversed(table.layers)]


@register_method
class WeightSqnrOrder(SensitivityMethod):
    """Lowest weight SQNR first (ties: topological order). Activation x activation matmuls have
    no weight to measure without inference; they go last (quantized first)."""

    name = "weight-sqnr"
    needs_activations = False

    def rank(self, table: LayerTable, metrics: dict[str, LayerMetrics]) -> list[str]:
        return [layer.name for layer in sorted(table.layers, key=lambda l: _weight_sqnr_key(metrics[l.name], l.index))]


def _weight_sqnr_key(m: LayerMetrics, index: int) -> tuple[bool, float, int]:
    return (m.w_sqnr_db is None, m.w_sqnr_db or 0.0, index)
