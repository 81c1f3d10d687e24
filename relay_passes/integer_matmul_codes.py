"""IntegerMatmulOnCodes: an integer matmul of widened 8-bit codes as a matmul of the codes.

A model quantized before it reaches tvm-mpq (onnxruntime's ``quantize_dynamic``: a
``DynamicQuantizeLinear`` of the activation, then ``MatMulInteger`` with an int8 weight) is
imported by TVM as ``matmul(astype(a, int32) - zp_a, astype(W, int32) - zp_W, out_dtype=int32)``:
an int32 x int32 product that no kernel rule schedules, so it ran on TVM's default loops
(open-voicefilter-lite's mask model: its ``[100, 768] x [768, 512]`` input projection 84 of the
model's 108 ms, where onnxruntime took 34 ms for the whole model; ``benchmarks/kernel_profile.py
voicefilter-lite-mask``, 2026-12-07). The layer table leaves such a product alone (its
quantization was decided already), so it is not one of the int8 layers the precision passes
lower onto the kernels either.

This pass writes it as the int8 layers are written (:class:`relay_passes.quantized_arith.IntegerArith`):
``matmul(a, W_q, out_dtype=int32) - zp_a * colsum(W_q)`` with ``W_q = W - zp_W`` an int8
constant. Integer arithmetic throughout, so the result is the same to the bit (the sums fit
int32 as the original's do: each term is at most 255 x 127). Left as they are: a weight that
is not a constant of rank 2 or whose codes leave ``[-127, 127]`` (the int8 kernels' weight
range), codes that are not uint8 / int8, and an activation zero point that varies along the
contracted axis. Runs in every target's build (:func:`tvm_mpq.target_build.passes.graph_passes`),
on every Relax function.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from relay_passes.precision_annotation import bound_constant, op_name, relax_functions

WEIGHT_CODES = 127
"""The int8 kernels' weight range is ``[-127, 127]`` (symmetric int8, as the precision passes
quantize); a weight with a -128 stays an int32 product."""


def constant_value(expr: relax.Expr, var2val: dict) -> np.ndarray | None:
    """The value of ``expr`` when it is a constant, or a cast or difference of constants (what
    the importer writes for ``W - zp_W`` with a per-tensor ``zp_W``, which ``FoldConstant`` leaves
    unfolded; a per-column one arrives folded); ``None`` otherwise."""
    value = bound_constant(expr, var2val)
    if value is not None:
        return value
    while isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    name = op_name(expr)
    if name == "relax.astype":
        value = constant_value(expr.args[0], var2val)
        return None if value is None else value.astype(str(expr.attrs.dtype))
    if name == "relax.subtract":
        lhs, rhs = (constant_value(arg, var2val) for arg in expr.args)
        return None if lhs is None or rhs is None else (lhs.astype(np.int64) - rhs).astype(str(expr.ty.dtype))
    return None


@tvm.transform.module_pass(opt_level=0, name="IntegerMatmulOnCodes")
class IntegerMatmulOnCodes:
    """Rewrite ``matmul(astype(codes, int32) [- zp], W)`` with a constant int8-range ``W`` into
    ``matmul(codes, W_int8) [- zp * colsum(W)]``, in every Relax function (see the module docstring)."""

    def __init__(self) -> None:
        self._codes = wildcard()
        self._zero_point = wildcard()
        self._weight = wildcard()
        widened = is_op("relax.astype")(self._codes)
        self._shifted = is_op("relax.subtract")(widened, self._zero_point)
        self._matmul = is_op("relax.matmul")(self._shifted | widened, self._weight)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = mod.clone()
        for gvar, func in relax_functions(mod):
            var2val = relax.analysis.get_var2val(func)

            def rewriter(expr: relax.Expr, matches: dict, var2val=var2val) -> relax.Expr:
                return self._on_codes(expr, matches, var2val)

            out[gvar] = relax.dpl.rewrite_call(self._matmul, rewriter, func)
        return out

    def _on_codes(self, call: relax.Expr, matches: dict, var2val: dict) -> relax.Expr:
        if not isinstance(call, relax.Call) or str(call.ty.dtype) != "int32":
            return call
        codes = matches[self._codes]
        if str(codes.ty.dtype) not in ("uint8", "int8") or str(call.args[0].ty.dtype) != "int32":
            return call
        weight = constant_value(matches[self._weight], var2val)
        if weight is None or weight.ndim != 2 or not np.issubdtype(weight.dtype, np.integer) \
                or weight.size == 0 or np.abs(weight.astype(np.int64)).max() > WEIGHT_CODES:
            return call
        w_q = weight.astype(np.int8)
        product = relax.op.matmul(codes, relax.const(w_q), out_dtype="int32")
        if self._shifted not in matches:
            return product
        zero_point = matches[self._zero_point]
        shape = zero_point.ty.shape
        if str(zero_point.ty.dtype) != "int32" or shape is None or (len(shape) and int(shape[-1]) != 1):
            return call
        column_sums = relax.const(w_q.astype(np.int32).sum(axis=0, dtype=np.int32))
        return relax.op.subtract(product, relax.op.multiply(zero_point, column_sums))


__all__ = ["IntegerMatmulOnCodes", "constant_value"]
