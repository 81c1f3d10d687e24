"""CUDA kernels for conv2d / matmul: a shared-memory tiled GEMM, int8 on ``dp4a``.

The graph stays NCHW on CUDA (:func:`tvm_mpq.kernels.activation_layout`). A fused MAC PrimFunc
(producers such as the conv's padding, one reduction block, the epilogue) is scheduled as an
implicit GEMM, the way TVM's dlight ``Matmul`` rule does it: the reduction block is re-indexed
as ``C[b, i, j] += A[b, i, k] * B[b, j, k]`` (``i``: output pixels / matmul rows, ``j``: output
channels, ``k``: input channels x kernel taps), padded to whole tiles, and

* each thread block computes an ``(threads_i * micro_i) x (threads_j * micro_j)`` output tile,
  each thread ``micro_i x micro_j`` accumulators in registers;
* per reduction step, the ``A`` and ``B`` tiles (``step_k`` elements of ``k``) are copied to
  shared memory by all threads, ``k`` innermost (the conv's im2col happens in this copy,
  padding included);
* **int8** (uint8 / int8 activation codes x int8 weights -> int32): the innermost 4 ``k`` are
  one ``dp4a`` (``tensorize`` with :mod:`tvm_mpq.kernels.cuda_intrin`); ``k`` is zero-padded
  to a multiple of 4, so every int8 conv and matmul runs on it (an RGB first layer too);
* **fp32**: the same tiles with fused multiply-adds, for every fp32 conv (depthwise included)
  and matmul. TVM's dlight rules were left the plain ones until a GPU measured them: on an
  H200, EfficientNet-Lite0 fp32 took 2.19 ms with TVM's ``Matmul`` (1x1 convs) and
  ``Reduction`` (depthwise convs) rules and 0.88 ms with this one (docs/results.md "CUDA
  builds on a GPU"); TVM's ``Matmul`` also asserts on a fused function that ends in a block
  of another shape (the next layer's ``pad``, a reshape);
* the epilogue (bias, requantize, activation, residual add, cast: every block after the MAC
  that keeps its output shape) is inlined into the register write-back of the tile; blocks
  that change the shape, and anything else left, each become a kernel of their own, one
  thread per element, launched after the MAC's.

Anything not recognized, or any schedule step the IR does not allow, declines (``None``): the
next rule of the list (TVM's) gets the function.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.s_tir.dlight.gpu.matmul import IterKind, IterTrait, make_iter_fusion_index_map
from tvm.tirx.analysis import undefined_vars
from tvm.target import Target

from .cuda_intrin import DATA_DTYPES, dp4a_intrin

LOG = logging.getLogger(__name__)
_Load = tvm.ir.TensorLoad
_Store = tirx.stmt.BufferStore

INT8 = "int8"
FP32 = "float32"
DP4A_GROUP = 4
"""Reduction elements per ``dp4a``."""

MAX_THREADS_PER_ELEMENTWISE_BLOCK = 256


@dataclass(frozen=True)
class GemmPlan:
    """Tiling of one GEMM: ``threads_i x threads_j`` threads per block, each computing
    ``micro_i x micro_j`` outputs; ``step_k`` reduction elements staged in shared memory per
    step, ``group`` of them per instruction (4: ``dp4a``, 1: FMA); shared-memory copies move
    ``vector`` elements per thread and instruction."""

    threads_i: int
    threads_j: int
    micro_i: int
    micro_j: int
    step_k: int
    group: int
    vector: int

    @property
    def tile(self) -> tuple[int, int, int]:
        """The padded einsum's tile ``(i, j, k)``."""
        return self.threads_i * self.micro_i, self.threads_j * self.micro_j, self.step_k


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


MIN_BLOCKS = 128
"""Thread blocks a GEMM should launch at least: about one per multiprocessor of a data-centre
GPU (A100: 108, H100 / H200: 132). A GEMM with fewer output tiles (a late 7x7 layer at batch 1)
takes smaller per-thread tiles (:func:`plan_gemm`) rather than leave most of the GPU idle."""


def _blocks(batch: int, i: int, j: int, threads_i: int, micro_i: int, threads_j: int, micro_j: int) -> int:
    return batch * -(-i // (threads_i * micro_i)) * -(-j // (threads_j * micro_j))


def plan_gemm(i: int, j: int, k: int, dtype: str, batch: int = 1) -> GemmPlan:
    """The :class:`GemmPlan` for a GEMM of ``i`` rows (pixels), ``j`` columns (output
    channels) and reduction ``k``: TVM's Matmul tile (8 x 16 threads, 4 x 4 outputs per thread)
    where the GEMM is large enough; fewer rows along a small ``i`` (a dense layer at batch 1 is
    a GEMV: one row, one output per thread); a depthwise conv (``j == 1``: its channels are
    the batch) one pixel per thread. Where ``batch`` x the output tiles would launch fewer than
    :data:`MIN_BLOCKS` thread blocks, the per-thread tile is halved (columns first) down to 1 x 1
    (H200, EfficientNet-Lite0 fully int8: 0.48 -> 0.41 ms). The whole reduction is one step when it is short (``k``
    padded to the dot group), else the largest step (<= 32 bytes) padding ``k`` by at most an
    eighth. Copies move 4 bytes / 2 floats per thread where ``k`` keeps rows aligned."""
    group = DP4A_GROUP if dtype == INT8 else 1
    max_step = 32 if dtype == INT8 else 16
    if j == 1:
        threads_i, micro_i = min(128, _pow2_at_least(i)), 1
    elif i >= 32:
        threads_i, micro_i = 8, 4
    elif i >= 8:
        threads_i, micro_i = 8, 1
    else:
        threads_i, micro_i = 1, 1
    micro_j = 4 if j >= 64 and threads_i > 1 else 1
    threads_j = 1 if j == 1 else min(16 if threads_i > 1 else 64, _pow2_at_least(-(-j // micro_j)))
    while _blocks(batch, i, j, threads_i, micro_i, threads_j, micro_j) < MIN_BLOCKS and max(micro_i, micro_j) > 1:
        if micro_j >= micro_i:
            micro_j //= 2
        else:
            micro_i //= 2
    if _round_up(k, group) <= max_step:
        step_k = _round_up(k, group)
    else:
        steps = [s for s in (32, 16, 8, 4, 2, 1) if s <= max_step and s % group == 0]
        step_k = next(s for s in steps if _round_up(k, s) * 8 <= k * 9 or s == steps[-1])
    width = 4 if dtype == INT8 else 2
    vector = width if k % width == 0 and step_k % width == 0 else 1
    return GemmPlan(threads_i, threads_j, micro_i, micro_j, step_k, group, vector)


EMULATED_THREAD = "tvm_mpq.emulated_thread"
"""Loop annotation naming the GPU thread axis a serial loop stands for (:class:`ThreadMapping`)."""


@dataclass(frozen=True)
class ThreadMapping:
    """How the schedule's loops become GPU threads: bound (``blockIdx`` / ``threadIdx``), or,
    with ``emulate``, left serial and annotated (:data:`EMULATED_THREAD`), ``dp4a`` left as its
    scalar description: the same loop nest, buffers and indices, compilable for a CPU, so a
    machine without a GPU can check what a kernel computes."""

    emulate: bool = False

    def bind(self, sch: s_tir.Schedule, loop: s_tir.schedule.LoopRV, thread: str) -> None:
        """Bind ``loop`` to ``thread`` (emulated: annotate it)."""
        if self.emulate:
            sch.annotate(loop, EMULATED_THREAD, thread)
        else:
            sch.bind(loop, thread)

    def launched(self, sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
        """Whether ``block``'s outermost loop is (an emulated) thread axis."""
        loops = sch.get_loops(block)
        if not loops:
            return False
        loop = sch.get(loops[0])
        return EMULATED_THREAD in loop.annotations if self.emulate else loop.thread_binding is not None

    def all_launched(self, sch: s_tir.Schedule) -> bool:
        """Whether every block at the root runs on threads (no serial kernel left)."""
        return all(self.launched(sch, b) for b in sch.get_child_blocks(sch.get_sblock("root")))


@dataclass(frozen=True)
class GemmBlock:
    """The reduction block of a fused MAC PrimFunc: its name, the MAC ``dtype`` (``int8``:
    8-bit codes -> int32, or ``float32``), the activation code type, and the ``tail``: the
    blocks after it from the first one writing another shape than the MAC on (names)."""

    name: str
    dtype: str
    data_dtype: str
    tail: tuple[str, ...]


def _int32_cast_of(expr: tirx.PrimExpr) -> tirx.PrimExpr | None:
    return expr.value if isinstance(expr, tirx.Cast) and str(expr.ty) == "int32" else None


def _mac_dtype(block: s_tir.SBlock) -> tuple[str, str] | None:
    """``(dtype, data dtype)`` of ``C = C + A * B`` reading ``A`` first (``reads[0]``), or None."""
    store = block.body
    if not isinstance(store, _Store) or len(block.reads) != 2:
        return None
    value = store.value
    if not isinstance(value, tirx.Add) or not isinstance(value.b, tirx.Mul):
        return None
    lhs, rhs = value.b.a, value.b.b
    if str(store.buffer.dtype) == "int32":
        lhs, rhs = _int32_cast_of(lhs), _int32_cast_of(rhs)
        dtype = INT8
    elif str(store.buffer.dtype) == FP32:
        dtype = FP32
    else:
        return None
    if not isinstance(lhs, _Load) or not isinstance(rhs, _Load):
        return None
    if not lhs.source.same_as(block.reads[0].source) or not rhs.source.same_as(block.reads[1].source):
        return None
    a_dtype, b_dtype = str(lhs.source.dtype), str(rhs.source.dtype)
    if dtype == INT8 and (a_dtype not in DATA_DTYPES or b_dtype != "int8"):
        return None
    if dtype == FP32 and (a_dtype != FP32 or b_dtype != FP32):
        return None
    return dtype, a_dtype


def _access_vars(region: list) -> set[tirx.Var] | None:
    out: set[tirx.Var] = set()
    for r in region:
        if not (isinstance(r.extent, tirx.IntImm) and int(r.extent) == 1):
            return None
        out |= set(undefined_vars(r.min))
    return out


def gemm_index_maps(block: s_tir.SBlock) -> tuple[tirx.IndexMap, ...] | None:
    """Index maps ``(block, A, B, C)`` re-indexing ``block`` as ``C[S, I, J] += A[S, I, K] *
    B[S, J, K]``, or None. Like TVM's ``get_index_map`` (whose iteration kinds it uses), but a
    GEMV (a dense layer at batch 1: no ``I`` axis) is a GEMM with one row, and a depthwise conv
    (the channel in ``A``, ``B`` and ``C``: a batch axis; no ``J``) a batch of one-column GEMMs."""
    if len(block.reads) != 2 or len(block.writes) != 1:
        return None
    a_vars, b_vars = _access_vars(block.reads[0].region), _access_vars(block.reads[1].region)
    c_vars = _access_vars(block.writes[0].region)
    if a_vars is None or b_vars is None or c_vars is None:
        return None
    traits: dict[tirx.Var, IterTrait] = {}
    for iv in block.iter_vars:
        v, unit = iv.var, isinstance(iv.dom.extent, tirx.IntImm) and int(iv.dom.extent) == 1
        if unit:
            kind = IterKind.kIter_T
        elif int(iv.iter_type) == int(tirx.IterVar.DataPar):
            in_a, in_b, in_c = v in a_vars, v in b_vars, v in c_vars
            kind = {(True, True, True): IterKind.kIter_S, (True, False, True): IterKind.kIter_I,
                    (False, True, True): IterKind.kIter_J}.get((in_a, in_b, in_c))
        elif int(iv.iter_type) == int(tirx.IterVar.CommReduce) and v in a_vars and v in b_vars and v not in c_vars:
            kind = IterKind.kIter_K
        else:
            kind = None
        if kind is None:
            return None
        traits[v] = IterTrait(kind, iv.dom.extent)
    kinds = {t.kind for t in traits.values()}
    if IterKind.kIter_K not in kinds or not kinds & {IterKind.kIter_I, IterKind.kIter_J}:
        return None

    def of(used: set[tirx.Var]) -> list[IterTrait]:
        return [traits[iv.var] for iv in block.iter_vars if iv.var in used]

    S, I, J, K = IterKind.kIter_S, IterKind.kIter_I, IterKind.kIter_J, IterKind.kIter_K
    return (make_iter_fusion_index_map([traits[iv.var] for iv in block.iter_vars], [S, I, J, K]),
            make_iter_fusion_index_map(of(a_vars), [S, I, K]),
            make_iter_fusion_index_map(of(b_vars), [S, J, K]),
            make_iter_fusion_index_map(of(c_vars), [S, I, J]))


def _is_reduction(block: s_tir.SBlock) -> bool:
    return {int(v.iter_type) for v in block.iter_vars} == {int(tirx.IterVar.DataPar), int(tirx.IterVar.CommReduce)}


def _is_spatial(block: s_tir.SBlock) -> bool:
    return {int(v.iter_type) for v in block.iter_vars} == {int(tirx.IterVar.DataPar)}


def find_gemm_block(sch: s_tir.Schedule) -> GemmBlock | None:
    """The GEMM-like reduction block of the function ``sch`` works on (exactly one reduction,
    every other block spatial, TVM's GEMM normalization applies), or None."""
    try:
        blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    except Exception:  # noqa: BLE001 - no root block: not a compute function
        return None
    if not blocks or not all(_is_reduction(b) or _is_spatial(b) for b in blocks):
        return None
    reductions = [pos for pos, b in enumerate(blocks) if _is_reduction(b)]
    if len(reductions) != 1:
        return None
    pos = reductions[0]
    main = blocks[pos]
    dtypes = _mac_dtype(main)
    if dtypes is None or gemm_index_maps(main) is None:
        return None
    out_shape = [int(d) for d in main.writes[0].source.shape]
    after = blocks[pos + 1:]
    first_tail = next((n for n, b in enumerate(after) if [int(d) for d in b.writes[0].source.shape] != out_shape),
                      len(after))
    return GemmBlock(main.name_hint, dtypes[0], dtypes[1], tuple(b.name_hint for b in after[first_tail:]))


def schedule_gemm(func: tirx.PrimFunc, dtypes: tuple[str, ...] = (INT8, FP32),
                  threads: ThreadMapping | None = None) -> s_tir.Schedule | None:
    """The tiled GEMM schedule of a fused MAC PrimFunc (see the module docstring), or None.
    ``threads``: how loops become GPU threads (default: bound; :class:`ThreadMapping` with
    ``emulate=True`` gives the same schedule as serial loops, for checking it on a CPU)."""
    threads = threads or ThreadMapping()
    sch = s_tir.Schedule(func)
    gemm = find_gemm_block(sch)
    if gemm is None or gemm.dtype not in dtypes:
        return None
    try:
        _schedule(sch, gemm, threads)
    except Exception as err:  # noqa: BLE001 - a step the IR does not allow: decline, keep the build going
        LOG.info("cuda kernel declined %s: %s", gemm.name, err)
        if LOG.isEnabledFor(logging.DEBUG):
            raise
        return None
    return sch if threads.all_launched(sch) else None


# ------------------------------------------------------------------------------ steps
def _normalize_to_gemm(sch: s_tir.Schedule, main: s_tir.schedule.SBlockRV) -> None:
    """Re-index ``main`` as ``C[b, i, j] += A[b, i, k] * B[b, j, k]`` (:func:`gemm_index_maps`)."""
    reindex_a = sch.reindex(main, ("read", 0))
    reindex_b = sch.reindex(main, ("read", 1))
    reindex_c = sch.reindex(main, ("write", 0))
    block_map, a_map, b_map, c_map = gemm_index_maps(sch.get(main))
    sch.transform_layout(reindex_a, ("write", 0), a_map)
    sch.transform_layout(reindex_b, ("write", 0), b_map)
    sch.transform_layout(reindex_c, ("read", 0), c_map)
    sch.transform_block_layout(main, block_map)


def _inline_producers(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    """Inline every producer chain of ``block`` that can be (padding, copies, casts)."""
    progress = True
    while progress:
        progress = False
        for producer in sch.get_producers(block):
            try:
                sch.compute_inline(producer)
                progress = True
            except Exception:  # noqa: BLE001 - not inlinable: it stays a stage
                _inline_producers(sch, producer)


def _consumer_closure(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> list[s_tir.schedule.SBlockRV]:
    out, todo = [], list(sch.get_consumers(block))
    while todo:
        b = todo.pop(0)
        if not any(sch.get(b).same_as(sch.get(o)) for o in out):
            out.append(b)
            todo.extend(sch.get_consumers(b))
    return out


def _inline_epilogue(sch: s_tir.Schedule, writeback: s_tir.schedule.SBlockRV, tail: tuple[str, ...]) -> None:
    """Inline the epilogue into the tile's write-back: the blocks after the MAC up to its
    ``tail`` (and the copies the GEMM normalization added) are folded into the last of them,
    which is reverse-inlined. Nothing is inlined into the tail: it stays a kernel of its own,
    reading the epilogue's result."""

    def in_tail(block: s_tir.schedule.SBlockRV) -> bool:
        return sch.get(block).name_hint in tail

    progress = True
    while progress:
        progress = False
        for block in _consumer_closure(sch, writeback):
            if in_tail(block) or any(in_tail(c) for c in sch.get_consumers(block)):
                continue
            try:
                sch.compute_inline(block)
                progress = True
            except Exception:  # noqa: BLE001 - e.g. the last epilogue block: reverse-inlined below
                continue
        for block in sch.get_consumers(writeback):
            if in_tail(block):
                continue
            try:
                sch.reverse_compute_inline(block)
                progress = True
            except Exception:  # noqa: BLE001 - e.g. it reads another producer: inline that one first
                for producer in sch.get_producers(block):
                    if not sch.get(producer).same_as(sch.get(writeback)):
                        _inline_producers(sch, producer)
                        try:
                            sch.compute_inline(producer)
                            progress = True
                        except Exception:  # noqa: BLE001 - it stays a kernel of its own
                            pass


def _launch_elementwise(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, threads: ThreadMapping) -> None:
    """One thread per element: the block's loops fused, split over thread blocks."""
    loops = sch.get_loops(block)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    bx, tx = sch.split(fused, [None, MAX_THREADS_PER_ELEMENTWISE_BLOCK])
    threads.bind(sch, bx, "blockIdx.x")
    threads.bind(sch, tx, "threadIdx.x")


def _launch_leftovers(sch: s_tir.Schedule, threads: ThreadMapping) -> None:
    """Blocks still at the root without threads (a tail of another shape, a producer that
    could not be inlined): chains inlined where possible, the rest launched elementwise."""
    root = sch.get_sblock("root")
    for block in sch.get_child_blocks(root):
        if not threads.launched(sch, block) and _is_spatial(sch.get(block)):
            try:
                sch.compute_inline(block)
            except Exception:  # noqa: BLE001 - not inlinable: its own kernel
                pass
    for block in sch.get_child_blocks(root):
        if not threads.launched(sch, block) and _is_spatial(sch.get(block)):
            _launch_elementwise(sch, block, threads)


def _schedule(sch: s_tir.Schedule, gemm: GemmBlock, threads: ThreadMapping) -> None:
    main = sch.get_sblock(gemm.name)
    _normalize_to_gemm(sch, main)
    b_ext, i_ext, j_ext, k_ext = (int(v.dom.extent) for v in sch.get(main).iter_vars)
    plan = plan_gemm(i_ext, j_ext, k_ext, gemm.dtype, b_ext)
    tile_i, tile_j, step_k = plan.tile
    sch.pad_einsum(main, [1, tile_i, tile_j, step_k])
    batch, i, j, k = sch.get_loops(main)
    bi, ti, ii = sch.split(i, [None, plan.threads_i, plan.micro_i])
    bj, tj, jj = sch.split(j, [None, plan.threads_j, plan.micro_j])
    ko, ki = sch.split(k, [None, step_k])
    if plan.group > 1:
        kg, kv = sch.split(ki, [None, plan.group])
        sch.reorder(bj, bi, tj, ti, ko, kg, ii, jj, kv)
    else:
        kv = None
        sch.reorder(bj, bi, tj, ti, ko, ki, ii, jj)
    bj = sch.fuse(batch, bj)
    threads.bind(sch, bi, "blockIdx.x")
    threads.bind(sch, bj, "blockIdx.y")
    threads.bind(sch, tj, "threadIdx.y")
    threads.bind(sch, ti, "threadIdx.x")
    sch.annotate(ti, ann_key="pragma_auto_unroll_max_step", ann_val=256)
    sch.annotate(ti, ann_key="pragma_unroll_explicit", ann_val=1)

    writeback = sch.cache_write(main, 0, "local")
    sch.reverse_compute_at(writeback, ti, preserve_unit_loops=True)

    for index in (0, 1):
        stage = sch.cache_read(main, index, "shared")
        n_loops = len(sch.get_loops(stage))
        sch.compute_at(stage, ko, preserve_unit_loops=True)
        loops = sch.get_loops(stage)[-n_loops:]
        fty, ftx, _, vec = sch.split(sch.fuse(*loops), [plan.threads_j, plan.threads_i, None, plan.vector])
        sch.vectorize(vec)
        threads.bind(sch, fty, "threadIdx.y")
        threads.bind(sch, ftx, "threadIdx.x")
        # rows padded against bank conflicts: int8 rows stay 4-byte aligned for dp4a's word loads
        if gemm.dtype == INT8:
            sch.storage_align(stage, 0, axis=1, factor=32, offset=DP4A_GROUP)
        else:
            sch.storage_align(stage, 0, axis=1, factor=8, offset=plan.vector)
        _inline_producers(sch, stage)

    _inline_epilogue(sch, writeback, gemm.tail)
    sch.decompose_reduction(main, ko)
    if kv is not None and not threads.emulate:  # (emulated: dp4a's description, scalar multiply-adds)
        sch.tensorize(kv, dp4a_intrin(gemm.data_dtype))
    _launch_leftovers(sch, threads)


# ------------------------------------------------------------------------------ rules
class _GemmRule(ScheduleRule):
    dtypes: tuple[str, ...] = ()

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or str(target.kind.name) != "cuda":
            return None
        return schedule_gemm(func, self.dtypes)


class Int8GemmDp4a(_GemmRule):
    """Every int8 conv2d (groups 1) / matmul: uint8 or int8 codes x int8 -> int32 on ``dp4a``,
    with its fused epilogue."""

    dtypes = (INT8,)


class Fp32Gemm(_GemmRule):
    """Every fp32 conv2d / matmul, depthwise convs included, with its fused epilogue."""

    dtypes = (FP32,)


def cuda_mac_rules(_target: Target) -> list[ScheduleRule]:
    """The tvm-mpq CUDA MAC rules, tried before TVM's GPU rules."""
    return [Int8GemmDp4a(), Fp32Gemm()]
