"""Weight and activation quantizers (docs/design.md "Definitions").

* weights: symmetric, per output channel, ``scale = max|W| / (2^(b-1) - 1)``,
  ``q = clip(round(W / scale), -(2^(b-1)-1), 2^(b-1)-1)``;
* activations: asymmetric, per tensor, unsigned: ``scale = (max - min) / (2^b - 1)`` with the
  range widened to contain 0, ``zero_point = clip(round(-min / scale), 0, 2^b - 1)``,
  ``q = clip(round(x / scale) + zero_point, 0, 2^b - 1)``.

Rounding is half-to-even (``np.round``), the same as TVM's ``round`` and ``relax.op.quantize``;
every step is float32 so the Relax simulation (``relay_passes.simulate_quantization``)
reproduces these values bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ActQParams:
    """Per-tensor asymmetric activation quantizer."""

    scale: float
    zero_point: int
    bits: int

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1

    def to_json(self) -> dict:
        return {"scale": self.scale, "zero_point": self.zero_point, "bits": self.bits}

    @staticmethod
    def from_json(data: dict) -> "ActQParams":
        return ActQParams(float(data["scale"]), int(data["zero_point"]), int(data["bits"]))


def act_qparams(lo: float, hi: float, bits: int) -> ActQParams:
    """Asymmetric qparams for the range [lo, hi] (widened to contain 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmax = 2**bits - 1
    scale = float(np.float32((hi - lo) / qmax)) if hi > lo else 1.0
    zero_point = int(np.clip(np.round(-lo / scale), 0, qmax))
    return ActQParams(scale, zero_point, bits)


def fake_quant_activation(x: np.ndarray, qp: ActQParams) -> np.ndarray:
    """Quantize then dequantize ``x`` (float32 arithmetic, same op order as the Relax pass)."""
    s = np.float32(qp.scale)
    zp = np.float32(qp.zero_point)
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


def fake_quant_weight(w: np.ndarray, bits: int, channel_axis: int,
                      scales: np.ndarray | None = None) -> np.ndarray:
    """Symmetric per-channel quantize-dequantize of a weight tensor."""
    qmax = np.float32(2 ** (bits - 1) - 1)
    s = broadcast_scales(weight_scales(w, bits, channel_axis) if scales is None else scales, w.ndim, channel_axis)
    q = np.clip(np.round(w.astype(np.float32) / s), -qmax, qmax)
    return (q * s).astype(np.float32)
