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
``[n*l, C]`` times ``[C, s*O]``, each row spread over its ``s`` outputs. A sleep-spindle U-Net's
upsampling neck (``ConvTranspose1d(k=5, s=5)`` up to 7500 samples) took 120 of its 183 ms on
TVM's generic reduction schedule (``benchmarks/kernel_profile.py eeg-spindle-unet``, 2026-12-03).

Only NCHW / IOHW (NCW / IOW) float32 convs with a constant weight are rewritten; the rest stay as
they are.
It runs in the CPU build (:func:`tvm_mpq.target_build.passes.graph_passes`), on fp32 layers (there is
no integer ``conv2d_transpose``: the precision pass keeps them fp32).
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


def non_overlapping(call: relax.Call, weight: np.ndarray) -> bool:
    """Whether ``call`` is a float32 NCHW/IOHW ``conv2d_transpose`` (NCW/IOW ``conv1d_transpose``)
    whose kernel equals its stride, with no padding, output padding, dilation or groups."""
    a = call.attrs
    if weight.ndim not in _LAYOUTS or (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != _LAYOUTS[weight.ndim]:
        return False
    if str(call.args[0].ty.dtype) != "float32" or weight.dtype != np.float32:
        return False
    spatial = weight.ndim - 2
    return (_ints(a.strides) == list(weight.shape[2:]) and not any(_ints(a.padding))
            and not any(_ints(a.output_padding)) and _ints(a.dilation) == [1] * spatial and int(a.groups) == 1)


@tvm.transform.module_pass(opt_level=0, name="TransposeConvAsMatmul")
class TransposeConvAsMatmul:
    """Rewrite every non-overlapping ``conv2d_transpose`` / ``conv1d_transpose`` of every Relax
    function as a matmul and a depth-to-space."""

    def __init__(self) -> None:
        self._conv = is_op("relax.nn.conv2d_transpose")(wildcard(), is_const())
        self._conv1d = is_op("relax.nn.conv1d_transpose")(wildcard(), is_const())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_every_function(mod, (self._conv, self._rewrite), (self._conv1d, self._rewrite))

    @staticmethod
    def _rewrite(expr: relax.Expr, _matches: dict) -> relax.Expr:
        weight = expr.args[1].value.numpy()
        if not non_overlapping(expr, weight):
            return expr
        c, o, *kernel = weight.shape
        n, _, *positions = _ints(expr.args[0].ty.shape)
        d = len(kernel)
        pixels = relax.op.reshape(relax.op.permute_dims(expr.args[0], [0, *range(2, 2 + d), 1]),
                                  [n * int(np.prod(positions)), c])
        # columns ordered (a, b, o): each output pixel's O channels are adjacent in a row, so
        # the depth-to-space into the channels-last graph moves whole channel vectors
        columns = np.ascontiguousarray(weight.transpose(0, *range(2, 2 + d), 1).reshape(c, -1))
        rows = relax.op.matmul(pixels, relax.const(columns))
        blocks = relax.op.reshape(rows, [n, *positions, *kernel, o])  # [n, h, w, s, t, O]
        interleaved = [axis for i in range(d) for axis in (1 + i, 1 + d + i)]
        spread = relax.op.permute_dims(blocks, [0, 1 + 2 * d, *interleaved])  # [n, O, h, s, w, t]
        return relax.op.reshape(spread, [n, o, *(p * k for p, k in zip(positions, kernel))])
