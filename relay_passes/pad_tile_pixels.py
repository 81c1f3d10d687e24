"""PadTilePixels: a GEMM or row conv whose pixel count has no good tile length computes a few more.

The CPU GEMM and conv kernels (:mod:`tvm_mpq.kernels.cpu_mac`) tile the output into register
blocks of ``nx`` pixels x ``nf`` channel vectors, ``nx`` a divisor of the pixels the tile runs
along (a matmul's rows, a conv's row width) up to 16 (:func:`~tvm_mpq.kernels.cpu_mac.choose_tile`).
A count with no small divisor leaves one-pixel tiles, one weight vector load per FMA:
pyannote's segmentation model, over a 10 s chunk, has 589 frames (19 x 31) for its LSTM input
projections and conv rows of 5321 (17 x 313) and 1769 (29 x 61) pixels; its projections ran at
62 GMAC/s on two Zen 4 cores (``benchmarks/kernel_profile.py pyannote-segmentation``, 2026-12-05).

This pass lets such a MAC compute up to an eighth more pixels, the count whose tile costs the
least (:func:`padded_pixels`), and slices the product back, so every value the model computes
is the same:

* ``matmul(x [M, K], W)`` (constant 2-D weight, the rows flattened by
  :class:`~relay_passes.flatten_matmul_rows.FlattenMatmulRows`): ``x`` gets zero rows
  (one more injective op, fused into its producer), the product's first ``M`` rows are kept;
* a channels-last ``conv2d`` (``NHWC``, after :class:`~relay_passes.convert_layout.ConvertToChannelsLast`)
  that the kernel tiles along its rows (not depthwise or grouped; a 1x1 conv only when its map
  is one row high: the kernel tiles a pointwise conv over the whole map; nor a row conv over a
  batch whose images give as good a tile, ``KernelPlan.over_batch``): its right padding
  grows by ``stride x`` the extra columns, which read only zero padding, and the first ``W``
  output columns are kept.

Float32 MACs only: an int8 build of pyannote measured slower with it (1.12x, the GEMMs'
requantizing epilogue then runs as its own pass over the int32 products instead of per register
tile) or level (0.995x, the convs alone); ``benchmarks/pad_tile_pixels.py``, 2026-12-05. Convs
whose weight streams from memory (the kernel blocks their reduction) are left as they are. Runs
in the CPU build (:func:`tvm_mpq.target_build.passes.graph_passes`), in every Relax function.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard

from relay_passes.convert_layout import conv_out_dtype, tensor_shape
from relay_passes.precision_annotation import rewrite_every_function
from tvm_mpq.kernels.cpu_isa import CpuIsa
from tvm_mpq.kernels.cpu_mac import STREAMED_WEIGHT_BYTES, choose_tile, loads_per_mac

MAX_EXTRA = 1 / 8
"""The most pixels the pass adds, as a fraction of the MAC's own (at least :data:`MIN_EXTRA`)."""
MIN_EXTRA = 15
"""Pixels the pass may always add (a 19-pixel row may become 20 or 32)."""
LOADS_FLOOR = 0.5
"""Loads per multiply-accumulate below which a tile is bound by its FMAs, not its loads (two
loads per cycle to two FMA pipes): tiles below it cost the same."""
MIN_GAIN = 0.85
"""A padded count is taken where its cost is below this fraction of the unpadded one."""


def tile_cost(pixels: int, vectors: int, registers: int) -> float:
    """Relative time of a MAC over ``pixels`` x ``vectors`` channel vectors: its pixels times the
    loads per multiply-accumulate of its register tile, no less than :data:`LOADS_FLOOR`."""
    nf, nx = choose_tile(vectors, pixels, registers)
    return pixels * max(LOADS_FLOOR, loads_per_mac(nf, nx))


def padded_pixels(pixels: int, vectors: int, registers: int) -> int:
    """The pixel count, ``pixels`` or up to :data:`MAX_EXTRA` more, whose tile costs least
    (:func:`tile_cost`); ``pixels`` unless that saves more than ``1 - MIN_GAIN``."""
    extra = max(MIN_EXTRA, int(pixels * MAX_EXTRA))
    costs = {p: tile_cost(p, vectors, registers) for p in range(pixels, pixels + extra + 1)}
    best = min(costs, key=lambda p: (costs[p], p))
    return best if costs[best] < MIN_GAIN * costs[pixels] else pixels


def _is_integer(expr: relax.Call) -> bool:
    return str(expr.args[1].ty.dtype) != "float32"


@tvm.transform.module_pass(opt_level=0, name="PadTilePixels")
class PadTilePixels:
    """Pad the pixels of every constant-weight matmul and row-tiled channels-last conv of every
    Relax function to the count :func:`padded_pixels` gives on ``isa``, slicing the product."""

    def __init__(self, isa: CpuIsa) -> None:
        self.isa = isa
        self._matmul = is_op("relax.matmul")(wildcard(), is_const())
        self._conv = is_op("relax.nn.conv2d")(wildcard(), is_const())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_every_function(mod, (self._matmul, self._rewrite_matmul), (self._conv, self._rewrite_conv))

    def _vectors(self, channels: int) -> int | None:
        """Float32 channel vectors of the kernel's tile (the lanes :func:`~tvm_mpq.kernels.cpu_mac.plan_kernel` takes)."""
        lanes = self.isa.channel_lanes(channels)
        return None if lanes is None else channels // lanes

    def _rewrite_matmul(self, expr: relax.Expr, _matches: dict) -> relax.Expr:
        if _is_integer(expr):
            return expr
        data, weight = tensor_shape(expr.args[0]), tensor_shape(expr.args[1])
        if data is None or weight is None or len(weight) != 2 or len(data) < 2 or any(d != 1 for d in data[:-2]):
            return expr
        rows = data[-2]
        vectors = self._vectors(weight[1])
        if vectors is None:
            return expr
        padded = padded_pixels(rows, vectors, self.isa.registers)
        if padded == rows:
            return expr
        pad = [0, 0] * (len(data) - 2) + [0, padded - rows, 0, 0]
        product = relax.op.matmul(relax.op.nn.pad(expr.args[0], pad), expr.args[1], out_dtype=expr.attrs.out_dtype)
        return relax.op.strided_slice(product, axes=[len(data) - 2], begin=[0], end=[rows])

    def _rewrite_conv(self, expr: relax.Expr, _matches: dict) -> relax.Expr:
        a = expr.attrs
        if _is_integer(expr):
            return expr
        out = tensor_shape(expr)
        weight = tensor_shape(expr.args[1])
        if (str(a.data_layout), str(a.out_layout)) != ("NHWC", "NHWC") or out is None or weight is None:
            return expr
        if int(a.groups) != 1:
            return expr
        kernel = dict(zip(str(a.kernel_layout), weight))
        taps = kernel["H"] * kernel["W"]
        if taps == 1 and out[1] > 1:
            return expr  # a pointwise conv tiles the whole map
        if taps * kernel["I"] * kernel["O"] * 4 > STREAMED_WEIGHT_BYTES:
            return expr
        vectors = self._vectors(out[3])
        if vectors is None:
            return expr
        width, registers = out[2], self.isa.registers
        padded = padded_pixels(width, vectors, registers)
        if padded == width:
            return expr
        if out[0] > 1 and out[1] == 1 and (tile_cost(padded, vectors, registers)
                                           >= MIN_GAIN * tile_cost(out[0], vectors, registers) / out[0] * width):
            return expr  # the kernel tiles the same pixel of several images (KernelPlan.over_batch): nothing wasted
        top, left, bottom, right = (int(p) for p in a.padding)
        conv = relax.op.nn.conv2d(expr.args[0], expr.args[1], strides=a.strides,
                                  padding=[top, left, bottom, right + (padded - width) * int(a.strides[1])],
                                  dilation=a.dilation, groups=1, data_layout="NHWC",
                                  kernel_layout=str(a.kernel_layout), out_layout="NHWC",
                                  out_dtype=conv_out_dtype(a))
        return relax.op.strided_slice(conv, axes=[2], begin=[0], end=[width])


__all__ = ["PadTilePixels", "padded_pixels", "tile_cost"]
