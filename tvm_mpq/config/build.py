"""Precision config from an allocation: bits per layer plus the quantizers the compiler needs."""

from __future__ import annotations

import tvm

from tvm_mpq.allocation.bops import Precision, bops_ratio, bops_reduction_rate, raw_reduction_rate
from tvm_mpq.config.precision_config import LayerPrecision, PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.quantization.quantizers import act_qparams, weight_scales


def build_config(graph: ModelGraph, table: LayerTable, precisions: dict[str, Precision],
                 act_ranges: dict[str, tuple[float, float]], provenance: dict) -> PrecisionConfig:
    """Attach activation qparams (from calibrated ranges) and weight scales to every int layer
    (an activation x activation matmul: its second operand's quantizer, ``b_act``)."""
    layers: dict[str, LayerPrecision] = {}
    for layer in table:
        p = precisions[layer.name]
        if p.w_bits >= 32:
            layers[layer.name] = LayerPrecision(None, None)
            continue
        act = act_qparams(*act_ranges[layer.data_var], p.a_bits) if layer.data_var in act_ranges else None
        scales = (weight_scales(layer.weight_operand(graph.params), p.w_bits, layer.channel_axis).tolist()
                  if layer.weight_param is not None else None)
        b_act = (act_qparams(*act_ranges[layer.weight_var], p.w_bits)
                 if layer.weight_param is None and layer.weight_var in act_ranges else None)
        layers[layer.name] = LayerPrecision(p.w_bits, p.a_bits, act, scales, b_act=b_act)
    if graph.transforms:
        provenance = {**provenance, "graph_transforms": dict(graph.transforms)}
    provenance = {**provenance, "tvm_version": tvm.__version__,
                  "bops_reduction_rate": bops_reduction_rate(table, precisions),
                  "bops_ratio": bops_ratio(table, precisions),
                  "raw_reduction_rate": raw_reduction_rate(table, precisions)}
    return PrecisionConfig(graph.name, layers, provenance)
