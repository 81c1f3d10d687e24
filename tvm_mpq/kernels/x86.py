"""Default (untuned) x86 schedules for the MAC kernels: int8 and fp32 conv2d, depthwise, dense.

Every rule recognizes its PrimFunc with :func:`tvm_mpq.kernels.x86_analysis.analyze` and applies
one register-blocked micro-kernel schedule (:func:`schedule_mac`):

* the constant weight is prepacked at compile time (a ``cache_read`` block annotated
  ``meta_schedule.layout_rewrite_preproc``, re-laid out to ``[N/L, K(/2), ..., L(, 2)]``; the build
  splits it out and folds it into the constant);
* the output channels are tiled by ``nf`` vectors of ``L`` lanes (8 with AVX2, 4 with SSE2) and
  the output pixels (conv: along the row; dense: rows of ``M``) by ``nx``; the ``nf x nx``
  accumulators live in a ``local`` tile (registers), the reduction runs over the packed weight;
* int8 (uint8 x int8 -> int32) uses ``vpdpbusd`` on VNNI targets (:mod:`.x86_dot4`, a separate
  rule tried first), else ``vpmaddwd`` on int16 pairs (:mod:`.x86_intrin`): the data's
  pad/copy block writes int16 pairs ``[N, C/2, H, W, 2]``, the weight is prepacked as int16;
  fp32 broadcasts one activation per pixel and FMAs ``L``-lane weight vectors;
* depthwise convs pack the data channels ``[N, C/L, H, W, L]`` and vectorize over them;
* the whole epilogue (offset/bias add, requantize, relu, residual add, casts) is inlined into one
  block computed per tile, reading the accumulators (int8 convs: vectorized across channels,
  :func:`_schedule_epilogue`); the outer tile loops run in parallel. An epilogue ending in a
  shape-changing op (a fused pad) is computed after the MAC instead (:mod:`.epilogue`).

A rule returns ``None`` (TVM's default stays) for anything it does not recognize or when a
schedule step fails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target, codegen

from . import register_rules
from .epilogue import fits_mac_tile, schedule_after_mac
from .x86_analysis import FP32, INT8, MacPattern, a_producer, analyze
from .x86_dot4 import Int8Dot4Vnni
from .x86_intrin import PMADDWD_AVX2, PMADDWD_SSE2

LAYOUT_REWRITE = "meta_schedule.layout_rewrite_preproc"
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Isa:
    """Vector width (32-bit lanes), vector registers, and the pmaddwd intrinsic of a target."""

    lanes: int
    registers: int
    pmaddwd: str


def target_isa(target: Target) -> Isa:
    """AVX2 (8 lanes) when the target has it, else SSE2 (4 lanes, any x86-64)."""
    if codegen.target_has_features("avx2", target):
        return Isa(8, 16, PMADDWD_AVX2)
    return Isa(4, 16, PMADDWD_SSE2)


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def choose_tile(n_vectors: int, n_pixels: int, isa: Isa, pair: bool) -> tuple[int, int]:
    """``(nf, nx)``: accumulator tile of ``nf`` output-channel vectors x ``nx`` pixels that fits
    the registers (accumulators + weight vectors + one broadcast) with the fewest loads per MAC."""
    best, best_cost = (1, 1), float("inf")
    for nf in _divisors(n_vectors, 4):
        for nx in _divisors(n_pixels, 12):
            if nf * nx + nf + 1 > isa.registers - (0 if pair else 1):
                continue
            cost = (nf + nx) / (nf * nx)
            if cost < best_cost - 1e-9:
                best, best_cost = (nf, nx), cost
    return best


def _prepack_weight(sch: s_tir.Schedule, mac: s_tir.schedule.SBlockRV, p: MacPattern, lanes: int,
                    pair: bool) -> None:
    """cache_read of the constant weight into the packed layout (folded at compile time)."""
    wb = sch.cache_read(mac, p.b_read, "global")
    sch.annotate(wb, LAYOUT_REWRITE, 1)
    if pair:
        sch.unsafe_set_dtype(wb, 0, "int16")
    if p.kind == "matmul":
        index_map = (lambda k, n: (n // lanes, k // 2, n % lanes, k % 2)) if pair else \
            (lambda k, n: (n // lanes, k, n % lanes))
    elif pair:
        index_map = lambda f, c, r, s: (f // lanes, c // 2, r, s, f % lanes, c % 2)  # noqa: E731
    else:
        index_map = lambda f, c, r, s: (f // lanes, c, r, s, f % lanes)  # noqa: E731
    sch.transform_layout(wb, ("write", 0), index_map)


def _pack_data(sch: s_tir.Schedule, mac: s_tir.schedule.SBlockRV, p: MacPattern, lanes: int,
               pair: bool) -> None:
    """int8: data as int16 channel pairs; depthwise: data channels packed by ``lanes``."""
    if not pair and p.kind != "depthwise":
        return
    producer = a_producer(sch, p)
    if producer is None:
        producer = sch.cache_read(mac, p.a_read, "global")
    if pair:
        sch.unsafe_set_dtype(producer, 0, "int16")
        if p.kind == "conv2d":
            sch.transform_layout(producer, ("write", 0), lambda n, c, h, w: (n, c // 2, h, w, c % 2))
    else:
        sch.transform_layout(producer, ("write", 0), lambda n, c, h, w: (n, c // lanes, h, w, c % lanes))
    if p.a_is_param:
        loops = sch.get_loops(producer)
        sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 1 else loops[0])
    else:
        _parallel_outer(sch, producer)


def _parallel_outer(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    loops = sch.get_loops(block)
    if len(loops) >= 3:
        sch.parallel(sch.fuse(*loops[:2]))
    elif loops:
        sch.parallel(loops[0])


def _inline_epilogue(sch: s_tir.Schedule, p: MacPattern) -> s_tir.schedule.SBlockRV | None:
    """Inline every epilogue block into the last one; that block, or ``None`` when none."""
    if not p.epilogue:
        return None
    for name in p.epilogue[:-1]:
        sch.compute_inline(sch.get_sblock(name))
    return sch.get_sblock(p.epilogue[-1])


def _tile_loops(sch: s_tir.Schedule, mac: s_tir.schedule.SBlockRV, p: MacPattern, lanes: int,
                nf: int, nx: int, pair: bool):
    """Split/reorder the MAC loops; return (outer spatial loops, first reduction loop, micro loops)."""
    if p.kind == "matmul":
        loops = sch.get_loops(mac)
        m = sch.fuse(*loops[:-2]) if len(loops) > 3 else loops[0]
        nn, k = loops[-2], loops[-1]
        fo, fi, fv = sch.split(nn, [None, nf, lanes])
        mo, mi = sch.split(m, [None, nx])
        if pair:
            ko, kp = sch.split(k, [None, 2])
            sch.reorder(fo, mo, ko, fi, mi, fv, kp)
        else:
            ko = k
            sch.reorder(fo, mo, ko, fi, mi, fv)
        return [fo, mo], ko, (fi, mi, fv)
    n, ff, yy, xx, rc, ry, rx = sch.get_loops(mac)
    fo, fi, fv = sch.split(ff, [None, nf, lanes])
    xo, xi = sch.split(xx, [None, nx])
    if pair:
        rco, rcp = sch.split(rc, [None, 2])
        sch.reorder(n, fo, yy, xo, rco, ry, rx, fi, xi, fv, rcp)
    else:
        rco = rc
        sch.reorder(n, fo, yy, xo, rco, ry, rx, fi, xi, fv)
    return [n, fo, yy, xo], rco, (fi, xi, fv)


def _fits(p: MacPattern, lanes: int, pair: bool) -> bool:
    """Shapes this schedule handles without padding."""
    if p.kind == "matmul":
        n_out, red = p.extents[-2], p.extents[-1]
    else:
        n_out, red = p.extents[1], p.extents[4]
    if n_out % lanes:
        return False
    return not pair or red % 2 == 0


def schedule_mac(func: tirx.PrimFunc, target: Target, pair: bool, kinds: tuple[str, ...],
                 dtype: str) -> s_tir.Schedule | None:
    """The register-blocked schedule of a recognized MAC PrimFunc (see the module docstring), or
    ``None`` when ``func`` is not a ``kinds``/``dtype`` MAC this schedule handles."""
    sch = s_tir.Schedule(func)
    p = analyze(sch)
    if p is None or p.kind not in kinds or p.dtype != dtype:
        return None
    isa = target_isa(target)
    lanes = isa.lanes
    if not _fits(p, lanes, pair):
        return None
    try:
        return _apply(sch, p, isa, pair)
    except Exception as err:  # noqa: BLE001  (any schedule step the IR does not allow: decline)
        _LOG.info("x86 kernel rule declined %s: %s", p.block, err)
        return None


def _apply(sch: s_tir.Schedule, p: MacPattern, isa: Isa, pair: bool) -> s_tir.Schedule:
    lanes = isa.lanes
    per_tile = not p.epilogue or fits_mac_tile(sch, p.block, p.epilogue[-1])
    mac = sch.get_sblock(p.block)
    _prepack_weight(sch, mac, p, lanes, pair)
    _pack_data(sch, mac, p, lanes, pair)
    copy_out = None
    if p.kind != "matmul":
        if not p.epilogue:  # the conv writes the function's output: pack an intermediate, copy it out
            copy_out = sch.cache_write(mac, 0, "global")
        sch.transform_layout(mac, ("write", 0), lambda n, f, y, x: (n, f // lanes, y, x, f % lanes))
    n_vec = (p.extents[-2] if p.kind == "matmul" else p.extents[1]) // lanes
    n_pix = _rows(p) if p.kind == "matmul" else p.extents[3]
    nf, nx = choose_tile(n_vec, n_pix, isa, pair)
    epilogue = copy_out if copy_out is not None else _inline_epilogue(sch, p)
    after_mac = None
    if not per_tile:  # e.g. a fused pad: computed after the MAC over its whole (larger) output
        after_mac, epilogue = epilogue, None
    outer, red, (fi, xi, fv) = _tile_loops(sch, mac, p, lanes, nf, nx, pair)
    writeback = sch.cache_write(mac, 0, "local")
    sch.reverse_compute_at(writeback, outer[-1])
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, outer[-1])
        sch.compute_inline(writeback)
        _schedule_epilogue(sch, epilogue, p, lanes)
    if after_mac is not None:
        schedule_after_mac(sch, after_mac)
    sch.parallel(sch.fuse(*outer[:-1]) if len(outer) > 1 else outer[0])
    sch.unroll(fi)
    sch.unroll(xi)
    if not pair:
        sch.vectorize(fv)
    init = sch.decompose_reduction(mac, red)
    if pair:
        sch.tensorize(fv, isa.pmaddwd)
    sch.vectorize(sch.get_loops(init)[-1])
    return sch


def _rows(p: MacPattern) -> int:
    rows = 1
    for extent in p.extents[:-2]:
        rows *= extent
    return rows


VECTORIZED_INT8_EPILOGUE = True
"""Vectorize the int8 conv epilogue (see :func:`_schedule_epilogue`); ``False`` unrolls it scalar
as before, for comparisons (``benchmarks/int8_vs_fp32_interleaved.py --with-unrolled-epilogue``)."""


def _unroll_epilogue(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, p: MacPattern) -> None:
    """Unroll the epilogue's per-tile loops (NCHW: pixels innermost; dense: channels innermost)."""
    loops = sch.get_loops(block)
    for loop in (loops[-1:] if p.kind == "matmul" else loops[-2:]):
        sch.unroll(loop)


def _schedule_epilogue(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, p: MacPattern, lanes: int) -> None:
    """Schedule the epilogue's per-tile loops.

    int8 conv: the requantize epilogue (offset, scale, round, clip, cast per element) is
    vectorized across output channels, ``lanes`` at a time, the accumulator tile's vectors
    (per-channel offsets and scales load as vectors). The NCHW output's channels are strided by
    ``H * W`` and TVM scalarizes a vector loop that stores with a stride, so the epilogue writes
    a ``local`` tile laid out ``[F / lanes, X, lanes]`` (loops ``(f / lanes, x, f % lanes)``, the
    last vectorized) and an unrolled copy writes it out. This made int8 1x1 convs 20-30% faster;
    for the light fp32 (bias, relu) and dense epilogues the extra copy costs more than it saves,
    so those loops are unrolled (NCHW: pixels innermost; dense: channels innermost).
    """
    if p.dtype != INT8 or p.kind == "matmul" or not VECTORIZED_INT8_EPILOGUE:
        _unroll_epilogue(sch, block, p)
        return
    tile = sch.get_loops(block)[-3]  # the tile loop the epilogue was computed at
    copy = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(copy, tile)  # cache_write puts the copy at the root: bring it to the tile
    sch.transform_layout(block, ("write", 0), lambda n, f, y, x: (n, f // lanes, y, x, f % lanes))
    f_loop, x_loop = sch.get_loops(block)[-2:]
    fo, fl = sch.split(f_loop, [None, lanes])
    sch.reorder(fo, x_loop, fl)
    sch.unroll(fo)
    sch.unroll(x_loop)
    sch.vectorize(fl)
    for loop in sch.get_loops(copy)[-2:]:
        sch.unroll(loop)


class _MacRule(ScheduleRule):
    """Common ``apply``: CPU targets only, then :func:`schedule_mac` with the rule's settings."""

    pair: bool = False
    kinds: tuple[str, ...] = ()
    dtype: str = FP32

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or str(target.kind.name) != "llvm":
            return None
        return schedule_mac(func, target, self.pair, self.kinds, self.dtype)


class Int8Conv2dAvx2(_MacRule):
    """uint8 x int8 -> int32 ``conv2d`` (NCHW/OIHW, groups=1, even input channels, output
    channels a multiple of 8 (4 without AVX2)), any kernel/stride/dilation, with its fused epilogue:
    int16-pair data packing in the pad block, int16 weights prepacked ``[F/8, C/2, KH, KW, 8, 2]``,
    ``vpmaddwd`` (``pmaddwd`` on SSE2) micro-kernel with ``nf x nx`` int32 accumulators."""

    pair = True
    kinds = ("conv2d",)
    dtype = INT8


class Int8DenseAvx2(_MacRule):
    """uint8 x int8 -> int32 ``matmul`` ``[..., M, K] x [K, N]`` with a constant weight (even K,
    N a multiple of 8): data widened to int16, weight prepacked ``[N/8, K/2, 8, 2]`` int16,
    ``vpmaddwd`` micro-kernel over ``nf`` column vectors x ``nx`` rows, epilogue fused."""

    pair = True
    kinds = ("matmul",)
    dtype = INT8


class Int8Conv2dDirect(_MacRule):
    """uint8 x int8 -> int32 ``conv2d`` the pair kernel does not take (odd input channels, e.g.
    an RGB first layer): weight prepacked ``[F/8, C, KH, KW, 8]`` int8, one broadcast activation
    times 8-lane sign-extended weights (``vpmulld`` + ``vpaddd``), same tiling and epilogue."""

    pair = False
    kinds = ("conv2d",)
    dtype = INT8


class Fp32Conv2dAvx2(_MacRule):
    """float32 ``conv2d`` (NCHW/OIHW, groups=1, output channels a multiple of 8 (4 without AVX2)):
    weight prepacked ``[F/8, C, KH, KW, 8]``, broadcast-FMA micro-kernel with ``nf x nx`` vector
    accumulators, epilogue fused per tile."""

    pair = False
    kinds = ("conv2d",)
    dtype = FP32


class Fp32DenseAvx2(_MacRule):
    """float32 ``matmul`` ``[..., M, K] x [K, N]`` with a constant weight (N a multiple of 8):
    weight prepacked ``[N/8, K, 8]``, broadcast-FMA micro-kernel, epilogue fused."""

    pair = False
    kinds = ("matmul",)
    dtype = FP32


class DepthwiseConv2d(_MacRule):
    """(Not registered, see :func:`x86_rules`.) Depthwise ``conv2d`` (groups = in = out channels, multiple of 8 (4 without AVX2)), int8
    (uint8 x int8 -> int32) and float32: data channels packed ``[N, C/8, H, W, 8]`` in the pad
    block, weight prepacked ``[C/8, 1, KH, KW, 8]``, 8-lane multiply-accumulate over the window."""

    pair = False
    kinds = ("depthwise",)

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or str(target.kind.name) != "llvm":
            return None
        for dtype in (INT8, FP32):
            sch = schedule_mac(func, target, False, self.kinds, dtype)
            if sch is not None:
                return sch
        return None


class Int8DepthwiseConv2d(DepthwiseConv2d):
    """:class:`DepthwiseConv2d` for uint8 x int8 -> int32 only. TVM's default schedule of an int8
    depthwise conv with its zero-point pad fused in is erratic (efficientnet-lite0: 0.3 ms for
    most layers, 10-46 ms for three 5x5 ones); this rule is steady (about 1 ms on those)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or str(target.kind.name) != "llvm":
            return None
        return schedule_mac(func, target, False, self.kinds, INT8)


@register_rules("x86_64")
def x86_rules(target: Target) -> list[ScheduleRule]:
    """The x86 kernel rules, tried in this order.

    :class:`~tvm_mpq.kernels.x86_dot4.Int8Dot4Vnni` (``vpdpbusd``) comes first and declines on
    targets without VNNI, where the ``vpmaddwd`` kernels take the int8 MACs.
    :class:`DepthwiseConv2d` is in the list for int8 only (:class:`Int8DepthwiseConv2d`): for
    fp32, TVM's default is as fast (LLVM vectorizes the plain NCHW depthwise loops along the
    row); for int8 with its zero-point pad fused in, the default is erratic (10-46 ms instead
    of ~1 ms on three efficientnet-lite0 layers, which made the int8 model 3x slower than fp32)."""
    return [Int8Dot4Vnni(), Int8Conv2dAvx2(), Int8DenseAvx2(), Int8Conv2dDirect(), Int8DepthwiseConv2d(), Fp32Conv2dAvx2(),
            Fp32DenseAvx2()]


def rule_for(func: tirx.PrimFunc, target: Target) -> str | None:
    """The name of the x86 rule that schedules ``func`` (``None``: TVM's default stays);
    for tests and benchmarks."""
    for rule in x86_rules(target):
        if rule.apply(func, target, False) is not None:
            return type(rule).__name__
    return None
