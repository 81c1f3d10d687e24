"""DivideAsMultiply: a float32 division by a constant as a multiplication by its reciprocal.

Exported graphs divide by constants in their hottest epilogues: the exact GELU's ``x / sqrt 2``
after every MLP matmul or 1x1 conv of a transformer block (PP-OCRv6, sudachi's ALBERT), an
attention's ``scores / sqrt d`` after each batch matmul. Without fast-math flags LLVM keeps them
as divides, one ``vdivps`` per output vector, which issues on one port at a fraction of the FMA
rate: where the reduction before it is short (an attention's ``QK^T`` over 26 channels) that
shows (the scores kernel 0.87x with multiplies; a 156-deep GELU matmul level, ``python
benchmarks/divide_as_multiply.py``, Xeon, 2026-12-05). This pass writes ``x * (1 / c)`` with the reciprocal computed once at compile time
(in float64, rounded to float32): exact where ``c`` is a power of two, otherwise within one
float32 rounding of the quotient (about 1e-7 relative, as the vector ``exp`` / ``erf``
polynomials of :mod:`relay_passes.fast_exp`).

The division a quantize step begins with (``round(x / scale)``, :mod:`relay_passes.qdq_steps`)
stays a division: there the quotient is rounded to an integer, and the integer build, its QDQ
simulation and onnxruntime's ``QuantizeLinear`` all divide, so every code stays the same.
Constants holding a zero, an infinity or a NaN stay too. Visits every Relax function.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from relay_passes.precision_annotation import op_name, relax_functions


def _rounded_quotients(func: relax.Function) -> list[relax.Expr]:
    """The divisions of ``func`` whose result a ``round`` reads (quantize steps)."""
    var2val = relax.analysis.get_var2val(func)
    out = []
    for value in var2val.values():
        if op_name(value) == "relax.round":
            arg = value.args[0]
            out.append(var2val.get(arg, arg) if isinstance(arg, relax.Var) else arg)
    return out


@tvm.transform.module_pass(opt_level=0, name="DivideAsMultiply")
class DivideAsMultiply:
    """Rewrite float32 ``divide(x, c)`` by a constant ``c`` (finite, nonzero) into
    ``multiply(x, 1 / c)`` in every Relax function, except a quotient that is rounded."""

    def __init__(self) -> None:
        self._divisor = is_const()
        self._divide = is_op("relax.divide")(wildcard(), self._divisor)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = mod.clone()
        for gvar, func in relax_functions(mod):
            rounded = _rounded_quotients(func)

            def rewriter(expr: relax.Expr, matches: dict, rounded=rounded) -> relax.Expr:
                divisor = matches[self._divisor]
                if str(divisor.ty.dtype) != "float32" or str(expr.ty.dtype) != "float32" \
                        or any(expr.same_as(r) for r in rounded):
                    return expr
                value = divisor.value.numpy().astype(np.float64)
                if not np.all(np.isfinite(value)) or np.any(value == 0):
                    return expr
                return relax.op.multiply(expr.args[0], relax.const((1.0 / value).astype(np.float32)))

            out[gvar] = relax.dpl.rewrite_call(self._divide, rewriter, func)
        return out


__all__ = ["DivideAsMultiply"]
