"""Weight and activation quantizers (docs/design.md "Definitions").

* weights: symmetric, per output channel, ``scale = max|W| / (2^(b-1) - 1)``,
  ``q = clip(round(W / scale), -(2^(b-1)-1), 2^(b-1)-1)``;
* activations: asymmetric, per tensor, unsigned: ``scale = (max - min) / (2^b - 1)`` with the
  range widened to contain 0, ``zero_point = clip(round(-min / scale), 0, 2^b - 1)``,
  ``q = clip(round(x / scale) + zero_point, 0, 2^b - 1)``; or the same per channel (axis 1 of
  an NCHW tensor, :data:`ACT_CHANNEL_AXIS`), one range per channel: the input of a depthwise
  conv, whose every output channel reads one input channel (:mod:`tvm_mpq.ptq.channel_ranges`).

Rounding is half-to-even (``np.round``), the same as TVM's ``round`` and ``relax.op.quantize``;
every step is float32 so the Relax simulation (``relay_passes.simulate_quantization``)
reproduces these values bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


ACT_CHANNEL_AXIS = 1
"""The axis a per-channel activation quantizer runs along (channels of an NCHW conv input)."""


@dataclass(frozen=True)
class ActQParams:
    """Asymmetric activation quantizer: per tensor (``scale`` a float, ``zero_point`` an int)
    or per channel along :data:`ACT_CHANNEL_AXIS` (both tuples, one entry per channel).
    Hashable either way (the precision pass keys a tensor's integer forms by it)."""

    scale: float | tuple[float, ...]
    zero_point: int | tuple[int, ...]
    bits: int

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1

    @property
    def per_channel(self) -> bool:
        return isinstance(self.scale, tuple)

    @property
    def channels(self) -> int | None:
        """The number of channels of a per-channel quantizer (None per tensor)."""
        return len(self.scale) if isinstance(self.scale, tuple) else None

    def scale_array(self, ndim: int) -> np.ndarray:
        """The scale(s) as float32, broadcastable against an ``ndim``-d tensor (a 0-d array
        per tensor, shape ``[1, C, 1, ...]`` per channel)."""
        return self._broadcast(np.asarray(self.scale, np.float32), ndim)

    def zero_point_array(self, ndim: int) -> np.ndarray:
        """The zero point(s) as float32, broadcast like :meth:`scale_array`."""
        return self._broadcast(np.asarray(self.zero_point, np.float32), ndim)

    def _broadcast(self, values: np.ndarray, ndim: int) -> np.ndarray:
        if not self.per_channel:
            return values
        if ndim <= ACT_CHANNEL_AXIS:
            raise ValueError(f"a per-channel activation quantizer needs a tensor of rank > {ACT_CHANNEL_AXIS}, not {ndim}")
        return broadcast_scales(values, ndim, ACT_CHANNEL_AXIS)

    def key(self) -> str:
        """A short stable text naming this quantizer (per channel: the channel count and a hash)."""
        if not self.per_channel:
            return f"{self.scale:.9g}/{self.zero_point}/{self.bits}"
        return f"c{self.channels}:{hash((self.scale, self.zero_point)) & 0xFFFFFFFF:08x}/{self.bits}"

    def describe(self) -> str:
        """``scale 0.0235 zero point 128`` or ``per channel (32): scale 0.0011..0.0235``."""
        if not self.per_channel:
            return f"scale {self.scale:.6g} zero point {self.zero_point}"
        return (f"per channel ({self.channels}): scale {min(self.scale):.6g}..{max(self.scale):.6g}, "
                f"zero point {min(self.zero_point)}..{max(self.zero_point)}")

    def to_json(self) -> dict:
        if self.per_channel:
            return {"scale": list(self.scale), "zero_point": list(self.zero_point), "bits": self.bits}
        return {"scale": self.scale, "zero_point": self.zero_point, "bits": self.bits}

    @staticmethod
    def from_json(data: dict) -> "ActQParams":
        """ValueError for a zero point that is not a whole number (3.7 is no code)."""
        scale, zero_point = data["scale"], data["zero_point"]
        if isinstance(scale, list) or isinstance(zero_point, list):
            if not isinstance(scale, list) or not isinstance(zero_point, list) or len(scale) != len(zero_point) \
                    or not scale:
                raise ValueError("per-channel scale and zero_point must be lists of one length")
            return ActQParams(tuple(float(s) for s in scale), tuple(_code(z) for z in zero_point), int(data["bits"]))
        return ActQParams(float(scale), _code(zero_point), int(data["bits"]))

    def is_valid(self) -> bool:
        """Every scale finite, within :data:`SCALE_RANGE` (a float32 grid whose codes neither
        overflow nor underflow), every zero point a code."""
        scales = np.asarray(self.scale, np.float64)
        zps = np.asarray(self.zero_point)
        lo, hi = SCALE_RANGE
        return bool(np.all(np.isfinite(scales)) and np.all(scales >= lo) and np.all(scales <= hi)
                    and np.all(zps >= 0) and np.all(zps <= self.qmax))


SCALE_RANGE = (1e-30, 1e30)
"""The activation scales a quantizer may have: the grid of 256 codes stays inside float32's
normal range (a scale of 1e300 overflows to Inf in float32 and the int8 model outputs 0)."""


def _code(value: object) -> int:
    """A zero point read from JSON: a whole number (``3`` or ``3.0``), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ValueError(f"zero_point {value!r} is not a whole number")
    return int(value)


def act_qparams(lo: float, hi: float, bits: int) -> ActQParams:
    """Asymmetric qparams for the range [lo, hi] (widened to contain 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmax = 2**bits - 1
    scale = float(np.float32((hi - lo) / qmax)) if hi > lo else 1.0
    zero_point = int(np.clip(np.round(-lo / scale), 0, qmax))
    return ActQParams(scale, zero_point, bits)


def act_qparams_per_channel(lo: np.ndarray, hi: np.ndarray, bits: int) -> ActQParams:
    """:func:`act_qparams` of each channel's range ``[lo[c], hi[c]]``, as one per-channel quantizer."""
    per = [act_qparams(a, b, bits) for a, b in zip(np.asarray(lo).reshape(-1), np.asarray(hi).reshape(-1))]
    return ActQParams(tuple(q.scale for q in per), tuple(q.zero_point for q in per), bits)


def fake_quant_activation(x: np.ndarray, qp: ActQParams) -> np.ndarray:
    """Quantize then dequantize ``x`` (float32 arithmetic, same op order as the Relax pass)."""
    s = qp.scale_array(x.ndim)
    zp = qp.zero_point_array(x.ndim)
    q = np.clip(np.round(x.astype(np.float32) / s) + zp, np.float32(0), np.float32(qp.qmax))
    return ((q - zp) * s).astype(np.float32)


SCALE_FLOOR = 2.0**-16
"""A channel's weight scale is at least this fraction of the layer's largest: near-dead channels
(max |W| ~ 1e-9 after batch-norm folding, pruned filters) then quantize to zero instead of
getting a scale so small that their bias overflows int32 at ``s_x * s_w``."""


def weight_scales(w: np.ndarray, bits: int, channel_axis: int) -> np.ndarray:
    """Per-output-channel symmetric scales (see :data:`SCALE_FLOOR`; 1.0 for an all-zero
    weight), float32."""
    qmax = 2 ** (bits - 1) - 1
    axes = tuple(a for a in range(w.ndim) if a != channel_axis % w.ndim)
    peak = np.abs(w).max(axis=axes).astype(np.float32)
    peak = np.maximum(peak, np.float32(peak.max() * SCALE_FLOOR))
    return np.where(peak > 0, peak / np.float32(qmax), np.float32(1.0)).astype(np.float32)


def broadcast_scales(scales: np.ndarray, ndim: int, channel_axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[channel_axis % ndim] = scales.size
    return scales.reshape(shape)


def weight_codes(w: np.ndarray, bits: int, channel_axis: int, scales: np.ndarray | None = None) -> np.ndarray:
    """Round-to-nearest codes of a weight tensor at its per-channel ``scales`` (default: max-abs),
    clipped to +-(2^(b-1) - 1), as float32."""
    qmax = np.float32(2 ** (bits - 1) - 1)
    s = broadcast_scales(weight_scales(w, bits, channel_axis) if scales is None else scales, w.ndim, channel_axis)
    return np.clip(np.round(w.astype(np.float32) / s), -qmax, qmax)


def fake_quant_weight(w: np.ndarray, bits: int, channel_axis: int,
                      scales: np.ndarray | None = None) -> np.ndarray:
    """Symmetric per-channel quantize-dequantize of a weight tensor."""
    s = broadcast_scales(weight_scales(w, bits, channel_axis) if scales is None else scales, w.ndim, channel_axis)
    return (weight_codes(w, bits, channel_axis, scales) * s).astype(np.float32)
