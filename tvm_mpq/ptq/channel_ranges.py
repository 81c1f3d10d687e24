"""Per-channel activation quantizers for the inputs of depthwise convs.

A depthwise conv's output channel reads one input channel, so its input can be quantized per
channel at no cost in the integer kernel: the per-channel input scale folds into the
per-channel requantization the kernel does anyway (``s_x[c] * s_w[c]``), the zero-point
correction stays one int32 per channel, and the producing group's requantize writes each
channel at its own scale (:class:`~relay_passes.quantized_arith.IntegerArith`). It matters where
channel ranges differ widely, as after a hard-swish or a ReLU6 in mobile networks: on
rapidocr-dbnet, quantizing ``p2o.Conv.3``'s input per tensor leaves 14.5 dB at its output, per
channel 40.4 dB (``benchmarks/channel_act.py``).

For every int8 depthwise conv of a config (its input NCHW, one group per channel) the
calibration set's per-channel min / max of the input is measured (one fp32 pass, cached) and
clipped to the range of the per-tensor quantizer the config already holds (the chosen
observer's clipping is kept; each channel's range only narrows), then stored in the config as
that layer's ``act`` (a per-channel :class:`~tvm_mpq.quantization.quantizers.ActQParams`).
"""

from __future__ import annotations

import numpy as np

from tvm_mpq.calibration.calibrate import CalibrationCache, calibration_key, run_exposed
from tvm_mpq.compiler.validate import INTEGER_KINDS
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import Layer, LayerTable, build_layer_table
from tvm_mpq.quantization.quantizers import ActQParams, act_qparams_per_channel
from tvm_mpq.types import Feed

RANGE_KIND = "channel-minmax"
"""What the cache key records in place of an observer name."""


def channel_quantized_layers(table: LayerTable, config: PrecisionConfig) -> list[Layer]:
    """The int8 depthwise convs of ``config`` whose input gets a per-channel quantizer."""
    out = []
    for layer in table:
        lp = config.layers[layer.name]
        if lp.is_fp32 or lp.act is None or layer.kind != "depthwise_conv2d" or layer.kind not in INTEGER_KINDS:
            continue
        out.append(layer)
    return out


def channel_ranges(graph: ModelGraph, feeds: list[Feed], var_names: list[str],
                   cache: CalibrationCache | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{var: (min per channel, max per channel)}`` over ``feeds`` of NCHW tensors (axis 1)."""
    names = sorted(set(var_names))
    if not names:
        return {}
    key = calibration_key(graph, feeds, names, RANGE_KIND) if cache else ""
    path = cache.path(graph.name, key).with_suffix(".channels.npz") if cache else None
    if path is not None and path.is_file():
        with np.load(path) as data:
            if all(f"lo{i}" in data.files for i in range(len(names))):
                return {n: (data[f"lo{i}"], data[f"hi{i}"]) for i, n in enumerate(names)}
    ranges: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def observe(_i: int, _outs: list[np.ndarray], tensors: list[np.ndarray]) -> None:
        for name, tensor in zip(names, tensors):
            t = np.asarray(tensor)
            if t.ndim < 2:
                raise ValueError(f"tensor {name} of shape {t.shape} has no channel axis")
            axes = tuple(a for a in range(t.ndim) if a != 1)
            lo, hi = t.min(axis=axes).astype(np.float64), t.max(axis=axes).astype(np.float64)
            if name in ranges:
                lo, hi = np.minimum(ranges[name][0], lo), np.maximum(ranges[name][1], hi)
            ranges[name] = (lo, hi)

    run_exposed(graph, feeds, names, observe, desc="channel ranges (depthwise inputs)")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{f"{k}{i}": ranges[n][j] for i, n in enumerate(names) for j, k in enumerate(("lo", "hi"))})
    return ranges


def tensor_range(qp: ActQParams) -> tuple[float, float]:
    """The real range a per-tensor quantizer represents: codes ``0 .. qmax``."""
    return -qp.zero_point * qp.scale, (qp.qmax - qp.zero_point) * qp.scale


def apply_channel_quantizers(graph: ModelGraph, config: PrecisionConfig, feeds: list[Feed],
                             table: LayerTable | None = None, cache: CalibrationCache | None = None) -> int:
    """Give every int8 depthwise conv of ``config`` a per-channel input quantizer (see the
    module docstring) and record it in the provenance; returns the number of layers changed.
    ``graph`` / ``table``: the graph the config's quantizers were calibrated on."""
    table = table or build_layer_table(graph)
    layers = channel_quantized_layers(table, config)
    ranges = channel_ranges(graph, feeds, [layer.data_var for layer in layers], cache) if layers else {}
    changed = 0
    for layer in layers:
        lp = config.layers[layer.name]
        lo, hi = ranges[layer.data_var]
        if lp.act.per_channel or layer.weight_shape[0] % lo.size:  # (already done / not one group per channel)
            continue
        t_lo, t_hi = tensor_range(lp.act)
        lp.act = act_qparams_per_channel(np.clip(lo, t_lo, t_hi), np.clip(hi, t_lo, t_hi), lp.act.bits)
        changed += 1
    config.provenance["channel_act"] = True
    return changed
