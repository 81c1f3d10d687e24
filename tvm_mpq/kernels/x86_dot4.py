"""x86 int8 conv2d/dense with VNNI ``vpdpbusd``: the dot4 rewrite of
:mod:`tvm_mpq.kernels.int8_dot4` on unshifted uint8 activations.

``vpdpbusd acc, a, b`` (AVX-VNNI, or AVX512-VNNI with AVX512VL for 256 bits) adds to each int32
lane of ``acc`` the 4 products of unsigned bytes of ``a`` by signed bytes of ``b``, without
intermediate saturation: one instruction per 32 uint8 x int8 MACs, against ``vpmaddwd`` +
``vpaddd`` per 16 for the AVX2 kernels of :mod:`tvm_mpq.kernels.x86`. That is the instruction
the issue's 2-3x int8 speed-up rests on (TVM 0.27's own ``dot_16x4_vnni`` intrinsic is broken,
see DESIGN). The rule fires on targets whose features include ``avxvnni`` or
``avx512vnni`` + ``avx512vl`` (``-mcpu`` alderlake, sapphirerapids, icelake-server,
cascadelake, znver4, ...); the activation stays uint8, so there is no shift and no correction.

The machine this was written on has no VNNI and no x86 emulator here implements it (QEMU 7.2
and 10.0 TCG raise SIGILL), so the kernel is checked in two parts: the build for a VNNI
``-mcpu`` must contain ``vpdpbusd`` (compile only), and the very same rewrite runs on the host
with :func:`emulated_vpdpbusd_mac`, an exact AVX2 stand-in for the one instruction, and must
agree bit for bit with the reference build (``tests/test_kernels_x86.py``).
"""

from __future__ import annotations

import tvm
from tvm.target import codegen

from tvm_mpq.kernels.int8_dot4 import Dot4Isa, Int8Dot4Rule

ACC_REGISTERS = 12
"""int32x8 accumulators per register tile (16 ymm: the rest hold 2 weight vectors and the
broadcast activation)."""

VPDPBUSD = "llvm.x86.avx512.vpdpbusd.256"
"""LLVM's intrinsic for the 256-bit ``vpdpbusd`` (selected as the VEX AVX-VNNI encoding or the
EVEX AVX512-VNNI one by the target's features)."""


def _intrin(name: str, dtype: str, *args: str) -> str:
    return f'T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("{name}"), {", ".join(args)}, dtype="{dtype}")'


def vpdpbusd_mac(acc: str, b: str, a: str) -> str:
    """TVMScript of ``vpdpbusd(acc, a, b)``: ``acc`` int32x8; ``a`` (uint8 bytes) and ``b``
    (int8 bytes) as int8x32 expressions."""
    return _intrin(VPDPBUSD, "int32x8", acc, a, b)


def emulated_vpdpbusd_mac(acc: str, b: str, a: str) -> str:
    """Exact AVX2 equivalent of :func:`vpdpbusd_mac` for weights in ``[-127, 127]`` (tests only).

    ``sum u*w = sum (u - 128) * w + 128 * sum w``; the signed-byte product uses the sign trick
    (``vpsignb``: ``|s|`` times ``w * sign(s)``, pairs summed by ``vpmaddubsw`` without
    saturation since ``2 * 128 * 127 < 2^15``) and ``vpmaddwd`` by ones widens to int32."""
    s = f"T.bitwise_xor({a}, T.broadcast(T.int8(-128), 32))"
    ones16 = "T.broadcast(T.int16(1), 16)"
    abs_s = _intrin("llvm.x86.avx2.psign.b", "int8x32", s, s)
    w_signed = _intrin("llvm.x86.avx2.psign.b", "int8x32", b, s)
    products = _intrin("llvm.x86.avx2.pmadd.wd", "int32x8",
                       _intrin("llvm.x86.avx2.pmadd.ub.sw", "int16x16", abs_s, w_signed), ones16)
    weight_sums = _intrin("llvm.x86.avx2.pmadd.wd", "int32x8",
                          _intrin("llvm.x86.avx2.pmadd.ub.sw", "int16x16", "T.broadcast(T.int8(-128), 32)", b),
                          ones16)
    return f"{acc} + {products} + {weight_sums}"


VNNI_DOT4 = Dot4Isa("x86-vnni", 8, vpdpbusd_mac, ACC_REGISTERS, vector_groups=(2, 1), shift_activation=False)
EMULATED_VNNI_DOT4 = Dot4Isa("x86-vnni-emulated-avx2", 8, emulated_vpdpbusd_mac, 8, vector_groups=(2, 1),
                             shift_activation=False)


def has_vnni(target: tvm.target.Target) -> bool:
    """Whether ``target`` has a 256-bit ``vpdpbusd`` (AVX-VNNI, or AVX512-VNNI with AVX512VL)."""
    feature = codegen.target_has_features
    return bool(feature("avxvnni", target) or (feature("avx512vnni", target) and feature("avx512vl", target)))


class Int8Dot4Vnni(Int8Dot4Rule):
    """uint8 x int8 -> int32 ``conv2d`` (NCHW/OIHW, groups 1, batch 1, output channels a multiple
    of 8; input channels padded to 4) and ``matmul`` with a constant weight, on VNNI targets:
    uint8 activation re-laid out ``[H, W, C]``, weight packed ``[F/8, K/4, 8]`` int32 words at
    compile time, ``vpdpbusd`` micro-kernel over ``MX`` pixels x 8-16 channels, epilogue fused
    per tile."""

    def __init__(self, isa: Dot4Isa = VNNI_DOT4) -> None:
        self.isa = isa

    def isa_for(self, target: tvm.target.Target) -> Dot4Isa | None:
        if self.isa is VNNI_DOT4 and not has_vnni(target):
            return None
        return self.isa
