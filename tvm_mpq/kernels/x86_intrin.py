"""x86 tensor intrinsics for the integer kernels (registered under ``tvm_mpq_*`` names).

``vpmaddwd`` (``pmaddwd``): ``C[i] += A[0] * B[i, 0] + A[1] * B[i, 1]`` for ``lanes`` int32
outputs from int16 operands, exact for uint8 activations times int8 weights (no saturation,
unlike ``vpmaddubsw``). The int8 kernels widen activations to int16 pairs ``[.., C/2, .., 2]``
when they pad/pack them and prepack weights as int16 ``[N/lanes, K/2, lanes, 2]`` at compile time,
so the description reads ``int16`` buffers whose values are uint8 / int8 codes:
``unsafe_set_dtype`` leaves exactly ``cast(int32, cast(uint8, a16)) * cast(int32, cast(int8, b16))``
in the block, and that is what the description matches.

Two widths: AVX2 (``llvm.x86.avx2.pmadd.wd``, 8 int32 lanes) and SSE2 (``llvm.x86.sse2.pmadd.wd``,
4 lanes, any x86-64).
"""

from __future__ import annotations

import tvm
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

PMADDWD_AVX2 = "tvm_mpq_pmaddwd_u8s8_avx2"
PMADDWD_SSE2 = "tvm_mpq_pmaddwd_u8s8_sse2"
"""Both read the int16 operands from global memory and accumulate into a ``local`` buffer (the
register-blocked accumulator tile of the kernel)."""


def _desc(lanes: int, c_scope: str) -> tvm.tirx.PrimFunc:
    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "int16", offset_factor=1)
        B = T.match_buffer(b, (lanes, 2), "int16", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope=c_scope)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:2], B[0:lanes, 0:2])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, 2):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", T.Cast("uint8", A[vk])) * T.Cast(
                        "int32", T.Cast("int8", B[vi, vk]))

    return desc


def _impl(lanes: int, llvm_name: str, c_scope: str) -> tvm.tirx.PrimFunc:
    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "int16", offset_factor=1)
        B = T.match_buffer(b, (lanes, 2), "int16", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope=c_scope)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:2], B[0:lanes, 0:2])
            T.writes(C[0:lanes])
            a_pair = T.reinterpret(A.vload([0], f"int16x2"), dtype="int32")
            a_vec = T.reinterpret(T.broadcast(a_pair, lanes), dtype=f"int16x{2 * lanes}")
            b_vec = B.vload([0, 0], dtype=f"int16x{2 * lanes}")
            C[T.ramp(T.int32(0), 1, lanes)] = C.vload([0], dtype=f"int32x{lanes}") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name), a_vec, b_vec, dtype=f"int32x{lanes}")

    return impl


def _register() -> None:
    for name, lanes, llvm_name in ((PMADDWD_AVX2, 8, "llvm.x86.avx2.pmadd.wd"),
                                   (PMADDWD_SSE2, 4, "llvm.x86.sse2.pmadd.wd")):
        TensorIntrin.register(name, _desc(lanes, "local"), _impl(lanes, llvm_name, "local"), override=True)


_register()
