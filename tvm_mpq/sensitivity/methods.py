"""Sensitivity methods, registered by name: each turns measurements into a sensitivity list.

A sensitivity list orders the layers most-sensitive first; the top of the list stays fp32
under a BOPs budget (``tvm_mpq.allocation``). Add a method in one file: subclass
:class:`SensitivityMethod`, set ``name`` (and ``needs_activations`` if it only reads weights),
decorate with :func:`register_method`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from tvm_mpq.registry import Registry
from tvm_mpq.graph.layer_table import LayerTable
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
