"""Winograd F(4x4, 3x3) for channels-last float32 3x3 stride-1 convs: the compute and its CPU schedule.

A direct 3x3 conv costs 9 multiply-accumulates per output value and input channel; at the FMA
peak of the CPU that is where both tvm-mpq's direct kernel (:mod:`tvm_mpq.kernels.cpu_mac`) and
onnxruntime's MLAS stop (resnet18's 3x3 64->64 @56: 1.04 ms in both, 2026-12-01). Winograd's
minimal filtering computes each 4x4 output tile from a 6x6 input tile with 36 products per
input channel instead of 144 (4x fewer), at the price of three cheap transforms:

    V = B^T d B      (per 6x6 input tile and input channel: additions and a few constants)
    M = V . U        (36 independent GEMMs [tiles x C] x [C x K]; U = G w G^T, at compile time)
    Y = A^T M A      (per tile and output channel), then the conv's fused epilogue.

``A``, ``B``, ``G`` are TVM's Cook-Toom matrices (``topi.nn.winograd_util``, the same points as
``topi.nn.conv2d_winograd_nhwc``). TVM's own NHWC Winograd compute cannot be used here: in 0.27
its pre-transformed-weight path raises ("LEGACY-FLOW"), and it writes the transforms as
reductions over constant matrices whose zero entries stay in the code. The transforms below are
written out term by term (a sum over the non-zero entries only) and separably (``B^T d`` then
``(B^T d) B``: 312 instead of 676 multiply-adds per tile and channel).

:func:`winograd_conv2d_nhwc` is the TE compute (used by :mod:`relay_passes.winograd_conv`);
:class:`WinogradConv2d` schedules the fused PrimFunc: the transforms vectorized over channels with
the 6x6 tile in registers, the GEMMs with a register tile of ``nx`` tiles x ``nf`` vectors
(:func:`tvm_mpq.kernels.cpu_mac.choose_tile`, widths from the target), the inverse transform
and the epilogue as parallel, vectorized stages. The sums are the same products in another
order: results agree with the direct conv to float32 rounding (about 1e-6 of the output scale).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from tvm import s_tir, te, tirx, topi
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from .cpu_generic import schedule_spatial
from .cpu_intrin import REGISTER_SCOPE
from .cpu_isa import cpu_isa
from .cpu_mac import _finish_tile, choose_tile

TILE = 4
"""Output tile size m of F(m x m, 3 x 3)."""
ALPHA = TILE + 2
BLOCK_PREFIX = "winograd_"
STAGES = ("pad", "bt", "pack", "gemm", "at", "inverse", "output")
"""The blocks of :func:`winograd_conv2d_nhwc`, each named ``winograd_<stage>``."""


@lru_cache(maxsize=None)
def transform_matrices() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A [6, 4], B [6, 6], G [6, 3])`` of F(4x4, 3x3), TVM's interpolation points."""
    from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points

    a, b, g = _cook_toom_convolution(_interpolation_points(TILE + 3 - 2), TILE, 3)
    return np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(g, np.float64)


def transform_weight(weight_hwio: np.ndarray) -> np.ndarray:
    """``U[eps, nu, c, k] = (G w[:, :, c, k] G^T)[eps, nu]`` (float32) of an HWIO 3x3 weight."""
    _, _, g = transform_matrices()
    return np.einsum("ea,abck,nb->enck", g, weight_hwio.astype(np.float64), g).astype(np.float32)


def _combination(coefficients: np.ndarray, term) -> tirx.PrimExpr:  # noqa: ANN001 - term: int -> PrimExpr
    """``sum_i coefficients[i] * term(i)`` over the non-zero coefficients (``+-1`` without a multiply)."""
    out = None
    for i, c in enumerate(coefficients):
        if c == 0:
            continue
        t = term(i)
        t = t if c == 1 else (-t if c == -1 else t * tirx.const(float(c), "float32"))
        out = t if out is None else out + t
    return out if out is not None else tirx.const(0.0, "float32")


def _by_index(index: tirx.PrimExpr, values: list[tirx.PrimExpr]) -> tirx.PrimExpr:
    """``values[index]`` as a chain of selects (constant once ``index``'s loop is unrolled)."""
    out = values[-1]
    for i in range(len(values) - 2, -1, -1):
        out = tirx.Select(index == i, values[i], out)
    return out


def winograd_conv2d_nhwc(data: te.Tensor, kernel_pack: te.Tensor, padding: tuple[int, int, int, int]) -> te.Tensor:
    """``conv2d(data, w)`` (NHWC, 3x3, stride 1, ``padding`` top/left/bottom/right) from
    ``kernel_pack = transform_weight(w)`` ``[6, 6, C, K]``: float32 ``[N, H', W', K]``."""
    a_mat, b_mat, _ = transform_matrices()
    n, h, w, c = (int(d) for d in data.shape)
    k = int(kernel_pack.shape[3])
    top, left, bottom, right = padding
    out_h, out_w = h + top + bottom - 2, w + left + right - 2
    tiles_h, tiles_w = -(-out_h // TILE), -(-out_w // TILE)
    tiles = n * tiles_h * tiles_w
    pad_h, pad_w = tiles_h * TILE + 2, tiles_w * TILE + 2
    padded = topi.nn.pad(data, (0, top, left, 0), (0, pad_h - h - top, pad_w - w - left, 0),
                         name=BLOCK_PREFIX + "pad")

    def tile_origin(p):  # noqa: ANN001, ANN202
        return p // (tiles_h * tiles_w), (p // tiles_w) % tiles_h * TILE, p % tiles_w * TILE

    def bt(eps, col, p, ci):  # noqa: ANN001, ANN202 - (B^T d)[eps, col]
        b, y, x = tile_origin(p)
        return _by_index(eps, [_combination(b_mat[:, e], lambda a: padded[b, y + a, x + col, ci]) for e in range(ALPHA)])

    bt_t = te.compute((ALPHA, ALPHA, tiles, c), bt, name=BLOCK_PREFIX + "bt")
    pack = te.compute((ALPHA, ALPHA, tiles, c), lambda eps, nu, p, ci: _by_index(
        nu, [_combination(b_mat[:, v], lambda col: bt_t[eps, col, p, ci]) for v in range(ALPHA)]),
        name=BLOCK_PREFIX + "pack")
    rc = te.reduce_axis((0, c), name="rc")
    gemm = te.compute((ALPHA, ALPHA, tiles, k), lambda eps, nu, p, co: te.sum(
        pack[eps, nu, p, rc] * kernel_pack[eps, nu, rc, co], axis=rc), name=BLOCK_PREFIX + "gemm")
    at = te.compute((TILE, ALPHA, tiles, k), lambda vh, col, p, co: _by_index(
        vh, [_combination(a_mat[:, v], lambda a: gemm[a, col, p, co]) for v in range(TILE)]), name=BLOCK_PREFIX + "at")
    inverse = te.compute((TILE, TILE, tiles, k), lambda vh, vw, p, co: _by_index(
        vw, [_combination(a_mat[:, v], lambda col: at[vh, col, p, co]) for v in range(TILE)]),
        name=BLOCK_PREFIX + "inverse")
    return te.compute((n, out_h, out_w, k), lambda b, y, x, co: inverse[
        y % TILE, x % TILE, b * tiles_h * tiles_w + y // TILE * tiles_w + x // TILE, co], name=BLOCK_PREFIX + "output")


def _blocks(sch: s_tir.Schedule) -> tuple[dict[str, s_tir.schedule.SBlockRV], list[s_tir.schedule.SBlockRV],
                                          list[s_tir.schedule.SBlockRV]] | None:
    """The Winograd stages of a PrimFunc by stage name, the blocks before them (steps fusion put
    in front: a diffusion UNet's scalar arithmetic on its noise level, which the last conv's
    epilogue reads) and the blocks after them (the conv's fused epilogue), in order; ``None`` if
    the PrimFunc is not this compute."""
    stages: dict[str, s_tir.schedule.SBlockRV] = {}
    prologue, epilogue = [], []
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        name = sch.get(block).name_hint
        stage = name[len(BLOCK_PREFIX):] if name.startswith(BLOCK_PREFIX) else None
        if stage in STAGES and stage not in stages:
            stages[stage] = block
        elif len(stages) == len(STAGES):
            epilogue.append(block)
        elif not stages:
            prologue.append(block)
        else:
            return None  # something between the stages: not this compute
    return (stages, prologue, epilogue) if len(stages) == len(STAGES) else None


def _schedule_transform(sch: s_tir.Schedule, half: s_tir.schedule.SBlockRV, full: s_tir.schedule.SBlockRV,
                        lanes: int) -> None:
    """A separable transform ``full = (X^T t) X`` of ``[6|4, 6|4, tiles, channels]``: parallel over
    (tile, channel vector); its first half ``X^T t`` computed there in registers
    (:data:`~tvm_mpq.kernels.cpu_intrin.REGISTER_SCOPE`); the small matrix loops unrolled, the
    channels vectorized."""
    i, j, p, c = sch.get_loops(full)
    co, cv = sch.split(c, [None, lanes])
    sch.reorder(p, co, i, j, cv)
    sch.parallel(sch.fuse(p, co))
    sch.compute_at(half, sch.get_loops(full)[0])
    sch.set_scope(half, 0, REGISTER_SCOPE)
    for block in (half, full):
        *outer, vec = sch.get_loops(block)[1:]
        for loop in outer:
            sch.unroll(loop)
        sch.vectorize(vec)


def schedule_winograd(func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | None:
    """The schedule of a fused :func:`winograd_conv2d_nhwc` PrimFunc, or ``None``."""
    sch = s_tir.Schedule(func)
    found = _blocks(sch)
    if found is None:
        return None
    blocks, prologue, epilogue = found
    isa = cpu_isa(target)
    channels = int(sch.get(blocks["pack"]).writes[0].source.shape[3])
    out = sch.get(blocks["gemm"]).writes[0].source
    tiles, k = int(out.shape[2]), int(out.shape[3])
    lanes_c, lanes_k = isa.channel_lanes(channels), isa.channel_lanes(k)
    if lanes_c is None or lanes_k is None:
        return None
    # the prologue computed where it is read (a step the IR cannot inline stays a stage of its
    # own), then the input transform: per tile and channel vector, the 6x6 tile and B^T d in registers
    for block in reversed(prologue):
        _inline_or_stage(sch, block, lanes_c)
    sch.compute_inline(blocks["pad"])
    _schedule_transform(sch, blocks["bt"], blocks["pack"], lanes_c)
    # 36 GEMMs: register tile of nx tiles x nf vectors of output channels, accumulated over C
    nf, nx = choose_tile(k // lanes_k, tiles, isa.registers)
    eps, nu, p, kk, rc = sch.get_loops(blocks["gemm"])
    ko, kf, kv = sch.split(kk, [None, nf, lanes_k])
    po, pi = sch.split(p, [None, nx])
    sch.reorder(eps, nu, ko, po, rc, pi, kf, kv)
    _finish_tile(sch, blocks["gemm"], None, po, lanes_k)
    sch.parallel(sch.fuse(eps, nu, ko))
    sch.unroll(pi)
    sch.unroll(kf)
    sch.vectorize(kv)
    init = sch.decompose_reduction(blocks["gemm"], rc)
    sch.vectorize(sch.get_loops(init)[-1])
    # output transform: per tile and channel vector, A^T M in registers
    _schedule_transform(sch, blocks["at"], blocks["inverse"], lanes_k)
    # the output gather and the conv's epilogue (bias, activation, residual add): one stage
    # (a block that writes a function output, e.g. an fp32 result also quantized for the next int8
    # layer, cannot be inlined: it stays a parallel, vectorized stage of its own)
    tail = [blocks["output"], *epilogue]
    for block in tail[:-1]:
        _inline_or_stage(sch, block, lanes_k)
    schedule_spatial(sch, tail[-1], lanes_k)
    return sch


def _inline_or_stage(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> None:
    """``block`` computed where it is read, or, where the IR does not allow that (it writes a
    function output, it reduces), a parallel, vectorized stage of its own."""
    try:
        sch.compute_inline(block)
    except Exception:  # noqa: BLE001 - see the docstring
        schedule_spatial(sch, block, lanes)


class WinogradConv2d(ScheduleRule):
    """The fused PrimFunc of a Winograd F(4x4, 3x3) conv (:func:`winograd_conv2d_nhwc`) and its epilogue."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or str(target.kind.name) != "llvm":
            return None
        return schedule_winograd(func, target)
