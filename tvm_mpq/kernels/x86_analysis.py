"""Recognize the MAC PrimFuncs the x86 kernels schedule (conv2d NCHW/OIHW, depthwise, dense).

A fused PrimFunc qualifies when its root holds one loop nest per block, exactly one block reduces
(``C[...] = C[...] + A[...] * B[...]``, with ``cast(int32, .)`` on uint8 x int8 operands, none on
float32), ``B`` is a constant weight (``layout_free_buffers``), and every block after it is
spatial (the epilogue). Anything else gives ``None`` and the rules decline.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
import tvm.sym
from tvm import s_tir, tirx

INT8 = "int8"
_Load = tvm.ir.TensorLoad  # TVM 0.27: BufferLoad constructs an ir.TensorLoad (buffer in .source)
_Store = tvm.tirx.stmt.BufferStore
FP32 = "float32"


@dataclass(frozen=True)
class MacPattern:
    """A recognized MAC block.

    ``kind``: ``conv2d`` (groups=1), ``depthwise`` (groups = in = out channels) or ``matmul``
    (``[..., M, K] x [K, N]``). ``dtype``: ``int8`` (uint8 x int8 -> int32) or ``float32``.
    ``extents``: the block's iter extents (conv: n, f, y, x, c, ry, rx; matmul: *lead, n, k).
    ``a_read``/``b_read``: indices of data and weight in the block's read regions; ``a_is_param``:
    the data is a function parameter (no producer block to re-lay out).
    """

    kind: str
    dtype: str
    block: str
    extents: tuple[int, ...]
    a_read: int
    b_read: int
    a_is_param: bool
    producers: tuple[str, ...]
    epilogue: tuple[str, ...]


def _strip_cast(expr: tirx.PrimExpr, dtype: str) -> tirx.PrimExpr | None:
    """``x`` for ``cast(dtype, x)``; ``None`` when ``expr`` is not such a cast."""
    if isinstance(expr, tirx.Cast) and str(expr.ty) == dtype:
        return expr.value
    return None


def _operands(block: s_tir.SBlock) -> tuple[_Load, _Load, str] | None:
    """``(lhs load, rhs load, dtype)`` of ``C = C + lhs * rhs`` with a zero init."""
    store = block.body
    if not isinstance(store, _Store) or block.init is None:
        return None
    init = block.init
    if not isinstance(init, _Store) or not isinstance(init.value, (tirx.IntImm, tirx.FloatImm)):
        return None
    if float(init.value.value) != 0.0:
        return None
    value = store.value
    if not isinstance(value, tirx.Add) or not isinstance(value.b, tirx.Mul):
        return None
    acc = value.a
    if not (isinstance(acc, _Load) and acc.source.same_as(store.buffer)):
        return None
    lhs, rhs = value.b.a, value.b.b
    c_dtype = str(store.buffer.dtype)
    if c_dtype == "int32":
        lhs, rhs = _strip_cast(lhs, "int32"), _strip_cast(rhs, "int32")
        dtype = INT8
    elif c_dtype == FP32:
        dtype = FP32
    else:
        return None
    if not isinstance(lhs, _Load) or not isinstance(rhs, _Load):
        return None
    return lhs, rhs, dtype


def _dtypes_ok(a: _Load, b: _Load, dtype: str) -> bool:
    if dtype == INT8:
        return str(a.source.dtype) == "uint8" and str(b.source.dtype) == "int8"
    return str(a.source.dtype) == FP32 and str(b.source.dtype) == FP32


def _const_buffers(func: tirx.PrimFunc) -> list[tirx.Buffer]:
    attr = func.attrs.get("layout_free_buffers") if func.attrs is not None else None
    if attr is None:
        return []
    return [func.params[int(i)] for i in attr]


def _same_vars(indices, iter_vars) -> bool:
    return len(indices) == len(iter_vars) and all(
        isinstance(e, tirx.Var) and e.same_as(v.var) for e, v in zip(indices, iter_vars))


def _conv_kind(block: s_tir.SBlock, a: _Load, b: _Load) -> str | None:
    """``conv2d`` / ``depthwise`` for an NCHW/OIHW conv block (iters n, f, y, x, c, ry, rx)."""
    iv = block.iter_vars
    kinds = [int(v.iter_type) for v in iv]
    if len(iv) != 7 or kinds != [0, 0, 0, 0, 2, 2, 2]:
        return None
    n, f, y, x, c, ry, rx = iv
    if not _same_vars(b.indices, [f, c, ry, rx]) or not _same_vars(block.body.indices, [n, f, y, x]):
        return None
    if len(a.indices) != 4 or not (isinstance(a.indices[0], tirx.Var) and a.indices[0].same_as(n.var)):
        return None
    chan = a.indices[1]
    ana = tvm.sym.Analyzer()
    if isinstance(chan, tirx.Var) and chan.same_as(c.var):
        kind = "conv2d"
    elif int(c.dom.extent) == 1 and ana.can_prove_equal(chan, f.var + c.var) and \
            int(a.source.shape[1]) == int(f.dom.extent):
        kind = "depthwise"
    else:
        return None
    for index in a.indices[2:]:  # spatial taps must not depend on channels
        if any(v.same_as(f.var) or v.same_as(c.var) for v in tirx.analysis.undefined_vars(index)):
            return None
    return kind


def _is_matmul(block: s_tir.SBlock, a: _Load, b: _Load) -> bool:
    """``C[*lead, n] += A[*lead, k] * B[k, n]`` (constant 2-D weight)."""
    iv = block.iter_vars
    kinds = [int(v.iter_type) for v in iv]
    if len(iv) < 3 or kinds[:-1] != [0] * (len(iv) - 1) or kinds[-1] != 2:
        return False
    lead, n, k = iv[:-2], iv[-2], iv[-1]
    return (_same_vars(b.indices, [k, n]) and _same_vars(a.indices, [*lead, k])
            and _same_vars(block.body.indices, [*lead, n]))


def _read_index(block: s_tir.SBlock, buf: tirx.Buffer) -> int | None:
    hits = [i for i, region in enumerate(block.reads) if region.source.same_as(buf)]
    return hits[0] if len(hits) == 1 else None


def analyze(sch: s_tir.Schedule) -> MacPattern | None:
    """The :class:`MacPattern` of the function ``sch`` works on, or ``None``."""
    func = sch.mod["main"]
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    stmts = [sch.get(b) for b in blocks]
    for rv, stmt in zip(blocks, stmts):
        if len(sch.get_loops(rv)) != len(stmt.iter_vars) or stmt.match_buffers:
            return None
    reducing = [i for i, s in enumerate(stmts) if any(int(v.iter_type) == 2 for v in s.iter_vars)]
    if len(reducing) != 1:
        return None
    pos = reducing[0]
    mac = stmts[pos]
    ops = _operands(mac)
    if ops is None:
        return None
    lhs, rhs, dtype = ops
    consts = _const_buffers(func)
    if any(rhs.source.same_as(c) for c in consts):
        a, b = lhs, rhs
    elif any(lhs.source.same_as(c) for c in consts):
        a, b = rhs, lhs
    else:
        return None
    if not _dtypes_ok(a, b, dtype):
        return None
    kind = _conv_kind(mac, a, b) if len(mac.iter_vars) == 7 else None
    if kind is None:
        kind = "matmul" if _is_matmul(mac, a, b) else None
    if kind is None:
        return None
    for s in stmts[pos + 1:]:
        if any(int(v.iter_type) != 0 for v in s.iter_vars):
            return None
    a_read, b_read = _read_index(mac, a.source), _read_index(mac, b.source)
    if a_read is None or b_read is None:
        return None
    params = list(func.params)
    producers = tuple(s.name_hint for s in stmts[:pos])
    if any(a.source.same_as(p) for p in params):
        a_is_param = True
    else:
        writers = [s for s in stmts[:pos] if any(w.source.same_as(a.source) for w in s.writes)]
        if len(writers) != 1 or len(writers[0].writes) != 1:
            return None
        a_is_param = False
    extents = tuple(int(v.dom.extent) for v in mac.iter_vars)
    return MacPattern(kind, dtype, mac.name_hint, extents, a_read, b_read, a_is_param, producers,
                      tuple(s.name_hint for s in stmts[pos + 1:]))


def a_producer(sch: s_tir.Schedule, pattern: MacPattern) -> s_tir.schedule.SBlockRV | None:
    """The block writing the MAC's data operand (``None`` when the data is a parameter)."""
    if pattern.a_is_param:
        return None
    mac = sch.get(sch.get_sblock(pattern.block))
    a_buf = mac.reads[pattern.a_read].source
    for name in pattern.producers:
        rv = sch.get_sblock(name)
        if any(w.source.same_as(a_buf) for w in sch.get(rv).writes):
            return rv
    return None
