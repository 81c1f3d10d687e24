"""OneHotMatmulAsTake: a one-hot row times a constant weight, as a lookup of the weight's row.

``matmul(astype(equal(x, codes), float32), W)`` with ``x`` integer tokens ``[..., 1]`` and
``codes`` the consecutive integers ``first .. first + K - 1`` (:mod:`tvm_mpq.graph.one_hot`: an
embedding exported as ``jax.nn.one_hot`` and a dense layer) is row ``x - first`` of ``W [K, N]``,
or zeros where ``x`` is no code. Built as ``take`` of ``W`` with a row of zeros appended, at
``where(first <= x < first + K, x - first, K)``: the same values bit for bit (each output is one
weight times 1.0 plus zeros), without writing the ``[..., K]`` one-hot tensor or multiplying it.
Magika (2048 bytes, 257 codes, 64 columns): 0.912 of the one-hot GEMM build's time fp32 (3.06
against 3.35 ms), 0.831 fully int8 (``python benchmarks/one_hot_as_take.py``, 2026-12-06).

The layer table lists no such product as a layer, so it is fp32 in every config and this pass,
in every target's build (:func:`tvm_mpq.target_build.passes.graph_passes`), sees it as written.
Left as they are: codes that are not consecutive integers, float tokens, a weight that is not a
2-D constant of one row per code, or a one-hot that is not the product's first operand.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.dpl import is_const, is_op, wildcard

from relay_passes.convert_layout import tensor_shape
from relay_passes.precision_annotation import rewrite_every_function
from tvm_mpq.graph.one_hot import OneHotCodes, one_hot_codes


def _row_lookup(tokens: relax.Expr, codes: OneHotCodes, weight: np.ndarray, out_dtype: str) -> relax.Expr:
    """``W`` (a zero row appended) taken at each token's code position, ``K`` for no code."""
    shape = tensor_shape(tokens)
    assert shape is not None
    dtype = str(tokens.ty.dtype)
    table = np.concatenate([weight, np.zeros((1, weight.shape[1]), weight.dtype)]).astype(out_dtype)
    position = relax.op.subtract(tokens, relax.const(codes.first, dtype)) if codes.first else tokens
    inside = relax.op.logical_and(relax.op.greater_equal(position, relax.const(0, dtype)),
                                  relax.op.less(position, relax.const(codes.depth, dtype)))
    index = relax.op.where(inside, position, relax.const(codes.depth, dtype))
    return relax.op.take(relax.const(table), relax.op.reshape(index, shape[:-1]), axis=0, mode="clip")


@tvm.transform.module_pass(opt_level=0, name="OneHotMatmulAsTake")
class OneHotMatmulAsTake:
    """Rewrite every one-hot row times a constant 2-D weight as a lookup of the weight's rows, in
    every Relax function (see the module docstring)."""

    def __init__(self) -> None:
        self._left, self._right, self._weight = wildcard(), wildcard(), is_const()
        self._cast = is_op("relax.astype")(is_op("relax.equal")(self._left, self._right))
        self._product = is_op("relax.matmul")(self._cast, self._weight)

    def _rewrite(self, call: relax.Call, matches) -> relax.Expr:
        weight = matches[self._weight].value.numpy()
        out_dtype = str(call.ty.dtype)
        if not out_dtype.startswith("float"):
            return call
        left, right = matches[self._left], matches[self._right]
        for tokens, codes in ((left, right), (right, left)):
            if not isinstance(codes, Constant):
                continue
            found = one_hot_codes(tensor_shape(tokens), str(tokens.ty.dtype), codes.value.numpy(), weight.shape)
            if found is not None:
                return _row_lookup(tokens, found, weight, out_dtype)
        return call

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_every_function(mod, (self._product, self._rewrite))


__all__ = ["OneHotMatmulAsTake"]
