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

A quantize step's division (``round(x / scale)``, :mod:`relay_passes.qdq_steps`) stays a
division where it quantizes a float tensor (the model's input, an fp32 layer's output): there
the quotient is rounded to an integer, and the integer build, its QDQ simulation and
onnxruntime's ``QuantizeLinear`` all divide, so every code is the same. Where it *requantizes* -
its dividend computed from integer codes or int32 accumulators by elementwise steps alone (an
int8 conv's epilogue ``round(clip(float(acc) * s_x s_w, 0, 6) / s_y)``, two int8 branches added)
- it is a multiply too, as in onnxruntime's own integer kernels (QLinearConv, QLinearAdd:
MLAS requantizes with a float multiplier ``s_x s_w / s_y``): that dividend is the integer
model's own rescaling, which no float path reproduces to the ulp (the integer build and its
simulation agree to within one code at a ``.5`` tie, :mod:`tvm_mpq.compiler.agreement`), and its
division sat in the epilogue of every int8 MAC kernel, one ``vdivps`` per output vector: fully
int8 MobileNet-V2 / EfficientNet-Lite0 / resnet18 0.91 / 0.91 / 0.95 of the time with it (``python
benchmarks/requantize_multiply.py``, Xeon, 2026-12-05). A multiply and two FMA corrections, the
same float as the division (Markstein's theorem), took as long as the division there: the
epilogue is bound on the two FMA ports, where the divider is a unit of its own. Visits every Relax function.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.dpl import is_const, is_op, wildcard

from relay_passes.precision_annotation import op_name, relax_functions


_ELEMENTWISE = frozenset({"relax.add", "relax.subtract", "relax.multiply", "relax.clip", "relax.maximum",
                          "relax.minimum", "relax.nn.relu", "relax.astype"})
"""The steps between integer codes (or an accumulator) and the requantize that reads them."""
MAX_REQUANTIZE_STEPS = 8


def _integer_derived(expr: relax.Expr, var2val: dict, steps: int = MAX_REQUANTIZE_STEPS) -> bool:
    """Whether float ``expr`` is computed from integer tensors the function computes (not its
    integer parameters: a uint8 image is quantized as a float tensor) by :data:`_ELEMENTWISE`
    steps alone (every non-constant operand of each step so computed, within ``steps``): a cast
    of an int32 accumulator or of uint8 codes, scaled, clipped, added."""
    value = var2val.get(expr) if isinstance(expr, relax.Var) else None
    if steps == 0 or not isinstance(value, relax.Call) or op_name(value) not in _ELEMENTWISE:
        return False
    operands = [a for a in value.args if not isinstance(a, Constant)]
    if op_name(value) == "relax.astype":
        source = value.args[0]
        computed = not isinstance(source, relax.Var) or source in var2val  # not a function parameter
        if computed and str(getattr(source.ty, "dtype", "")).startswith(("int", "uint")):
            return True
    return bool(operands) and all(_integer_derived(a, var2val, steps - 1) for a in operands)


def _float_quantizations(func: relax.Function) -> list[relax.Expr]:
    """The divisions of ``func`` whose result a ``round`` reads (quantize steps) and whose
    dividend is not integer-derived (:func:`_integer_derived`): the quantizations of float tensors."""
    var2val = relax.analysis.get_var2val(func)
    out = []
    for value in var2val.values():
        if op_name(value) == "relax.round":
            arg = value.args[0]
            quotient = var2val.get(arg, arg) if isinstance(arg, relax.Var) else arg
            if not (op_name(quotient) == "relax.divide" and _integer_derived(quotient.args[0], var2val)):
                out.append(quotient)
    return out


@tvm.transform.module_pass(opt_level=0, name="DivideAsMultiply")
class DivideAsMultiply:
    """Rewrite float32 ``divide(x, c)`` by a constant ``c`` (finite, nonzero) into
    ``multiply(x, 1 / c)`` in every Relax function, except a quotient that is rounded from a
    float tensor (a quantization, not a requantization: module docstring)."""

    def __init__(self) -> None:
        self._divisor = is_const()
        self._divide = is_op("relax.divide")(wildcard(), self._divisor)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = mod.clone()
        for gvar, func in relax_functions(mod):
            rounded = _float_quantizations(func)

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
