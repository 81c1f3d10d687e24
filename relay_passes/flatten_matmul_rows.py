"""FlattenMatmulRows: a matmul of a batched activation by a constant weight runs on 2-D rows.

``matmul(x [B1, ..., M, K], W [K, N])`` computes the same dot products as one GEMM of the rows of
``x``, ``[B1 * ... * M, K] x [K, N]``, reshaped back to ``[B1, ..., M, N]``. The CPU GEMM kernel
(:class:`tvm_mpq.kernels.cpu_mac.MatmulConstWeight`) takes ``[..., M, K]`` with leading
dimensions of 1 (a transformer's ``[1, S, C]``); with a real leading batch, such as the input
projection of an unrolled LSTM over its whole sequence (``[steps, batch, K]``, from
:mod:`tvm_mpq.frontends.onnx_recurrent`), TVM's default schedule ran it: 40 of ddddocr-crnn's
49 ms in fp32, 27 of 33 ms in int8 (``benchmarks/kernel_profile.py ddddocr-crnn``, 2026-12-02).
Reshapes of contiguous rows are free, and float32 and integer matmuls (any ``out_dtype``) are
rewritten alike, so the integer model's values do not change.

It runs in the CPU build (:func:`tvm_mpq.target_build.passes.graph_passes`), on every Relax function.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from relay_passes.convert_layout import tensor_shape
from relay_passes.precision_annotation import rewrite_every_function


@tvm.transform.module_pass(opt_level=0, name="FlattenMatmulRows")
class FlattenMatmulRows:
    """Rewrite every ``matmul(x, constant 2-D weight)`` whose ``x`` has leading dimensions other
    than 1 as ``reshape -> 2-D matmul -> reshape``, in every Relax function."""

    def __init__(self) -> None:
        self._matmul = is_op("relax.matmul")(wildcard(), is_const())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_every_function(mod, (self._matmul, self._rewrite))

    @staticmethod
    def _rewrite(expr: relax.Expr, _matches: dict) -> relax.Expr:
        data, weight = tensor_shape(expr.args[0]), tensor_shape(expr.args[1])
        if data is None or weight is None or len(weight) != 2 or len(data) < 3:
            return expr
        rows = 1
        for d in data[:-1]:
            rows *= d
        if rows == data[-2]:  # every leading dimension is 1: the GEMM kernel takes it as it is
            return expr
        flat = relax.op.reshape(expr.args[0], [rows, data[-1]])
        product = relax.op.matmul(flat, expr.args[1], out_dtype=expr.attrs.out_dtype)
        return relax.op.reshape(product, [*data[:-1], weight[1]])
