"""Per-channel activation quantizers for the inputs of depthwise convs.

A depthwise conv's output channel reads one input channel, so its input can be quantized per
channel at no cost in the integer kernel: the per-channel input scale folds into the
per-channel requantization the kernel does anyway (``s_x[c] * s_w[c]``), the zero-point
correction stays one int32 per channel, and the producing group's requantize writes each
channel at its own scale (:class:`~relay_passes.quantized_arith.IntegerArith`). It matters where
channel ranges differ widely, as after a hard-swish or a ReLU6 in mobile networks: on
rapidocr-dbnet, quantizing ``p2o.Conv.3``'s input per tensor leaves 14.5 dB at its output, per
channel 40.4 dB (``benchmarks/channel_act.py``).

Per-channel ranges measured on a few calibration samples can be too narrow for new inputs:
efficientnet-lite0's late depthwise inputs (ReLU6, similar channel ranges) exceeded them on
0.14% of held-out values, and clipping those cost 10-13 dB at the layer where per tensor lost
nothing. So each channel's range is widened :data:`MARGIN` times (within the per-tensor range)
and the choice is measured, per layer: the calibration set is split in two halves (first and
second), each half's quantizers (per channel widened, and per tensor, min/max) quantize the
other half, and the input errors per channel, weighted by the energy of the filter reading the
channel (the depthwise conv's output error), decide: per channel where it is :data:`MIN_GAIN`
times better. There, the whole set's widened per-channel ranges, clipped to the range of the
per-tensor quantizer the config already holds (the chosen observer's clipping is kept), become
that layer's ``act`` (a per-channel :class:`~tvm_mpq.quantization.quantizers.ActQParams`). Two
fp32 passes, cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tvm_mpq.calibration.calibrate import CalibrationCache, calibration_key, compile_exposed, run_exposed
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import Layer, LayerTable, build_layer_table
from tvm_mpq.quantization.quantizers import ActQParams, act_qparams_per_channel
from tvm_mpq.types import Feed

RANGE_KIND = "channel-minmax-cv3"
"""What the cache key records in place of an observer name."""
MARGIN = 2.0
"""Each channel's calibrated range is widened this many times (within the per-tensor range):
a few samples' per-channel extremes are exceeded by new inputs far more often than the whole
tensor's (0.14% of efficientnet-lite0's held-out late-block values)."""
MIN_GAIN = 2.0
"""Per channel is chosen where its cross-validated error is at most 1/``MIN_GAIN`` of per tensor's
(3 dB). Measured 2026-12-01 (``python benchmarks/channel_act.py``): the ratio was 0.02-0.4 on 11
of rapidocr-dbnet's 14 depthwise inputs and >= 0.97 on all 16 of efficientnet-lite0's."""


_MEMO: dict[str, dict[str, "ChannelStats"]] = {}
"""This process's measurements by calibration key (graph, weights, samples, tensors)."""


@dataclass
class ChannelStats:
    """One depthwise input over the calibration set: per-channel min / max (all samples), and the
    two-fold cross-validated input error, per channel, of per-channel and of per-tensor min/max
    quantizers (ranges from one half of the samples, error measured on the other, both ways)."""

    lo: np.ndarray
    hi: np.ndarray
    error_channel: np.ndarray
    error_tensor: np.ndarray

    def per_channel_wins(self, weight_energy: np.ndarray) -> bool:
        """True when per-channel quantizers give an expected output error :data:`MIN_GAIN` times
        smaller: each channel's input error weighted by the energy of the filter(s) reading it."""
        return MIN_GAIN * float(weight_energy @ self.error_channel) < float(weight_energy @ self.error_tensor)


def channel_quantized_layers(table: LayerTable, config: PrecisionConfig) -> list[Layer]:
    """The int8 depthwise convs of ``config`` whose input may get a per-channel quantizer."""
    return [layer for layer in table if layer.kind == "depthwise_conv2d" and layer.weight_param is not None and not config.layers[layer.name].is_fp32
            and config.layers[layer.name].act is not None]


def fake_quant_range(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``x`` quantized and dequantized by the 8-bit min/max quantizer(s) of ``[lo, hi]`` (arrays
    broadcast against ``x``; float64 arithmetic, for measuring errors)."""
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    scale = np.where(hi > lo, (hi - lo) / 255.0, 1.0)
    zero_point = np.clip(np.round(-lo / scale), 0, 255)
    return (np.clip(np.round(x / scale) + zero_point, 0, 255) - zero_point) * scale


def widened(lo: np.ndarray, hi: np.ndarray, tensor_lo: float, tensor_hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ranges ``MARGIN`` times wider, within the per-tensor range."""
    return np.maximum(lo * MARGIN, tensor_lo), np.minimum(hi * MARGIN, tensor_hi)


def quantization_errors(t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (axis 1) of ``t``, the summed squared error of the per-channel quantizers of
    ranges ``lo`` / ``hi`` (one entry per channel, :func:`widened`) and of the per-tensor min/max
    quantizer of their union."""
    axes = tuple(a for a in range(t.ndim) if a != 1)
    shape = [1] * t.ndim
    shape[1] = t.shape[1]
    lo_w, hi_w = widened(lo, hi, float(lo.min()), float(hi.max()))
    channel = fake_quant_range(t, lo_w.reshape(shape), hi_w.reshape(shape))
    tensor = fake_quant_range(t, np.float32(lo.min()), np.float32(hi.max()))
    return ((channel - t) ** 2).sum(axis=axes), ((tensor - t) ** 2).sum(axis=axes)


def channel_stats(graph: ModelGraph, feeds: list[Feed], var_names: list[str],
                  cache: CalibrationCache | None = None) -> dict[str, ChannelStats]:
    """:class:`ChannelStats` of NCHW tensors ``var_names`` (channel axis 1) over ``feeds``: two
    fp32 passes (ranges per sample, then the held-out-half errors), cached."""
    names = sorted(set(var_names))
    if not names:
        return {}
    key = calibration_key(graph, feeds, names, RANGE_KIND)
    if key in _MEMO:  # (a sweep builds one config per rate from the same calibration)
        return _MEMO[key]
    path = cache.path(graph.name, key).with_suffix(".channels.npz") if cache else None
    fields = ("lo", "hi", "error_channel", "error_tensor")
    if path is not None and path.is_file():
        with np.load(path) as data:
            if all(f"{f}{i}" in data.files for i in range(len(names)) for f in fields):
                _MEMO[key] = {n: ChannelStats(*(data[f"{f}{i}"] for f in fields)) for i, n in enumerate(names)}
                return _MEMO[key]
    per_sample: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in names}

    def observe(_i: int, _outs: list[np.ndarray], tensors: list[np.ndarray]) -> None:
        for name, tensor in zip(names, tensors):
            t = np.asarray(tensor, np.float32)
            if t.ndim < 2:
                raise ValueError(f"tensor {name} of shape {t.shape} has no channel axis")
            axes = tuple(a for a in range(t.ndim) if a != 1)
            per_sample[name].append((t.min(axis=axes), t.max(axis=axes)))

    compiled = compile_exposed(graph, names)
    run_exposed(graph, feeds, names, observe, desc="channel ranges (depthwise inputs)", compiled=compiled)
    folds = (np.arange(len(feeds)) >= len(feeds) // 2).astype(int)  # first half, second half
    ranges = {}
    for name in names:
        lo, hi = (np.stack([s[k] for s in per_sample[name]]) for k in (0, 1))
        other = [(lo[folds != f].min(axis=0), hi[folds != f].max(axis=0)) for f in (0, 1)]
        ranges[name] = (lo.min(axis=0), hi.max(axis=0), other)
    errors = {n: (np.zeros_like(ranges[n][0], np.float64), np.zeros_like(ranges[n][0], np.float64)) for n in names}

    def measure(index: int, _outs: list[np.ndarray], tensors: list[np.ndarray]) -> None:
        for name, tensor in zip(names, tensors):
            channel, tensor_error = quantization_errors(np.asarray(tensor, np.float32), *ranges[name][2][folds[index]])
            errors[name][0][:] += channel
            errors[name][1][:] += tensor_error

    if len(feeds) >= 2:
        run_exposed(graph, feeds, names, measure, desc="per-channel vs per-tensor (held-out halves)",
                    compiled=compiled)
    stats = {n: ChannelStats(ranges[n][0], ranges[n][1], *errors[n]) for n in names}
    _MEMO[key] = stats
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{f"{f}{i}": getattr(stats[n], f) for i, n in enumerate(names) for f in fields})
    return stats


def weight_energy(layer: Layer, params: dict[str, np.ndarray], channels: int) -> np.ndarray:
    """Per input channel of a depthwise conv, the squared norm of the filter(s) that read it."""
    w = layer.weight_operand(params).astype(np.float64)
    per_output = (w.reshape(w.shape[0], -1) ** 2).sum(axis=1)
    return per_output.reshape(channels, -1).sum(axis=1)


def tensor_range(qp: ActQParams) -> tuple[float, float]:
    """The real range a per-tensor quantizer represents: codes ``0 .. qmax``."""
    return -qp.zero_point * qp.scale, (qp.qmax - qp.zero_point) * qp.scale


def apply_channel_quantizers(graph: ModelGraph, config: PrecisionConfig, feeds: list[Feed],
                             table: LayerTable | None = None, cache: CalibrationCache | None = None) -> int:
    """Give each int8 depthwise conv of ``config`` a per-channel input quantizer where the
    cross-validated error says it is better (see the module docstring) and record the option in
    the provenance; returns the number of layers changed. ``graph`` / ``table``: the graph the
    config's quantizers were calibrated on."""
    table = table or build_layer_table(graph)
    # measured on every depthwise input, int8 here or not: one measurement (cached, memoized)
    # serves the configs of every rate
    layers = [layer for layer in table if layer.kind == "depthwise_conv2d" and layer.weight_param is not None]
    chosen = channel_quantized_layers(table, config)
    stats = channel_stats(graph, feeds, [layer.data_var for layer in layers], cache) if chosen else {}
    changed = 0
    for layer in chosen:
        lp = config.layers[layer.name]
        found = stats[layer.data_var]
        channels = found.lo.size
        if lp.act.per_channel or layer.weight_shape[0] % channels:  # (already done / not one group per channel)
            continue
        if not found.per_channel_wins(weight_energy(layer, graph.params, channels)):
            continue
        t_lo, t_hi = tensor_range(lp.act)
        lo, hi = widened(found.lo, found.hi, t_lo, t_hi)
        lp.act = act_qparams_per_channel(lo, hi, lp.act.bits)
        changed += 1
    config.provenance["channel_act"] = True
    return changed
