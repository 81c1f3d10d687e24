"""The tensor intrinsic of the CUDA int8 kernels: one ``dp4a`` (4-way 8-bit dot product).

``C[0] += sum_k A[k] * B[k]`` over ``k < 4``, with ``A`` four activation codes (uint8, or
int8 for activations shifted to signed), ``B`` four int8 weights, both in ``shared`` memory
(the kernels stage their GEMM tiles there, the reduction axis innermost) and ``C`` one int32
accumulator in a register (``local``). The implementation reads each operand as one 32-bit
word and calls ``__dp4a``: TVM's CUDA codegen declares the unsigned x signed overload
(``dp4a.u32.s32``) next to CUDA's signed one (``dp4a.s32.s32``), so uint8 codes need no shift.

TVM registers the same computation (``tvm.s_tir.tensor_intrin.dot_product_common``), but that
package imports every CUDA intrinsic (over a minute); this module registers only what the
kernels use, under its own names (:func:`dp4a_intrin`).
"""

from __future__ import annotations

from functools import cache

import tvm
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

DATA_DTYPES = ("uint8", "int8")
"""Activation code types a dp4a intrinsic exists for (the weights are int8)."""


def dp4a_intrin(data_dtype: str) -> str:
    """The registered intrinsic name for activations of ``data_dtype`` (uint8 or int8) x int8."""
    if data_dtype not in DATA_DTYPES:
        raise ValueError(f"no dp4a intrinsic for {data_dtype} activations")
    _register()
    return _name(data_dtype)


def _name(data_dtype: str) -> str:
    return f"tvm_mpq_dp4a_{'u8' if data_dtype == 'uint8' else 's8'}s8s32"


def _dp4a_desc(data_dtype: str) -> tvm.tirx.PrimFunc:
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), data_dtype, offset_factor=1, align=4, scope="shared")
        B = T.match_buffer(b, (4,), "int8", offset_factor=1, align=4, scope="shared")
        C = T.match_buffer(c, (1,), "int32", offset_factor=1, align=4, scope="local")
        with T.sblock("root"):
            T.reads(C[0], A[0:4], B[0:4])
            T.writes(C[0])
            for k in range(4):
                with T.sblock("update"):
                    vk = T.axis.remap("R", [k])
                    C[0] = C[0] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vk])

    return desc


def _dp4a_impl(data_dtype: str) -> tvm.tirx.PrimFunc:
    data_word = "uint8x4" if data_dtype == "uint8" else "int8x4"

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), data_dtype, offset_factor=1, align=4, scope="shared")
        B = T.match_buffer(b, (4,), "int8", offset_factor=1, align=4, scope="shared")
        C = T.match_buffer(c, (1,), "int32", offset_factor=1, align=4, scope="local")
        with T.sblock("root"):
            T.reads(C[0], A[0:4], B[0:4])
            T.writes(C[0])
            C[0] = T.call_pure_extern("__dp4a", A.vload([0], data_word), B.vload([0], "int8x4"), C[0],
                                      dtype="int32")

    return impl


@cache
def _register() -> None:
    """Register both intrinsics once, at the first :func:`dp4a_intrin` call, not at import
    (``T.prim_func`` at import time is slow: :func:`tvm_mpq.kernels.cpu_intrin._register`)."""
    for data_dtype in DATA_DTYPES:
        TensorIntrin.register(_name(data_dtype), _dp4a_desc(data_dtype), _dp4a_impl(data_dtype), override=True)
