"""ShiftActivationsToInt8: uint8 x int8 MACs rewritten as int8 x int8, for signed dot products.

The precision pass emits ``conv2d`` / ``matmul`` of uint8 activation codes by int8 weights,
accumulated in int32. x86's ``vpdpbusd`` multiplies exactly that; aarch64's ``sdot`` multiplies
signed by signed bytes. The identity, exact in int32,

    sum_k x[k] * w[k] = sum_k (x[k] - 128) * w[k] + 128 * sum_k w[k]

turns the MAC into one ``sdot`` can run: the activation is shifted (``x - 128`` is ``x ^ 0x80``
as a byte, an elementwise op that fuses into the kernel producing it) and ``128 * sum_k w`` per
output channel, a constant, is added to the accumulator (it fuses into the epilogue's first add).
A conv's own zero padding pads the original codes with 0, which is -128 after the shift: the
padding is made explicit with that value. Everything else, and the result, is unchanged.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant


def _shift(data: relax.Expr) -> relax.Expr:
    wide = relax.op.subtract(relax.op.astype(data, "int16"), relax.const(128, "int16"))
    return relax.op.astype(wide, "int8")


def _is_u8_by_s8(call: relax.Call) -> bool:
    data, weight = call.args[0], call.args[1]
    return (isinstance(weight, Constant) and str(weight.value.dtype) == "int8"
            and isinstance(data.ty, relax.TensorType) and str(data.ty.dtype) == "uint8"
            and str(call.ty.dtype) == "int32")


@relax.expr_functor.mutator
class _Shift(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.n_shifted = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        op = getattr(call.op, "name", "")
        matches = op in ("relax.nn.conv2d", "relax.matmul") and _is_u8_by_s8(call)  # (typed: the input call)
        call = super().visit_call_(call)
        if not matches:
            return call
        w = call.args[1].value.numpy().astype(np.int64)
        if op == "relax.matmul":
            if w.ndim != 2:
                return call
            correction = (128 * w.sum(axis=0)).astype("int32")  # [N]
            self.n_shifted += 1
            mac = relax.op.matmul(_shift(call.args[0]), call.args[1], out_dtype="int32")
            return relax.op.add(mac, relax.const(correction))
        a = call.attrs
        if a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or int(a.groups) != 1:
            return call
        data = _shift(call.args[0])
        pad = [int(p) for p in a.padding]  # top, left, bottom, right
        if any(pad):
            data = relax.op.nn.pad(data, [0, 0, 0, 0, pad[0], pad[2], pad[1], pad[3]], pad_value=-128.0)
        correction = (128 * w.sum(axis=(1, 2, 3))).astype("int32").reshape(1, -1, 1, 1)
        self.n_shifted += 1
        mac = relax.op.nn.conv2d(data, call.args[1], a.strides, 0, a.dilation, 1, "NCHW", "OIHW", "NCHW", "int32")
        return relax.op.add(mac, relax.const(correction))


@tvm.transform.module_pass(opt_level=0, name="ShiftActivationsToInt8")
class ShiftActivationsToInt8:
    """Rewrite every uint8 x int8 ``conv2d`` (NCHW, groups 1) and ``matmul`` with a constant
    weight, in every Relax function, as int8 x int8 plus a constant correction (see the module
    docstring). :attr:`n_shifted` counts the MACs rewritten by the last run."""

    def __init__(self) -> None:
        self.n_shifted = 0

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        self.n_shifted = 0
        out = mod
        for gv, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            mutator = _Shift(out)
            new_func = mutator.visit_expr(func)
            self.n_shifted += mutator.n_shifted
            mutator.builder_.update_func(gv, new_func)
            out = mutator.builder_.get()
        return out
