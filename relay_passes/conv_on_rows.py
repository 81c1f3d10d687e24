"""ConvOnRows: one-dimensional convolutions run as convolutions along a row.

The CPU conv kernel (:class:`tvm_mpq.kernels.cpu_mac.Conv2dChannelsLast`) tiles a conv's output
pixels along a row of the map, so a conv that slides down a column one pixel wide gets register
tiles of one pixel: magika's ``Conv(512 x 1 map, 5 x 1 kernel)`` took 4.9 of its 7.1 ms fp32
(68 GMAC/s), and ``conv1d`` has no CPU kernel at all (TVM's generic reduction schedule ran
silero-vad's five, 0.27 ms of its 0.27 ms; ``benchmarks/kernel_profile.py``, 2026-12-02).
This pass rewrites both as a ``conv2d`` over a map one row high:

* ``conv2d`` on ``[N, C, H, 1]`` with a ``kh x 1`` kernel (no padding or stride across the
  column): the map as ``[N, C, 1, H]`` (the same memory: the width is 1), the kernel as
  ``1 x kh``, strides / padding / dilation moved to the width, the result reshaped back;
* ``conv1d`` (``NCW`` / ``OIW``) on ``[N, C, L]``: ``[N, C, 1, L]``, a ``1 x k`` kernel.

The products and their order of summation are the definition's, so values are unchanged.
Float32 and integer convs (any ``out_dtype``) alike; runs in the CPU build
(:func:`tvm_mpq.target_build.passes.graph_passes`) before the graph goes channels-last, on every
Relax function.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.dpl import is_op, wildcard

from relay_passes.convert_layout import conv_out_dtype, tensor_shape
from relay_passes.precision_annotation import rewrite_every_function


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def _along_row(expr: relax.Expr, weight_shape: tuple[int, ...], stride: int, pad: tuple[int, int],
               dilation: int) -> relax.Expr:
    """``expr`` (a conv of ``data``, every value in one row or column) as a ``conv2d`` of the data
    reshaped to ``[N, C, 1, L]`` with its weight as ``[O, I, 1, K]`` (a constant reshaped here, a
    weight parameter by a ``reshape``, which a parameter build lifts out of ``main``), reshaped
    back to its shape."""
    a = expr.attrs
    n, c, *positions = tensor_shape(expr.args[0])
    row = relax.op.reshape(expr.args[0], [n, c, 1, int(np.prod(positions))])
    kernel_shape = [weight_shape[0], weight_shape[1], 1, int(np.prod(weight_shape[2:]))]
    weight = expr.args[1]
    if isinstance(weight, Constant):
        value = weight.value.numpy()
        kernel = relax.const(value.reshape(kernel_shape), str(value.dtype))
    else:
        kernel = relax.op.reshape(weight, kernel_shape)
    conv = relax.op.nn.conv2d(row, kernel, strides=[1, stride],
                              padding=[0, pad[0], 0, pad[1]], dilation=[1, dilation], groups=int(a.groups),
                              out_dtype=conv_out_dtype(a))
    return relax.op.reshape(conv, list(tensor_shape(expr)))


@tvm.transform.module_pass(opt_level=0, name="ConvOnRows")
class ConvOnRows:
    """Rewrite every column conv2d and every conv1d of every Relax function as a conv2d along a
    row (see the module docstring); other convs are left as they are."""

    def __init__(self) -> None:
        self._conv2d = is_op("relax.nn.conv2d")(wildcard(), wildcard())
        self._conv1d = is_op("relax.nn.conv1d")(wildcard(), wildcard())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_every_function(mod, (self._conv2d, self._column), (self._conv1d, self._conv1d_rewrite))

    @staticmethod
    def _column(expr: relax.Expr, _matches: dict) -> relax.Expr:
        a = expr.attrs
        data, weight = tensor_shape(expr.args[0]), tensor_shape(expr.args[1])
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NCHW", "OIHW", "NCHW") or data is None \
                or weight is None:
            return expr
        top, left, bottom, right = _ints(a.padding)
        if data[3] != 1 or weight[3] != 1 or data[2] == 1 or left or right or _ints(a.strides)[1] != 1:
            return expr
        return _along_row(expr, weight, _ints(a.strides)[0], (top, bottom), _ints(a.dilation)[0])

    @staticmethod
    def _conv1d_rewrite(expr: relax.Expr, _matches: dict) -> relax.Expr:
        a = expr.attrs
        data, weight = tensor_shape(expr.args[0]), tensor_shape(expr.args[1])
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NCW", "OIW", "NCW") or data is None \
                or weight is None:
            return expr
        return _along_row(expr, weight, _ints(a.strides)[0], tuple(_ints(a.padding)), _ints(a.dilation)[0])
