"""Model size at a per-layer precision assignment (the paper's Table 2 "size" column)."""

from __future__ import annotations

from typing import Mapping

from tvm_mpq.allocation.bops import FP32, Precision
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable


def model_size_mb(graph: ModelGraph, table: LayerTable, precisions: Mapping[str, Precision]) -> float:
    """Megabytes (10^6 bytes) of ``graph``'s parameters with every MAC layer's weight stored at
    its ``w_bits`` (fp32 and missing layers: 32) and every other parameter (biases, batch-norm
    statistics, PReLU slopes, embeddings) at 32 bits. A weight shared by several layers is
    counted once, at the widest of their widths."""
    weight_bits: dict[str, int] = {}
    for layer in table:
        if layer.weight_param is not None:
            bits = min(precisions.get(layer.name, FP32).w_bits, 32)
            weight_bits[layer.weight_param] = max(weight_bits.get(layer.weight_param, 0), bits)
    total_bits = sum(value.size * weight_bits.get(name, 32) for name, value in graph.params.items())
    return total_bits / 8 / 1e6
