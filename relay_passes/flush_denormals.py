"""FlushDenormalWeights: float constants' subnormal values set to zero (of the same sign).

A subnormal float32 (``0 < |w| < 1.18e-38``) contributes nothing a float32 accumulator of a
normal-sized sum can hold (``w * x`` for any activation below 1e29 is itself subnormal), but on
Intel cores every multiply that reads one takes a microcode assist of about a hundred cycles. A
real export carries them: PP-OCRv6's small text detector (``rapidocr`` 3.10) has 255,958
subnormal weights, 63% of one 3x3 conv's, and its fp32 build took 46 ms on an Intel Xeon where
the same model takes 7 ms on AMD Zen 5 (onnxruntime, which keeps them, as slow; 2026-12-03).
Flushing them at compile time is what the processors' flush-to-zero / denormals-are-zero modes
do at run time, without touching any thread's floating-point state.

Runs first in every target's build (:func:`tvm_mpq.target_build.passes.graph_passes`), on every
float constant (float16 / float32 / float64) of every Relax function; other constants, and
constants without subnormal values, are left as they are.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst

from relay_passes.precision_annotation import relax_functions


def flush_subnormals(array: np.ndarray) -> np.ndarray | None:
    """``array`` with its subnormal values replaced by signed zeros, or None when it has none
    (or is not a floating-point array)."""
    if not np.issubdtype(array.dtype, np.floating):
        return None
    subnormal = (array != 0) & (np.abs(array) < np.finfo(array.dtype).tiny)
    if not subnormal.any():
        return None
    return np.where(subnormal, np.copysign(np.zeros((), array.dtype), array), array).astype(array.dtype)


@relax.expr_functor.mutator
class _Flush(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.flushed = 0

    def visit_generic_const_(self, const: GenericConst) -> relax.Expr:
        array = const.value.numpy()
        flushed = flush_subnormals(array)
        if flushed is None:
            return const
        self.flushed += int(np.count_nonzero(flushed != array))
        return relax.const(flushed, str(array.dtype))


@tvm.transform.module_pass(opt_level=0, name="FlushDenormalWeights")
class FlushDenormalWeights:
    """Every float constant's subnormal values set to zero, in every Relax function; functions
    whose constants have none are left unchanged. The number of values flushed is written on
    each changed function (``tvm_mpq.flushed_subnormals``)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = mod
        for gvar, func in relax_functions(mod):
            flush = _Flush(mod)
            new = flush.visit_expr(func)
            if flush.flushed:
                out = out.clone() if out is mod else out
                out[gvar] = new.with_attr("tvm_mpq.flushed_subnormals", flush.flushed)
        return out
