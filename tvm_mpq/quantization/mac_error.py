"""The expected output error that weight quantization adds to a conv / matmul (bias correction).

A MAC op is linear in its weight, so with ``dW = fake_quant(W) - W`` the error of the layer's
output is ``op(x, dW)`` and its mean over the calibration set is ``op(E[x], dW)``: the batch-mean
input ``E[x]`` (one tensor per layer, collected in one fp32 pass) is all it takes. The mean over
output positions is then computed exactly, zero padding included, from the mean input at each
kernel tap (:func:`tap_means`). Everything is float64 numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tvm_mpq.quantization.quantizers import fake_quant_weight


@dataclass(frozen=True)
class ConvGeometry:
    """A 2-D convolution's attributes (NCHW data, OIHW weight)."""

    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    """top, left, bottom, right"""
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


def tap_means(mean_input: np.ndarray, kernel: tuple[int, int], geometry: ConvGeometry) -> np.ndarray:
    """``T[c, kh, kw]``: the mean, over the conv's output positions, of the (zero-padded) input
    channel ``c`` read by kernel tap ``(kh, kw)``. ``mean_input`` is ``C x H x W``."""
    c, h, w = mean_input.shape
    top, left, bottom, right = geometry.padding
    padded = np.pad(mean_input.astype(np.float64), ((0, 0), (top, bottom), (left, right)))
    sh, sw = geometry.strides
    dh, dw = geometry.dilation
    kh_n, kw_n = kernel
    out_h = (h + top + bottom - dh * (kh_n - 1) - 1) // sh + 1
    out_w = (w + left + right - dw * (kw_n - 1) - 1) // sw + 1
    taps = np.empty((c, kh_n, kw_n))
    for kh in range(kh_n):
        for kw in range(kw_n):
            window = padded[:, kh * dh: kh * dh + sh * (out_h - 1) + 1: sh, kw * dw: kw * dw + sw * (out_w - 1) + 1: sw]
            taps[:, kh, kw] = window.mean(axis=(1, 2))
    return taps


def conv_output_mean(weight: np.ndarray, mean_input: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
    """Per output channel, the mean over output positions of ``conv2d(mean_input, weight)``
    (no bias). ``weight`` is ``O x I/groups x KH x KW``; ``mean_input`` ``C x H x W``."""
    out_ch, in_per_group = weight.shape[:2]
    taps = tap_means(mean_input, weight.shape[2:], geometry)
    per_group = out_ch // geometry.groups
    result = np.empty(out_ch)
    w = weight.astype(np.float64)
    for g in range(geometry.groups):
        rows = slice(g * per_group, (g + 1) * per_group)
        t = taps[g * in_per_group:(g + 1) * in_per_group]
        result[rows] = np.einsum("oihw,ihw->o", w[rows], t)
    return result


def matmul_output_mean(weight: np.ndarray, mean_input: np.ndarray) -> np.ndarray:
    """Per output column, the mean over rows of ``mean_input @ weight`` (``weight`` is ``K x N``,
    ``mean_input`` ``... x K``)."""
    rows = mean_input.reshape(-1, mean_input.shape[-1]).astype(np.float64).mean(axis=0)
    return rows @ weight.astype(np.float64)


def expected_weight_error(weight: np.ndarray, bits: int, channel_axis: int, mean_input: np.ndarray,
                          geometry: ConvGeometry | None, scales: np.ndarray | None = None,
                          quantized: np.ndarray | None = None) -> np.ndarray:
    """``E[op(x, fake_quant(W)) - op(x, W)]`` per output channel: conv2d when ``geometry`` is
    given (``mean_input`` ``C x H x W``), else matmul (``weight`` ``K x N``); ``scales``: the
    per-channel weight scales the layer is quantized with (default: max-abs). Subtract it from
    the layer's bias to correct the layer (float64). ``quantized``: the weight the layer runs
    with, when it is not ``W`` rounded to nearest (Hessian-weighted rounding)."""
    if quantized is None:
        quantized = fake_quant_weight(weight, bits, channel_axis, scales)
    delta = quantized.astype(np.float64) - weight.astype(np.float64)
    if geometry is not None:
        return conv_output_mean(delta, mean_input, geometry)
    return matmul_output_mean(delta, mean_input)
