"""Hessian-weighted weight rounding: round each weight up or down so the layer's *output* error is
smallest, not each weight's own.

Round-to-nearest minimises every ``|dW|`` on its own. What a layer's output suffers is
``E[(dW x)^2] = dW^T H dW`` per output channel, ``H = E[x x^T]`` the second moment of the layer's
input patches: errors of weights that read correlated inputs add up or cancel. AdaRound (Nagel et
al., 2020) showed that picking, per weight, the grid point below or above it by that quadratic
(its second-order proxy of the task loss) recovers most of what round-to-nearest loses at 8 and
4 bits. Here the proxy is minimised by coordinate descent from round-to-nearest: each weight in
turn moves to its other neighbour on the grid when that lowers ``dW^T H dW`` (exact change
``2 step g_i + step^2 H_ii``, ``g = H dW``), a few sweeps. The grid and the scales are the
product's (:func:`~tvm_mpq.quantization.quantizers.weight_scales`): only the rounding direction
changes, so the integer kernels, the QDQ simulation and the ONNX export run the result unchanged.

With bias correction the mean error is removed afterwards, so ``H`` is the covariance (centred
second moment) of the patches: the rounding minimises the part bias correction cannot remove.

A layer's choice is stored as the set of weights whose rounding differs from round-to-nearest
(:func:`encode_flips` / :func:`decode_flips`: a bit per weight, zlib, base64).

Everything here is numpy: patches of a conv input (:func:`patch_moments`), the descent
(:func:`hessian_flips`), the rounded codes and weight (:func:`rounded_codes`, :func:`rounded_weight`).
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass

import numpy as np

from tvm_mpq.quantization.mac_error import ConvGeometry
from tvm_mpq.quantization.quantizers import broadcast_scales, weight_codes


@dataclass
class PatchMoments:
    """Running sums of a layer's input patches: ``outer[g]`` = sum of ``p p^T`` and ``total[g]`` =
    sum of ``p`` over every patch of group ``g`` (one group for a dense conv or a matmul, one per
    channel for a depthwise conv), ``count`` patches each."""

    outer: np.ndarray
    total: np.ndarray
    count: int = 0

    def add(self, other: "PatchMoments") -> "PatchMoments":
        return PatchMoments(self.outer + other.outer, self.total + other.total, self.count + other.count)

    def hessians(self, centered: bool) -> np.ndarray:
        """``E[p p^T]`` per group (``centered``: minus ``E[p] E[p]^T``), shape ``(groups, K, K)``."""
        second = self.outer / max(self.count, 1)
        if not centered:
            return second
        mean = self.total / max(self.count, 1)
        return second - mean[:, :, None] * mean[:, None, :]


def conv_patches(x: np.ndarray, kernel: tuple[int, int], geometry: ConvGeometry) -> np.ndarray:
    """The input patches of a conv2d (NCHW input ``x``), grouped: shape ``(groups, I*KH*KW,
    N*OH*OW)``, with the patch index in the order of a flattened ``I x KH x KW`` weight row."""
    n, c, h, w = x.shape
    top, left, bottom, right = geometry.padding
    padded = np.pad(x.astype(np.float32), ((0, 0), (0, 0), (top, bottom), (left, right)))
    sh, sw = geometry.strides
    dh, dw = geometry.dilation
    kh_n, kw_n = kernel
    out_h = (h + top + bottom - dh * (kh_n - 1) - 1) // sh + 1
    out_w = (w + left + right - dw * (kw_n - 1) - 1) // sw + 1
    groups = geometry.groups
    per_group = c // groups
    taps = np.empty((groups, per_group, kh_n, kw_n, n, out_h, out_w), np.float32)
    for kh in range(kh_n):
        for kw in range(kw_n):
            window = padded[:, :, kh * dh: kh * dh + sh * (out_h - 1) + 1: sh, kw * dw: kw * dw + sw * (out_w - 1) + 1: sw]
            taps[:, :, kh, kw] = window.reshape(n, groups, per_group, out_h, out_w).transpose(1, 2, 0, 3, 4)
    return taps.reshape(groups, per_group * kh_n * kw_n, n * out_h * out_w)


def patch_moments(x: np.ndarray, kernel: tuple[int, int] | None, geometry: ConvGeometry | None) -> PatchMoments:
    """The patch sums of one batch of a layer's input: a conv2d's (``geometry`` and ``kernel``
    given, ``x`` NCHW) or a matmul's (``x`` ``... x K``: every row a patch)."""
    if geometry is None:
        rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
        return PatchMoments((rows.T @ rows)[None], rows.sum(axis=0)[None], rows.shape[0])
    patches = conv_patches(x, kernel, geometry)
    outer = np.einsum("gkm,gjm->gkj", patches, patches, dtype=np.float64) if patches.shape[0] > 1 \
        else (patches[0].astype(np.float64) @ patches[0].T.astype(np.float64))[None]
    return PatchMoments(outer, patches.sum(axis=2, dtype=np.float64), patches.shape[2])


def weight_rows(weight: np.ndarray, channel_axis: int) -> np.ndarray:
    """The weight as one row per output channel (a conv's ``O x (I*KH*KW)``, a matmul weight
    ``K x N`` transposed)."""
    return np.moveaxis(weight, channel_axis, 0).reshape(weight.shape[channel_axis], -1)


def rounded_codes(weight: np.ndarray, scales: np.ndarray, bits: int, channel_axis: int,
                  flips: np.ndarray | None) -> np.ndarray:
    """The codes of ``weight`` rounded to nearest, except where ``flips`` (bool, the weight's
    shape) is set: there the other grid point next to the weight (float32 codes)."""
    codes = weight_codes(weight, bits, channel_axis, np.asarray(scales, np.float32))
    if flips is None:
        return codes
    qmax = np.float32(2 ** (bits - 1) - 1)
    s = broadcast_scales(np.asarray(scales, np.float32), weight.ndim, channel_axis)
    floor = np.floor(weight.astype(np.float32) / s)
    other = np.clip(np.where(codes == floor, floor + 1, floor), -qmax, qmax)
    return np.where(flips, other, codes).astype(np.float32)


def rounded_weight(weight: np.ndarray, scales: np.ndarray, bits: int, channel_axis: int,
                   flips: np.ndarray | None) -> np.ndarray:
    """The weight the layer runs with: :func:`rounded_codes` times the scales (float32)."""
    codes = rounded_codes(weight, scales, bits, channel_axis, flips)
    return (codes * broadcast_scales(np.asarray(scales, np.float32), weight.ndim, channel_axis)).astype(np.float32)


def hessian_flips(weight: np.ndarray, scales: np.ndarray, bits: int, channel_axis: int,
                  hessians: np.ndarray, sweeps: int = 3) -> np.ndarray:
    """Which weights to round the other way (bool, the weight's shape): coordinate descent on
    ``sum_rows dW_r^T H_g(r) dW_r`` from round-to-nearest. ``hessians``: ``(groups, K, K)``, row
    ``r`` (output channel) reads group ``r // (rows / groups)``; ``K`` the row length."""
    rows = weight_rows(weight.astype(np.float64), channel_axis)
    n_rows, k = rows.shape
    groups = hessians.shape[0]
    if hessians.shape[1:] != (k, k) or n_rows % groups:
        raise ValueError(f"hessians of shape {hessians.shape} for {n_rows} weight rows of {k}")
    qmax = 2 ** (bits - 1) - 1
    scale = np.asarray(scales, np.float64).reshape(-1, 1)
    codes = weight_rows(weight_codes(weight, bits, channel_axis, np.asarray(scales, np.float32)),
                        channel_axis).astype(np.float64)
    nearest = codes.copy()
    floor = np.floor(weight_rows(weight.astype(np.float32) / broadcast_scales(
        np.asarray(scales, np.float32), weight.ndim, channel_axis), channel_axis)).astype(np.float64)
    h_rows = hessians[np.arange(n_rows) // (n_rows // groups)] if groups > 1 else None
    error = codes * scale - rows
    grad = np.einsum("rk,rkj->rj", error, h_rows) if h_rows is not None else error @ hessians[0]
    diag = np.einsum("rkk->rk", h_rows) if h_rows is not None else np.broadcast_to(np.diag(hessians[0]), (n_rows, k))
    for _ in range(sweeps):
        changed = 0
        for i in range(k):
            alt = np.clip(np.where(codes[:, i] == floor[:, i], floor[:, i] + 1, floor[:, i]), -qmax, qmax)
            step = (alt - codes[:, i]) * scale[:, 0]
            take = np.flatnonzero(2 * step * grad[:, i] + step ** 2 * diag[:, i] < 0)
            if take.size == 0:
                continue
            codes[take, i] = alt[take]
            grad[take] += step[take, None] * (h_rows[take, i, :] if h_rows is not None else hessians[0][i][None, :])
            changed += take.size
        if not changed:
            break
    flips = codes != nearest
    return np.moveaxis(flips.reshape(np.moveaxis(weight, channel_axis, 0).shape), 0, channel_axis)


def encode_flips(flips: np.ndarray) -> str:
    """A flip mask as text (a bit per weight in C order, zlib, base64)."""
    return base64.b64encode(zlib.compress(np.packbits(flips.reshape(-1)).tobytes(), 9)).decode("ascii")


def decode_flips(text: str, shape: tuple[int, ...]) -> np.ndarray:
    """The mask :func:`encode_flips` wrote, for a weight of ``shape``. ValueError when the text
    is not such a mask or holds a different number of weights."""
    try:
        raw = np.frombuffer(zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True)), np.uint8)
    except (ValueError, zlib.error, UnicodeEncodeError) as err:
        raise ValueError(f"not a weight-rounding mask ({err})") from None
    size = int(np.prod(shape))
    if raw.size != (size + 7) // 8:
        raise ValueError(f"a weight-rounding mask of {raw.size * 8} bits for a weight of {size} values")
    return np.unpackbits(raw, count=size).astype(bool).reshape(shape)
