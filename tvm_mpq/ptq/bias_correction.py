"""Bias correction of a precision config: the vector each quantized layer's bias is corrected by.

For every int8 layer of the config, on the module exactly as the precision pass receives it
(parameters bound, batch-norm folded into the int8 layers: ``compiler.pipeline.prepared_module``),
the expected output error of its quantized weight is ``op(E[x], fake_quant(W) - W)`` averaged
over output positions (:func:`tvm_mpq.quantization.mac_error.expected_weight_error`), with
``E[x]`` the calibration set's mean input of the layer (one fp32 pass,
:func:`tvm_mpq.calibration.input_means.mean_tensors`). The config stores the negated vector
per layer (``bias_correction``); ``compile`` and ``export-onnx`` add it to the layer's bias.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tvm_mpq.calibration.calibrate import CalibrationCache
from tvm_mpq.calibration.input_means import mean_tensors
from tvm_mpq.compiler.pipeline import check_transforms, mac_bindings, prepared_module
from tvm_mpq.compiler.validate import INTEGER_KINDS
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable, build_layer_table
from tvm_mpq.quantization.mac_error import ConvGeometry, expected_weight_error
from tvm_mpq.zoo.registry import Feed


def _constant(expr: relax.Expr, var2val: dict) -> np.ndarray | None:
    while isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    value = getattr(expr, "value", None)
    return value.numpy() if hasattr(value, "numpy") else None


def conv_geometry(call: relax.Call) -> ConvGeometry | None:
    """The geometry of a ``relax.nn.conv2d`` call (NCHW / OIHW), None for any other op."""
    if call.op.name != "relax.nn.conv2d":
        return None
    attrs = call.attrs
    if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        raise ValueError(f"bias correction reads NCHW/OIHW convolutions, not {attrs.data_layout}/{attrs.kernel_layout}")
    pad = [int(p) for p in attrs.padding]
    pad = pad * 2 if len(pad) == 2 else pad
    return ConvGeometry(tuple(int(s) for s in attrs.strides), tuple(pad), tuple(int(d) for d in attrs.dilation),
                        int(attrs.groups))


def corrected_layers(table: LayerTable, config: PrecisionConfig) -> list:
    """The layers bias correction applies to: quantized layers that run on the integer kernels."""
    return [layer for layer in table if not config.layers[layer.name].is_fp32 and layer.weight_param is not None
            and layer.kind in INTEGER_KINDS]


def bias_corrections(graph: ModelGraph, config: PrecisionConfig, feeds: list[Feed], table: LayerTable | None = None,
                     cache: CalibrationCache | None = None) -> dict[str, np.ndarray]:
    """Layer name -> the vector to add to its output (minus the expected weight error), for
    every quantized layer of ``config`` on ``graph`` (float32)."""
    table = table or build_layer_table(graph)
    check_transforms(graph, config)
    layers = corrected_layers(table, config)
    if not layers:
        return {}
    means = mean_tensors(graph, feeds, [layer.data_var for layer in layers], cache)
    with tvm.transform.PassContext(opt_level=3):
        prepared = prepared_module(graph, table, _without_corrections(config), "A->C")
    func = prepared["main"]
    var2val = relax.analysis.get_var2val(func)
    macs = mac_bindings(prepared)
    out: dict[str, np.ndarray] = {}
    for layer in layers:
        call = var2val[macs[layer.index]]
        weight = _constant(call.args[1], var2val)
        if weight is None:
            raise RuntimeError(f"layer {layer.name}: weight is not a constant after preparation")
        error = expected_weight_error(weight, config.layers[layer.name].w_bits, layer.channel_axis,
                                      means[layer.data_var], conv_geometry(call))
        out[layer.name] = (-error).astype(np.float32)
    return out


def _without_corrections(config: PrecisionConfig) -> PrecisionConfig:
    from dataclasses import replace

    return PrecisionConfig(config.model, {n: replace(lp, bias_correction=None) for n, lp in config.layers.items()},
                           dict(config.provenance))


def apply_bias_correction(graph: ModelGraph, config: PrecisionConfig, feeds: list[Feed],
                          table: LayerTable | None = None, cache: CalibrationCache | None = None) -> int:
    """Store :func:`bias_corrections` in ``config`` (per layer) and record it in the provenance;
    returns the number of layers corrected."""
    corrections = bias_corrections(graph, config, feeds, table, cache)
    for name, vector in corrections.items():
        config.layers[name].bias_correction = [float(v) for v in vector]
    config.provenance["bias_correction"] = True
    return len(corrections)
