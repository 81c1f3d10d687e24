"""BOPs (docs/design.md "Definitions"): ``BOPs(config) = sum_layers MAC_l * w_bits_l * a_bits_l``.

fp32 layers count 32 x 32. ``bops_reduction_rate`` is QuantuneV2's convention: 0% is the fp32
model, 100% the fully int8 one; ``bops_ratio`` is Pandey et al.'s relative BOPs; the raw rate
(QuantuneV2 Eq. 17) is ``100 * (1 - BOPs / BOPs_fp32)``.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

from tvm_mpq.graph.layer_table import LayerTable


class Precision(NamedTuple):
    w_bits: int
    a_bits: int


FP32 = Precision(32, 32)
INT8 = Precision(8, 8)


def bops(table: LayerTable, precisions: Mapping[str, Precision]) -> int:
    """Bit operations of ``table`` with per-layer precisions (missing layers count as fp32)."""
    return sum(layer.macs * p.w_bits * p.a_bits
               for layer in table for p in [precisions.get(layer.name, FP32)])


def _uniform(table: LayerTable, p: Precision) -> dict[str, Precision]:
    return {layer.name: p for layer in table}


def bops_reduction_rate(table: LayerTable, precisions: Mapping[str, Precision],
                        reference: Precision = INT8) -> float:
    """``100 * (BOPs_fp32 - BOPs) / (BOPs_fp32 - BOPs_all_reference)`` (reference: all int8)."""
    fp32 = bops(table, _uniform(table, FP32))
    low = bops(table, _uniform(table, reference))
    if fp32 == low:
        return 0.0
    return 100.0 * (fp32 - bops(table, precisions)) / (fp32 - low)


def bops_ratio(table: LayerTable, precisions: Mapping[str, Precision]) -> float:
    return bops(table, precisions) / bops(table, _uniform(table, FP32))


def raw_reduction_rate(table: LayerTable, precisions: Mapping[str, Precision]) -> float:
    return 100.0 * (1.0 - bops_ratio(table, precisions))
