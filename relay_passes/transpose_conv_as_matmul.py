"""TransposeConvAsMatmul: a transposed conv (2-D or 1-D) whose kernel equals its stride becomes a
matmul and a pixel shuffle.

With kernel == stride, no padding and no dilation, the output windows of a ``conv2d_transpose``
do not overlap: every input pixel writes its own ``s x s`` output block,

    y[n, o, i*s + a, j*s + b] = sum_c x[n, c, i, j] * W[c, o, a, b]

which is one GEMM of the pixels ``[n*h*w, C]`` with the weight as ``[C, s*s*O]``, then a
reshape and transpose that spread each row over its block (depth-to-space). Segmentation heads
(DBNet's ``ConvTranspose(k=2, s=2)``) upsample this way; TVM has no CPU schedule for
``conv2d_transpose``, so it ran on the default one: 110 of rapidocr-dbnet's 119 ms
(``tvm_mpq.runtime.profiler``, 2026-12-01). As a matmul with a constant weight it runs on
the GEMM kernel (:class:`tvm_mpq.kernels.cpu_mac.MatmulConstWeight`). The sums are the same
products in another order (float32 rounding differs in the last bits).

``conv1d_transpose`` (``NCW`` / ``IOW``) is the same with one spatial axis: the positions
``[n*l, C]`` times ``[C, s*O]``, each row spread over its ``s`` outputs. An output padding
(PyTorch's ``ConvTranspose2d(k=3, s=2, p=1, output_padding=1)``, which doubles a map's size) only
moves the crop's end: the last rows and columns it adds are the windows' own sums past the
padding, or zeros past the last window. A sleep-spindle U-Net's
upsampling neck (``ConvTranspose1d(k=5, s=5)`` up to 7500 samples) took 120 of its 183 ms on
TVM's generic reduction schedule (``benchmarks/kernel_profile.py eeg-spindle-unet``, 2026-12-03).

Only NCHW / IOHW (NCW / IOW) convs with a constant weight are rewritten, float32, or integer
codes (uint8 / int8 data, int8 weight, int32 result: an int8 layer the precision pass lowered,
whose GEMM then runs on the int8 kernels and whose shifted blocks add in int32, exactly); the
rest stay as they are. It runs in the CPU build (:func:`tvm_mpq.target_build.passes.graph_passes`).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from relay_passes.precision_annotation import rewrite_every_function


def _ints(values) -> list[int]:
    return [int(v) for v in values]


_LAYOUTS = {4: ("NCHW", "IOHW", "NCHW"), 3: ("NCW", "IOW", "NCW")}


def as_matmul_shape(call: relax.Call, weight: np.ndarray) -> bool:
    """Whether ``call`` is a float32 NCHW/IOHW ``conv2d_transpose`` (NCW/IOW ``conv1d_transpose``)
    the rewrite takes: any kernel, stride, padding and output padding, no dilation or groups."""
    a = call.attrs
    if weight.ndim not in _LAYOUTS or (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != _LAYOUTS[weight.ndim]:
        return False
    data_dtype, out_dtype = str(call.args[0].ty.dtype), str(call.ty.dtype)
    floats = data_dtype == "float32" and weight.dtype == np.float32
    codes = data_dtype in ("uint8", "int8") and weight.dtype == np.int8 and out_dtype == "int32"
    if not (floats or codes):
        return False
    spatial = weight.ndim - 2
    return _ints(a.dilation) == [1] * spatial and int(a.groups) == 1


@tvm.transform.module_pass(opt_level=0, name="TransposeConvAsMatmul")
class TransposeConvAsMatmul:
    """Rewrite every ``conv2d_transpose`` / ``conv1d_transpose`` of every Relax function (no
    groups or dilation) as a matmul, a depth-to-space and, where windows overlap, the overlap-add
    of the shifted blocks, cropped to the padding (and grown by zeros where an output padding
    reaches past the last window)."""

    def __init__(self) -> None:
        self._conv = is_op("relax.nn.conv2d_transpose")(wildcard(), is_const())
        self._conv1d = is_op("relax.nn.conv1d_transpose")(wildcard(), is_const())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_every_function(mod, (self._conv, self._rewrite), (self._conv1d, self._rewrite))

    @staticmethod
    def _rewrite(expr: relax.Expr, _matches: dict) -> relax.Expr:
        weight = expr.args[1].value.numpy()
        if not as_matmul_shape(expr, weight):
            return expr
        c, o, *kernel = weight.shape
        n, _, *positions = _ints(expr.args[0].ty.shape)
        d = len(kernel)
        strides = _ints(expr.attrs.strides)
        taps = [-(-k // s) for k, s in zip(kernel, strides)]  # m: output blocks each input position reaches
        padded = np.zeros((c, o, *(m * s for m, s in zip(taps, strides))), weight.dtype)  # kernel -> m * s, zeros
        padded[(slice(None), slice(None), *(slice(0, k) for k in kernel))] = weight
        pixels = relax.op.reshape(relax.op.permute_dims(expr.args[0], [0, *range(2, 2 + d), 1]),
                                  [n * int(np.prod(positions)), c])
        # columns ordered (m, s..., o): each output pixel's O channels are adjacent in a row, so
        # the depth-to-space into the channels-last graph moves whole channel vectors
        columns = np.ascontiguousarray(padded.transpose(0, *range(2, 2 + d), 1).reshape(c, -1))
        rows = relax.op.matmul(pixels, relax.const(columns), out_dtype=str(expr.ty.dtype))
        split = [dim for m, s in zip(taps, strides) for dim in (m, s)]
        blocks = relax.op.reshape(rows, [n, *positions, *split, o])  # [n, h, w, m1, s1, m2, s2, O]
        summed = _overlap_add(blocks, [n, *positions, *strides, o], taps)  # [n, h + m1 - 1, w + m2 - 1, s1, s2, O]
        grown = [p + m - 1 for p, m in zip(positions, taps)]
        interleaved = [axis for i in range(d) for axis in (1 + i, 1 + d + i)]
        spread = relax.op.permute_dims(summed, [0, 1 + 2 * d, *interleaved])  # [n, O, h', s1, w', s2]
        full = relax.op.reshape(spread, [n, o, *(g * s for g, s in zip(grown, strides))])
        pads, extra = _ints(expr.attrs.padding), _ints(expr.attrs.output_padding)
        ends = [(p - 1) * s + k - pads[d + i] + extra[i]
                for i, (p, s, k) in enumerate(zip(positions, strides, kernel))]
        sizes = [g * s for g, s in zip(grown, strides)]
        if any(end > size for end, size in zip(ends, sizes)):  # an output padding past the last window: zeros
            full = relax.op.nn.pad(full, [0, 0, 0, 0] + [w for end, size in zip(ends, sizes) for w in (0, max(0, end - size))])
            sizes = [max(end, size) for end, size in zip(ends, sizes)]
        if pads[:d] == [0] * d and ends == sizes:
            return full
        return relax.op.strided_slice(full, list(range(2, 2 + d)), pads[:d], ends)


def _overlap_add(blocks: relax.Expr, unit_shape: list[int], taps: list[int]) -> relax.Expr:
    """Sum over the ``m`` blocks of every spatial axis, block ``j`` shifted ``j`` positions on:
    ``[n, p..., (m, s)..., O]`` -> ``[n, (p + m - 1)..., s..., O]`` (``unit_shape``: the
    shape with every ``m`` 1, ``[n, p..., s..., O]``)."""
    d = len(taps)
    if all(m == 1 for m in taps):  # kernel == stride: no overlap, only the unit axes go
        return relax.op.reshape(blocks, unit_shape)
    tap_axes = [1 + d + 2 * i for i in range(d)]
    total = None
    for offsets in np.ndindex(*taps):
        part = relax.op.squeeze(relax.op.strided_slice(blocks, tap_axes, list(offsets), [j + 1 for j in offsets]),
                                tap_axes)  # [n, p..., s..., O]
        width = [0, 0] * (2 + 2 * d)
        for i in range(d):
            width[2 * (1 + i)], width[2 * (1 + i) + 1] = offsets[i], taps[i] - 1 - offsets[i]
        part = relax.op.nn.pad(part, width)
        total = part if total is None else relax.op.add(total, part)
    return total
