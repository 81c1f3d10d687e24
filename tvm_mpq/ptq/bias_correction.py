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

from dataclasses import replace

import numpy as np
import tvm
from tvm import relax

from relay_passes.precision_annotation import annotated_layers, relax_functions
from tvm_mpq.calibration.calibrate import CalibrationCache
from tvm_mpq.calibration.input_means import mean_tensors
from tvm_mpq.compiler.pipeline import annotation_passes
from tvm_mpq.compiler.validate import INTEGER_KINDS
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import Layer, LayerTable, build_layer_table
from tvm_mpq.quantization.adaptive_rounding import decode_flips, rounded_codes
from tvm_mpq.quantization.mac_error import ConvGeometry, expected_weight_error
from tvm_mpq.quantization.quantizers import broadcast_scales, weight_scales
from tvm_mpq.types import Feed


CORRECTED_KINDS = ("conv2d", "depthwise_conv2d", "grouped_conv2d", "dense", "matmul")
"""Layer kinds whose expected weight error is computed (conv2d of any grouping, matmul)."""


def _constant(expr: relax.Expr, var2val: dict) -> np.ndarray | None:
    while isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    value = getattr(expr, "value", None)
    return value.numpy() if hasattr(value, "numpy") else None


def conv_geometry(call: relax.Call) -> ConvGeometry | None:
    """The geometry of a ``relax.nn.conv2d`` call (NCHW / OIHW), None for a matmul. ValueError
    for any other MAC op or layout (bias correction does not compute those)."""
    if call.op.name == "relax.matmul":
        return None
    if call.op.name != "relax.nn.conv2d":
        raise ValueError(f"bias correction computes conv2d and matmul layers, not {call.op.name}")
    attrs = call.attrs
    if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        raise ValueError(f"bias correction reads NCHW/OIHW convolutions, not {attrs.data_layout}/{attrs.kernel_layout}")
    pad = [int(p) for p in attrs.padding]
    pad = pad * 2 if len(pad) == 2 else pad
    return ConvGeometry(tuple(int(s) for s in attrs.strides), tuple(pad), tuple(int(d) for d in attrs.dilation),
                        int(attrs.groups))


def corrected_layers(table: LayerTable, config: PrecisionConfig) -> list[Layer]:
    """The layers bias correction applies to: quantized conv2d / matmul layers with a weight
    that run on the integer kernels."""
    return [layer for layer in table if not config.layers[layer.name].is_fp32 and layer.weight_param is not None
            and layer.kind in INTEGER_KINDS and layer.kind in CORRECTED_KINDS]


def bias_corrections(graph: ModelGraph, config: PrecisionConfig, feeds: list[Feed], table: LayerTable | None = None,
                     cache: CalibrationCache | None = None) -> dict[str, np.ndarray]:
    """Layer name -> the vector to add to its output (minus the expected weight error), for
    every quantized conv2d / matmul layer of ``config`` on ``graph`` (float32)."""
    table = table or build_layer_table(graph)
    layers = {layer.name: layer for layer in corrected_layers(table, config)}
    if not layers:
        return {}
    means = mean_tensors(graph, feeds, [layer.data_var for layer in layers.values()], cache)
    with tvm.transform.PassContext(opt_level=3):
        prepared = tvm.transform.Sequential(annotation_passes(graph, without_corrections(config), "A->C", table),
                                            name="tvm_mpq.annotate")(graph.mod)
    out: dict[str, np.ndarray] = {}
    for _, func in relax_functions(prepared):
        var2val = relax.analysis.get_var2val(func)
        for binding, annotation in annotated_layers(func):
            layer = layers.get(annotation.layer)
            if layer is None or annotation.is_fp32:
                continue
            call = binding.value
            weight = _constant(call.args[1], var2val)
            if weight is None:
                raise RuntimeError(f"layer {layer.name}: weight is not a constant after preparation")
            mean = means[layer.data_var]
            geometry = conv_geometry(call)
            if geometry is not None and mean.ndim != 3:
                raise ValueError(f"layer {layer.name}: mean input of shape {mean.shape} for a conv2d")
            scales = annotation.weight_scales
            if scales is None:
                scales = weight_scales(weight, annotation.w_bits, layer.channel_axis)
            rounding = config.layers[layer.name].weight_rounding
            flips = None if rounding is None else decode_flips(rounding, weight.shape)
            quantized = rounded_codes(weight, scales, annotation.w_bits, layer.channel_axis, flips) \
                * broadcast_scales(np.asarray(scales, np.float32), weight.ndim, layer.channel_axis)
            error = expected_weight_error(weight, annotation.w_bits, layer.channel_axis, mean, geometry,
                                          scales, quantized)
            out[layer.name] = (-error).astype(np.float32)
    return out


def without_corrections(config: PrecisionConfig) -> PrecisionConfig:
    """``config`` with no layer's bias correction or weight rounding (the model the corrections
    and roundings are computed on: its MAC ops read the layers' folded weights as they are)."""
    return PrecisionConfig(config.model, {n: replace(lp, bias_correction=None, weight_rounding=None)
                                          for n, lp in config.layers.items()}, dict(config.provenance))


def apply_bias_correction(graph: ModelGraph, config: PrecisionConfig, feeds: list[Feed],
                          table: LayerTable | None = None, cache: CalibrationCache | None = None) -> int:
    """Store :func:`bias_corrections` in ``config`` (per layer) and record it in the provenance;
    returns the number of layers corrected."""
    corrections = bias_corrections(graph, config, feeds, table, cache)
    for name, vector in corrections.items():
        config.layers[name].bias_correction = [float(v) for v in vector]
    config.provenance["bias_correction"] = True
    return len(corrections)
