"""Tensor intrinsics of the CPU int8 kernels, one description per dot-product kind and width.

Each computes, for ``L`` int32 output lanes held in a ``REGISTER_SCOPE`` (register) accumulator,
``C[i] += sum_k A[k] * B[i, k]`` with ``A`` the ``G`` consecutive activation codes of one input
pixel (channels-last: consecutive input channels) and ``B`` the prepacked weight
``[L output channels, G]``:

* ``vpdpbusd`` (``G = 4``, uint8 ``A`` x int8 ``B``): the 4 activation bytes are one 32-bit
  word, broadcast to every lane; LLVM's ``llvm.x86.avx512.vpdpbusd.{128,256,512}`` (VEX
  AVX-VNNI or EVEX AVX512-VNNI, chosen by the target's features);
* ``vpmaddwd`` (``G = 2``, operands widened to int16 holding uint8 / int8 codes): the 2
  activation codes are one 32-bit word; ``llvm.x86.{sse2,avx2,avx512}.pmadd{.wd,w.d.512}``;
* ``sdot`` (``G = 4``, int8 ``A`` x int8 ``B``, aarch64 ``+dotprod``): like ``vpdpbusd``
  on activations shifted to int8; ``llvm.aarch64.neon.sdot.v4i32.v16i8``.

:func:`dot_intrin` names the registered intrinsic for a kind and a lane count; ``tensorize``
with it replaces the innermost ``(lanes, G)`` loops of a kernel's MAC block.
"""

from __future__ import annotations

from functools import cache

import tvm
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

#: The storage scope of a kernel's per-tile register buffers (accumulators, a transform's half
#: result). TVM 0.27's ``LowerTVMBuiltin`` keeps a constant-size allocation under 1 KiB on the
#: stack (where LLVM promotes it to registers) only in the ``global`` scope: a ``local`` one
#: becomes a ``TVMBackendAllocWorkspace`` / ``FreeWorkspace`` call pair per tile, which took
#: mtcnn-pnet's 1-pixel-tile score heads from microseconds to 0.39 ms each (2026-12-02).
REGISTER_SCOPE = "global"

VPDPBUSD = {4: "llvm.x86.avx512.vpdpbusd.128", 8: "llvm.x86.avx512.vpdpbusd.256",
            16: "llvm.x86.avx512.vpdpbusd.512"}
PMADDWD = {4: "llvm.x86.sse2.pmadd.wd", 8: "llvm.x86.avx2.pmadd.wd", 16: "llvm.x86.avx512.pmaddw.d.512"}
SDOT = {4: "llvm.aarch64.neon.sdot.v4i32.v16i8"}


def dot_intrin(kind: str, lanes: int) -> str:
    """The registered intrinsic name for ``kind`` (``vnni`` / ``pmaddwd`` / ``sdot``) and
    ``lanes`` (the intrinsics are registered at the first call, :func:`_register`)."""
    _register()
    return _name(kind, lanes)


def _name(kind: str, lanes: int) -> str:
    return f"tvm_mpq_{kind}_{lanes}x{2 if kind == 'pmaddwd' else 4}"


def _byte_dot_desc(lanes: int, a_dtype: str) -> tvm.tirx.PrimFunc:
    """``C[i] += sum_k A[k] * B[i, k]`` over 4 bytes (``a_dtype`` uint8 or int8, B int8)."""

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])

    return desc


def _pmaddwd_desc(lanes: int) -> tvm.tirx.PrimFunc:
    """int16 buffers holding uint8 / int8 codes: ``unsafe_set_dtype`` leaves exactly these casts."""

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "int16", offset_factor=1)
        B = T.match_buffer(b, (lanes, 2), "int16", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:2], B[0:lanes, 0:2])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, 2):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.Cast("int32", T.Cast("uint8", A[vk])) * T.Cast("int32", T.Cast("int8", B[vi, vk]))

    return desc


def _byte_dot_impl(lanes: int, a_dtype: str, llvm_name: str) -> tvm.tirx.PrimFunc:
    """One ``vpdpbusd`` / ``sdot``: the 4 activation bytes broadcast as a 32-bit word."""

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (lanes, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            # one expression: a Python name bound here would become a local buffer, which the
            # lowering allocates as a workspace per call inside a parallel loop
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name), C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], f"{a_dtype}x4"), dtype="int32"), lanes),
                              dtype=f"int8x{4 * lanes}"),
                B.vload([0, 0], dtype=f"int8x{4 * lanes}"), dtype=f"int32x{lanes}")

    return impl


def _pmaddwd_impl(lanes: int) -> tvm.tirx.PrimFunc:
    llvm_name = PMADDWD[lanes]

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "int16", offset_factor=1)
        B = T.match_buffer(b, (lanes, 2), "int16", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1, scope=REGISTER_SCOPE)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:2], B[0:lanes, 0:2])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = C.vload([0], dtype=f"int32x{lanes}") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int16x2"), dtype="int32"), lanes),
                              dtype=f"int16x{2 * lanes}"),
                B.vload([0, 0], dtype=f"int16x{2 * lanes}"), dtype=f"int32x{lanes}")

    return impl


@cache
def _register() -> None:
    """Parse and register every intrinsic of this module, once per process, when a kernel
    first asks for one, not at import: TVMScript's ``T.prim_func`` calls ``inspect.stack()``,
    whose module lookup scans all of ``sys.modules`` for every frame it cannot map to a file,
    and an import's stack is mostly such frames (``<frozen importlib._bootstrap>``). Imported
    by the CLI after torch, the registration took 8.5 s of a 27 s ``tvm-mpq compile
    mtcnn-rnet`` (py-spy); at a kernel's first schedule it is the parse alone."""
    for lanes in (4, 8, 16):
        TensorIntrin.register(_name("vnni", lanes), _byte_dot_desc(lanes, "uint8"),
                              _byte_dot_impl(lanes, "uint8", VPDPBUSD[lanes]), override=True)
        TensorIntrin.register(_name("pmaddwd", lanes), _pmaddwd_desc(lanes), _pmaddwd_impl(lanes), override=True)
    for lanes, llvm_name in SDOT.items():
        TensorIntrin.register(_name("sdot", lanes), _byte_dot_desc(lanes, "int8"),
                              _byte_dot_impl(lanes, "int8", llvm_name), override=True)
