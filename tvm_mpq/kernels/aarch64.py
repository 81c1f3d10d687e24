"""aarch64 kernels: int8 with ``sdot`` (``+dotprod``) or NEON widening, and fp32 NEON.

The int8 conv2d/dense kernels are the shared dot4 rewrite of :mod:`tvm_mpq.kernels.int8_dot4`
(activation shifted to int8, weights packed as 4-byte words with the ``128 * sum_k w``
correction folded at compile time) with ``int32x4`` accumulators and one of two dot4
expressions: ``llvm.aarch64.neon.sdot`` when the target has ``+dotprod``, else the same 16
multiply-adds as ``smull`` + ``saddlp`` + ``addp`` (``sdot`` multiplies signed by signed bytes;
``usdot``, unsigned by signed, needs ``+i8mm``, hence the shift).
"""

from __future__ import annotations

import logging
from typing import Any

import tvm
from tvm import s_tir
from tvm.s_tir.dlight.base import ScheduleRule

from tvm_mpq.kernels import register_rules
from tvm_mpq.kernels.epilogue import fits_mac_tile, schedule_after_mac
from tvm_mpq.kernels.int8_dot4 import Dot4Isa, Int8Dot4Rule, expr_dtype, has_root_block, match_int8_mac

__all__ = ["Fp32MacRule", "Int8MacRule", "aarch64_rules", "has_dotprod", "match_int8_mac", "neon_isa"]

LOG = logging.getLogger(__name__)

ACC_REGISTERS = 24
"""int32x4 accumulators a register tile may use (NEON has 32 vector registers)."""


def has_dotprod(target: tvm.target.Target) -> bool:
    """Whether ``target`` (an aarch64 ``llvm`` target) has ``+dotprod`` in its ``mattr``."""
    mattr = target.attrs.get("mattr", None) or []
    return any(str(a).strip() == "+dotprod" for a in mattr)


def _neon_mac(acc: str, b: str, a: str, dotprod: bool) -> str:
    """TVMScript for ``acc + dot4(a, b)`` per int32 lane (a, b: int8x16 expressions)."""
    if dotprod:
        return ('T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"), '
                f'{acc}, {b}, {a}, dtype="int32x4")')

    def half(part: str) -> str:
        mul = (f'T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"), '
               f'T.{part}({a}, dtype="int8x8"), T.{part}({b}, dtype="int8x8"), dtype="int16x8")')
        return f'T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"), {mul}, dtype="int32x4")'

    pair = (f'T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.addp.v4i32"), '
            f'{half("vectorlow")}, {half("vectorhigh")}, dtype="int32x4")')
    return f"{acc} + {pair}"


def neon_isa(dotprod: bool) -> Dot4Isa:
    """The dot4 ISA of the aarch64 int8 kernels (``sdot`` or NEON widening multiplies)."""
    return Dot4Isa("aarch64-sdot" if dotprod else "aarch64-neon", 4,
                   lambda acc, b, a: _neon_mac(acc, b, a, dotprod), ACC_REGISTERS)


class Int8MacRule(Int8Dot4Rule):
    """int8 conv2d (1x1, 3x3, ... NCHW/OIHW, groups 1) and dense for aarch64 (see the module doc).

    ``dotprod``: use ``sdot`` (None: from the target's ``mattr``)."""

    def __init__(self, dotprod: bool | None = None) -> None:
        self.dotprod = dotprod

    def isa_for(self, target: tvm.target.Target) -> Dot4Isa:
        return neon_isa(has_dotprod(target) if self.dotprod is None else self.dotprod)


# ------------------------------------------------------------------------------------------ fp32


def _single_reduction(sch: s_tir.Schedule) -> Any | None:
    if not has_root_block(sch):
        return None
    found = [rv for rv in sch.get_child_blocks(sch.get_sblock("root"))
             if any(int(iv.iter_type) == 2 for iv in sch.get(rv).iter_vars)]
    return found[0] if len(found) == 1 else None


def _largest_divisor(n: int, choices: tuple[int, ...]) -> int:
    return next((c for c in choices if n % c == 0), 1)


class Fp32MacRule(ScheduleRule):
    """fp32 conv2d (NCHW, output columns vectorised, 4 channels x 8 columns register tile) and
    dense (output channels vectorised) for NEON; epilogue fused per tile, outer loops parallel."""

    def apply(self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool) -> s_tir.Schedule | None:
        """The scheduled ``func``, or None when it is not an fp32 conv2d/dense."""
        if not isinstance(func, tvm.tirx.PrimFunc) or str(target.kind.name) != "llvm":
            return None
        try:
            return self._schedule(func)
        except Exception as err:  # noqa: BLE001 - decline, never break a build
            LOG.debug("aarch64 fp32 rule declined: %s", err)
            return None

    def _schedule(self, func: tvm.tirx.PrimFunc) -> s_tir.Schedule | None:
        sch = s_tir.Schedule(func)
        rv = _single_reduction(sch)
        if rv is None:
            return None
        block = sch.get(rv)
        store = block.body
        if not isinstance(store, tvm.tirx.BufferStore) or expr_dtype(store.value) != "float32":
            return None
        kinds = "".join("R" if int(iv.iter_type) == 2 else "S" for iv in block.iter_vars)
        extents = [int(iv.dom.extent) for iv in block.iter_vars]
        names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
        pos = names.index(block.name_hint)
        for name in names[:pos]:  # padding: materialised once (inlined, it would guard every vector lane)
            sch.parallel(sch.get_loops(sch.get_sblock(name))[0])
        loops = sch.get_loops(rv)
        if kinds == "SSSSRRR":
            n, co, oh, ow, ci, kh, kw = loops
            fo, fi = sch.split(co, [None, _largest_divisor(extents[1], (4, 2))])
            xo, xi = sch.split(ow, [None, _largest_divisor(extents[3], (8, 4, 7, 2))])
            sch.reorder(n, fo, oh, xo, ci, kh, kw, fi, xi)
            outer, tile, inner = [n, fo, oh], xo, (fi, xi)
        elif kinds.endswith("SR") and kinds.count("R") == 1 and kinds[:-1] == "S" * (len(kinds) - 1):
            *lead, m, nn, k = loops
            no, ni = sch.split(nn, [None, _largest_divisor(extents[-2], (16, 8, 4))])
            sch.reorder(*lead, m, no, k, ni)
            outer, tile, inner = [*lead, m], no, (ni,)
        else:
            return None
        epilogue = names[pos + 1:]
        per_tile = not epilogue or fits_mac_tile(sch, block.name_hint, epilogue[-1])
        for name in epilogue[:-1]:
            sch.compute_inline(sch.get_sblock(name))
        if epilogue and per_tile:
            sch.reverse_compute_at(sch.get_sblock(epilogue[-1]), tile)
        elif epilogue:  # a shape-changing tail (fused pad): after the MAC, over its whole output
            schedule_after_mac(sch, sch.get_sblock(epilogue[-1]))
        if epilogue:
            sch.vectorize(sch.get_loops(sch.get_sblock(epilogue[-1]))[-1])
        sch.parallel(sch.fuse(*outer, tile))
        for loop in inner[:-1]:
            sch.unroll(loop)
        sch.vectorize(inner[-1])
        sch.decompose_reduction(rv, sch.get_loops(rv)[1])
        return sch


@register_rules("aarch64")
def aarch64_rules(target: tvm.target.Target) -> list[ScheduleRule]:
    """The aarch64 rules: int8 conv2d/dense (``sdot`` with ``+dotprod``, NEON widening without),
    then fp32 conv2d/dense."""
    return [Int8MacRule(), Fp32MacRule()]
