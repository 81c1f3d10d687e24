"""GroupNormByChannel: a group norm written around a channel-splitting reshape, as per-channel
statistics combined per group, so a channels-last graph computes it without transposes.

PyTorch exports ``GroupNorm(G, C)`` as ``Reshape [N, C, H, W] -> [N, G, C/G * H * W]``,
``InstanceNormalization`` over the last axis (affine 1 / 0 per group), ``Reshape`` back and the
per-channel affine; TVM imports the instance norm as ``mean``, ``subtract``, ``variance``, ``add
eps``, ``sqrt``, ``divide``, ``multiply``, ``add``. The reshape depends on the layout, so in a
channels-last build (:class:`~relay_passes.convert_layout.ConvertToChannelsLast`) every group
norm was a transpose to NCHW and one back around it: in adaptive-terrain-diffusion's UNet the
first transpose of the 64-channel 128x128 maps alone took 11.8 of its 126 ms (5 calls,
2026-12-06).

The same numbers from reductions over the spatial axes, which the layout pass carries channels-last:
``m_c = mean(x, [H, W])`` per channel; the group mean ``m_g`` is the mean of its ``C/G``
channels' means (equal counts), a 1x1 conv of the ``[N, C, 1, 1]`` means by a constant averaging
weight; ``d = x - m_g``; the group variance is the mean of the channels' ``mean(d^2, [H, W])``
the same way (the two-pass variance of the instance norm); ``y = d / sqrt(v_g + eps) * s_g +
b_g``. No reshape is left (a per-channel vector combined by reshapes put its transposes and
index arithmetic into the full-map kernels that read it: one of them 6.1 ms for 5 calls).
Float sums are added in another order. The UNet's fp32 build: 0.808 of the time of the build
without this pass, outputs within 4.8e-6 (``python benchmarks/group_norm_by_channel.py``, Xeon,
2026-12-06).

Taken for a float32 4-D input, ``G`` dividing ``C``, the statistics over the last axis of the
``[N, G, C/G * H * W]`` view, constant scale and bias of ``G`` values, and the result reshaped
back to the input's shape. Runs in the channels-last build before the layout change
(:func:`tvm_mpq.target_build.passes.graph_passes`), on every Relax function.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.dpl import is_const, is_op, wildcard

from relay_passes.convert_layout import tensor_shape
from relay_passes.precision_annotation import rewrite_every_function


def _pattern() -> tuple:
    x = wildcard()
    rows = is_op("relax.reshape")(x, wildcard())
    centered = is_op("relax.subtract")(rows, is_op("relax.mean")(rows))
    eps = is_const()
    std = is_op("relax.sqrt")(is_op("relax.add")(is_op("relax.variance")(rows), eps))
    scale, bias = is_const(), is_const()
    affine = is_op("relax.add")(is_op("relax.multiply")(is_op("relax.divide")(centered, std), scale), bias)
    return is_op("relax.reshape")(affine, wildcard()), x, rows, eps, scale, bias


def _over_last_axis(call: relax.Call) -> bool:
    axis = call.attrs.axis
    return axis is not None and [int(a) for a in axis] in ([2], [-1]) and bool(call.attrs.keepdims)


def _group_values(const: Constant, groups: int) -> np.ndarray | None:
    value = const.value.numpy()
    return value.reshape(groups).astype(np.float32) if value.size == groups else None


def _group_average(stat: relax.Expr, groups: int, channels: int) -> relax.Expr:
    """``[N, C, 1, 1]`` per-channel values -> each channel's group mean, as a 1x1 conv whose
    weight averages the ``C/G`` channels of each group (``C^2`` multiplies: no reshape, which the
    channels-last layout would transpose, and a per-channel vector the full-map kernels read as one)."""
    per = channels // groups
    weight = np.kron(np.eye(groups, dtype=np.float32), np.full((per, per), 1.0 / per, np.float32))
    return relax.op.nn.conv2d(stat, relax.const(weight.reshape(channels, channels, 1, 1)))


def group_norm_by_channel(root: relax.Call, matches: dict, x_pat, rows_pat, eps_pat, scale_pat, bias_pat) -> relax.Expr:
    """The per-channel form of one matched group norm, or ``root`` where it does not apply."""
    x, rows = matches[x_pat], matches[rows_pat]
    shape, view = tensor_shape(x), tensor_shape(rows)
    if shape is None or view is None or len(shape) != 4 or len(view) != 3 or tensor_shape(root) != shape:
        return root
    if str(x.ty.dtype) != "float32":
        return root
    n, channels, h, w = shape
    groups = view[1]
    if view[0] != n or channels % groups or view[2] != channels // groups * h * w:
        return root
    stats = [v for v in matches.values() if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op)
             and v.op.name in ("relax.mean", "relax.variance")]
    if not stats or not all(_over_last_axis(call) for call in stats):
        return root
    eps = matches[eps_pat].value.numpy()
    scale, bias = _group_values(matches[scale_pat], groups), _group_values(matches[bias_pat], groups)
    if eps.size != 1 or scale is None or bias is None:
        return root
    per = channels // groups
    group_mean = _group_average(relax.op.mean(x, axis=[2, 3], keepdims=True), groups, channels)
    centered = relax.op.subtract(x, group_mean)
    variance = _group_average(relax.op.mean(relax.op.multiply(centered, centered), axis=[2, 3], keepdims=True),
                              groups, channels)
    std = relax.op.sqrt(relax.op.add(variance, relax.const(float(eps.reshape(())), "float32")))
    normalized = relax.op.divide(centered, std)
    channel_scale = relax.const(np.repeat(scale, per).reshape(1, channels, 1, 1))
    channel_bias = relax.const(np.repeat(bias, per).reshape(1, channels, 1, 1))
    return relax.op.add(relax.op.multiply(normalized, channel_scale), channel_bias)


@tvm.transform.module_pass(opt_level=0, name="GroupNormByChannel")
class GroupNormByChannel:
    """Rewrite every group norm written around a channel-splitting reshape as per-channel
    statistics combined per group, in every Relax function (see the module docstring)."""

    def __init__(self) -> None:
        self._root, *self._parts = _pattern()

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_every_function(
            mod, (self._root, lambda expr, matches: group_norm_by_channel(expr, matches, *self._parts)))


__all__ = ["GroupNormByChannel", "group_norm_by_channel"]
