"""PowerAsMultiply: ``x ** 2``, ``x ** 3`` and ``x ** 4`` by a constant as multiplies.

The tanh form of GELU that TensorFlow exports (``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``)
computes ``x^3`` as ``Pow(x, 3.0)``. TVM lowers ``relax.power`` to the ``llvm.pow`` intrinsic,
which LLVM turns into multiplies only for the exponent 2 (and without fast-math flags not for 3):
for 3 it stays one ``powf`` call per element, which no vector instruction replaces. In the
LEADER fingerprint network that is 27 ``Pow`` over whole feature maps. This pass writes
``x * x``, ``x * x * x`` and ``(x * x) * (x * x)`` instead (within an ulp or two of ``powf``),
elementwise, so they fuse and vectorize with the kernel around them. Other exponents stay.
Visits every Relax function.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from relay_passes.precision_annotation import rewrite_every_function


def _as_multiplies(x: relax.Expr, exponent: float) -> relax.Expr | None:
    if exponent == 2.0:
        return relax.op.multiply(x, x)
    if exponent == 3.0:
        return relax.op.multiply(relax.op.multiply(x, x), x)
    if exponent == 4.0:
        square = relax.op.multiply(x, x)
        return relax.op.multiply(square, square)
    return None


@tvm.transform.module_pass(opt_level=0, name="PowerAsMultiply")
class PowerAsMultiply:
    """Rewrite float ``power(x, c)`` with one constant ``c`` in {2, 3, 4} into multiplies in every
    Relax function."""

    def __init__(self) -> None:
        self._exponent = is_const()
        self._power = is_op("relax.power")(wildcard(), self._exponent)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
            x, values = expr.args[0], np.unique(matches[self._exponent].value.numpy())
            ty = x.ty
            if len(values) != 1 or not isinstance(ty, relax.TensorType) or not str(ty.dtype).startswith("float") \
                    or tuple(expr.ty.shape) != tuple(ty.shape):  # (an exponent that broadcasts x stays)
                return expr
            new = _as_multiplies(x, float(values[0]))
            return expr if new is None else new

        return rewrite_every_function(mod, (self._power, rewriter))
