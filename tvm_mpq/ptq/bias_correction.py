"""Bias correction of a precision config: the vector each quantized layer's bias is corrected by.

For every int8 layer of the config, on the module exactly as the lowering receives it (the
compile pipeline's :func:`~tvm_mpq.compiler.pipeline.annotation_passes`: parameters bound,
precision annotated, batch-norm folded into the int8 layers), the expected output error of its
quantized weight is ``op(E[x], fake_quant(W) - W)`` averaged over output positions
(:func:`tvm_mpq.quantization.mac_error.expected_weight_error`), with ``W`` the layer's (folded)
weight, its annotation's weight scales (its codes rounded as the config's ``weight_rounding``
says, to nearest without one) and ``E[x]`` the calibration set's mean input of the
layer (one fp32 pass, :func:`tvm_mpq.calibration.input_means.mean_tensors`). The config stores
the negated vector per layer (``bias_correction``); ``compile`` and ``export-onnx`` add it to the
layer's bias (:class:`~relay_passes.correct_bias.CorrectBias`).
"""

from __future__ import annotations

import numpy as np
from tvm_mpq.calibration.calibrate import CalibrationCache
from tvm_mpq.calibration.input_means import mean_tensors
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable, build_layer_table
from tvm_mpq.ptq.prepared_layers import prepared_layers, refined_layers
from tvm_mpq.quantization.adaptive_rounding import decode_flips, rounded_weight
from tvm_mpq.quantization.mac_error import expected_weight_error
from tvm_mpq.types import Feed


def bias_corrections(graph: ModelGraph, config: PrecisionConfig, feeds: list[Feed], table: LayerTable | None = None,
                     cache: CalibrationCache | None = None) -> dict[str, np.ndarray]:
    """Layer name -> the vector to add to its output (minus the expected weight error), for
    every quantized conv2d / matmul layer of ``config`` on ``graph`` (float32)."""
    table = table or build_layer_table(graph)
    layers = refined_layers(table, config)
    if not layers:
        return {}
    means = mean_tensors(graph, feeds, [layer.data_var for layer in layers], cache)
    out: dict[str, np.ndarray] = {}
    for prepared in prepared_layers(graph, config, table):
        layer, weight, bits = prepared.layer, prepared.weight, prepared.annotation.w_bits
        mean = means[layer.data_var]
        geometry = prepared.geometry
        if geometry is not None and mean.ndim != 3:
            raise ValueError(f"layer {layer.name}: mean input of shape {mean.shape} for a conv2d")
        rounding = config.layers[layer.name].weight_rounding
        quantized = rounded_weight(weight, prepared.scales, bits, layer.channel_axis,
                                   None if rounding is None else decode_flips(rounding, weight.shape))
        error = expected_weight_error(weight, bits, layer.channel_axis, mean, geometry, prepared.scales, quantized)
        out[layer.name] = (-error).astype(np.float32)
    return out


def apply_bias_correction(graph: ModelGraph, config: PrecisionConfig, feeds: list[Feed],
                          table: LayerTable | None = None, cache: CalibrationCache | None = None) -> int:
    """Store :func:`bias_corrections` in ``config`` (per layer) and record it in the provenance;
    returns the number of layers corrected."""
    corrections = bias_corrections(graph, config, feeds, table, cache)
    for name, vector in corrections.items():
        config.layers[name].bias_correction = [float(v) for v in vector]
    config.provenance["bias_correction"] = True
    return len(corrections)
