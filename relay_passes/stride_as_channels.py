"""StrideAsChannels: a strided conv along a row over few channels as a stride-1 conv over the
stride's phases (space-to-depth).

Audio front ends convolve the raw waveform, one channel, with long kernels at a stride: pyannote's
SincNet ``Conv1d(1, 80, 251, stride=10)``, openWakeWord's STFT (512 taps, stride 160), CREPE's
first layer (512 taps, stride 4). The CPU conv kernels reduce over input channels in groups (4 for
``vpdpbusd``, the fp32 kernels one channel per multiply-add over the output channels' vector), so
one input channel leaves the int8 dot product three quarters empty and every tap a strided load:
pyannote's SincNet conv took 6.1 ms int8 against 5.9 ms fp32 (``benchmarks/kernel_profile.py``).

With ``x`` the row ``[N, C, 1, L]`` (after :class:`~relay_passes.conv_on_rows.ConvOnRows`),
stride ``s`` and ``K`` taps, write each position as ``m * s + r``: the row reshaped to
``[N, C, M, s]`` and its phases moved to the channels, ``[N, C * s, 1, M]``, is convolved at
stride 1 with ``Q = ceil(K / s)`` taps by the weight ``w2[o, c * s + r, 0, q] = w[o, c, 0,
q * s + r]`` (zero for ``q * s + r >= K``): ``y[p] = sum_{c,r,q} w[o, c, q s + r] x[c, (p + q) s
+ r]``, the definition's products. The row is first padded by the conv's own padding (zeros,
its semantics for float and integer data alike) and then cut or zero-extended to ``M * s``
values, ``M = P + Q - 1`` for ``P`` outputs: an extension meets only the zero taps. Integer sums
are unchanged to the bit; float32 sums are added in another order.

Taken when the conv is integer (uint8 / int8 data), along a row, ungrouped, undilated, strided
(``s >= 2``), over at most :data:`MAX_CHANNELS` input channels with ``C * s <=
MAX_PHASE_CHANNELS``; runs in the CPU build right after ``ConvOnRows``, on every Relax function.
Float32 convs are left at their stride: their kernel already sums one tap at a time over the
output channels' vector, and the rewrite measured no faster there (pyannote 1.005, CREPE 0.994,
the STFT 1.19 of the strided build's time; int8 0.78, 0.80, 0.40: ``python
benchmarks/stride_as_channels.py``).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from relay_passes.convert_layout import conv_out_dtype, tensor_shape
from relay_passes.precision_annotation import rewrite_every_function

MAX_CHANNELS = 4
"""Input channels up to which a strided row conv is rewritten (more fill the reduction groups)."""
MAX_PHASE_CHANNELS = 256
"""Largest ``channels * stride`` the rewritten conv may read."""


def _phases(expr: relax.Call) -> relax.Expr:
    a = expr.attrs
    n, c, _, length = tensor_shape(expr.args[0])
    weight = expr.args[1].value.numpy()
    out, _, _, taps = weight.shape
    stride = int(a.strides[1])
    _, left, _, right = (int(p) for p in a.padding)
    padded = length + left + right
    positions = (padded - taps) // stride + 1
    per_phase = -(-taps // stride)
    rows = positions + per_phase - 1
    data = expr.args[0]
    extend = rows * stride - padded
    if left or right or extend > 0:
        data = relax.op.nn.pad(data, [0, 0, 0, 0, 0, 0, left, right + max(extend, 0)])
    if extend < 0:
        data = relax.op.strided_slice(data, axes=[3], begin=[0], end=[rows * stride])
    data = relax.op.reshape(data, [n, c, rows, stride])
    data = relax.op.permute_dims(data, [0, 1, 3, 2])
    data = relax.op.reshape(data, [n, c * stride, 1, rows])
    kernel = np.zeros((out, c, per_phase * stride), weight.dtype)
    kernel[:, :, :taps] = weight[:, :, 0, :]
    kernel = kernel.reshape(out, c, per_phase, stride).transpose(0, 1, 3, 2).reshape(out, c * stride, 1, per_phase)
    return relax.op.nn.conv2d(data, relax.const(np.ascontiguousarray(kernel), str(kernel.dtype)), strides=[1, 1],
                              padding=[0, 0, 0, 0], dilation=[1, 1], groups=1, out_dtype=conv_out_dtype(a))


def _takes(expr: relax.Call) -> bool:
    a = expr.attrs
    shape = tensor_shape(expr.args[0])
    if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NCHW", "OIHW", "NCHW") or shape is None:
        return False
    weight_shape = expr.args[1].value.shape
    top, _, bottom, _ = (int(p) for p in a.padding)
    stride_h, stride = (int(s) for s in a.strides)
    channels = int(shape[1])
    integer = str(expr.args[1].value.dtype) == "int8"  # an integer conv (uint8 / int8 data)
    return (integer and int(shape[2]) == 1 and int(weight_shape[2]) == 1 and int(a.groups) == 1 and top == bottom == 0
            and stride_h == 1 and stride >= 2 and all(int(d) == 1 for d in a.dilation)
            and channels <= MAX_CHANNELS and channels * stride <= MAX_PHASE_CHANNELS)


@tvm.transform.module_pass(opt_level=0, name="StrideAsChannels")
class StrideAsChannels:
    """Rewrite every strided row conv over few channels of every Relax function as a stride-1
    conv over the stride's phases (see the module docstring); other convs are left as they are."""

    def __init__(self) -> None:
        self._conv = is_op("relax.nn.conv2d")(wildcard(), is_const())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_every_function(mod, (self._conv, self._rewrite))

    @staticmethod
    def _rewrite(expr: relax.Expr, _matches: dict) -> relax.Expr:
        return _phases(expr) if _takes(expr) else expr


__all__ = ["MAX_CHANNELS", "MAX_PHASE_CHANNELS", "StrideAsChannels"]
