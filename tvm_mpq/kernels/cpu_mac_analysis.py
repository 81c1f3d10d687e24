"""Recognize the channels-last MAC PrimFuncs the CPU kernels schedule.

After :class:`relay_passes.convert_layout.ConvertToChannelsLast` and legalization, a fused MAC
PrimFunc holds, in order: producer blocks of the data (TOPI's ``pad_temp`` copy, a padding
block), exactly one reduction block, and spatial epilogue blocks. The reduction is one of

* ``conv2d`` (NHWC/HWIO, groups 1): ``C[n, y, x, f] += A[n, y*sh + ry*dh, x*sw + rx*dw, c] * W[ry, rx, c, f]``
* ``depthwise`` (groups = channels): ``C[n, y, x, f] += A[n, y*sh + ry*dh, x*sw + rx*dw, f] * W[ry, rx, 0, f]``
* ``matmul``: ``C[*lead, m, n] += A[*lead, m, k] * W[k, n]`` (leading extents 1)
* ``batch_matmul`` (two activations, e.g. attention): ``C[*b, m, n] += A[*b, m, k] * B[*b, k, n]``

with ``W`` a constant (``layout_free_buffers``), float32, or uint8 / int8 (activations shifted
for a signed dot product) x int8 -> int32 (``cast(int32, .)`` on both operands; a batch
matmul's ``B`` is then an activation's codes shifted to int8). Anything else gives ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir, tirx

INT8 = "int8"
FP32 = "float32"
_Load = tvm.ir.TensorLoad
_Store = tirx.stmt.BufferStore


@dataclass(frozen=True)
class MacInfo:
    """A recognized MAC block (see the module docstring).

    ``out_channels``: F (conv) / N (matmul); ``in_channels``: C / K; ``kernel``, ``stride``,
    ``dilation``: (h, w) (1 for matmul); ``out_hw``: (OH, OW) (matmul: (M, 1)); ``a_read`` /
    ``b_read``: indices of data and weight in the block's reads; ``producers``: the blocks
    before the MAC, ``epilogue``: the blocks after it (names); ``batch``: the images of a conv
    (1 for matmul)."""

    kind: str
    dtype: str
    block: str
    out_channels: int
    in_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    out_hw: tuple[int, int]
    a_read: int
    b_read: int
    a_is_param: bool
    data_dtype: str
    producers: tuple[str, ...]
    epilogue: tuple[str, ...]
    batch: int = 1

    @property
    def pointwise(self) -> bool:
        """A 1x1 stride-1 conv: the output pixels form one GEMM row axis."""
        return self.kind == "conv2d" and self.kernel == (1, 1) and self.stride == (1, 1)


def _strip_cast(expr: tirx.PrimExpr) -> tirx.PrimExpr | None:
    return expr.value if isinstance(expr, tirx.Cast) and str(expr.ty) == "int32" else None


def _operands(block: s_tir.SBlock) -> tuple[_Load, _Load, str] | None:
    """``(lhs, rhs, dtype)`` of ``C = C + lhs * rhs`` with a zero init."""
    store, init = block.body, block.init
    if not isinstance(store, _Store) or not isinstance(init, _Store):
        return None
    if not isinstance(init.value, (tirx.IntImm, tirx.FloatImm)) or float(init.value.value) != 0.0:
        return None
    value = store.value
    if not isinstance(value, tirx.Add) or not isinstance(value.b, tirx.Mul):
        return None
    if not (isinstance(value.a, _Load) and value.a.source.same_as(store.buffer)):
        return None
    lhs, rhs = value.b.a, value.b.b
    c_dtype = str(store.buffer.dtype)
    if c_dtype == "int32":
        lhs, rhs, dtype = _strip_cast(lhs), _strip_cast(rhs), INT8
    elif c_dtype == FP32:
        dtype = FP32
    else:
        return None
    if not isinstance(lhs, _Load) or not isinstance(rhs, _Load):
        return None
    return lhs, rhs, dtype


def _is_var(expr: tirx.PrimExpr, var: tirx.Var) -> bool:
    return isinstance(expr, tirx.Var) and expr.same_as(var)


def _linear(expr: tirx.PrimExpr, variables: list[tirx.Var]) -> list[int] | None:
    from tvm.sym import detect_linear_equation

    coeffs = detect_linear_equation(expr, variables)
    if len(coeffs) != len(variables) + 1 or not all(isinstance(c, tirx.IntImm) for c in coeffs):
        return None
    return [int(c.value) for c in coeffs]


def _conv(block: s_tir.SBlock, a: _Load, w: _Load) -> tuple[str, tuple, tuple] | None:
    """(kind, stride, dilation) of an NHWC conv / depthwise block, or None."""
    iv = block.iter_vars
    if len(iv) != 7 or [int(v.iter_type) for v in iv] != [0, 0, 0, 0, 2, 2, 2]:
        return None
    n, y, x, f, ry, rx, c = (v.var for v in iv)
    if not all(_is_var(i, v) for i, v in zip(block.body.indices, (n, y, x, f))) or len(a.indices) != 4:
        return None
    if not all(_is_var(i, v) for i, v in zip(w.indices, (ry, rx, c, f))) or not _is_var(a.indices[0], n):
        return None
    hy, wx = _linear(a.indices[1], [y, ry]), _linear(a.indices[2], [x, rx])
    if hy is None or wx is None or hy[2] != 0 or wx[2] != 0:
        return None
    chan = a.indices[3]
    if _is_var(chan, c):
        kind = "conv2d"
    elif int(iv[6].dom.extent) == 1 and _linear(chan, [f, c]) == [1, 1, 0] and \
            int(a.source.shape[3]) == int(iv[3].dom.extent):
        kind = "depthwise"
    else:
        return None
    return kind, (hy[0], wx[0]), (hy[1], wx[1])


def _matmul(block: s_tir.SBlock, a: _Load, w: _Load) -> bool:
    iv = block.iter_vars
    kinds = [int(v.iter_type) for v in iv]
    if len(iv) < 3 or kinds[:-1] != [0] * (len(iv) - 1) or kinds[-1] != 2:
        return False
    if any(int(v.dom.extent) != 1 for v in iv[:-3]):
        return False
    *lead, n, k = (v.var for v in iv)
    return (all(_is_var(i, v) for i, v in zip(w.indices, (k, n))) and len(w.indices) == 2
            and len(a.indices) == len(lead) + 1 and all(_is_var(i, v) for i, v in zip(a.indices, [*lead, k]))
            and len(block.body.indices) == len(lead) + 1
            and all(_is_var(i, v) for i, v in zip(block.body.indices, [*lead, n])))


def _batch_matmul(block: s_tir.SBlock, a: _Load, b: _Load) -> bool:
    """``C[*batch, m, n] += A[*batch, m, k] * B[*batch, k, n]`` (two activations, n contiguous in B)."""
    iv = block.iter_vars
    kinds = [int(v.iter_type) for v in iv]
    if len(iv) < 4 or kinds[:-1] != [0] * (len(iv) - 1) or kinds[-1] != 2:
        return False
    *batch, m, n, k = (v.var for v in iv)
    def same(idx, vs):  # noqa: E306
        return len(idx) == len(vs) and all(_is_var(i, v) for i, v in zip(idx, vs))
    return (same(a.indices, [*batch, m, k]) and same(b.indices, [*batch, k, n])
            and same(block.body.indices, [*batch, m, n]))


def _read_index(block: s_tir.SBlock, buf: tirx.Buffer) -> int | None:
    hits = [i for i, region in enumerate(block.reads) if region.source.same_as(buf)]
    return hits[0] if len(hits) == 1 else None


def root_blocks(sch: s_tir.Schedule) -> list[s_tir.schedule.SBlockRV]:
    """The blocks directly under ``root`` (empty when there is no root block)."""
    try:
        return list(sch.get_child_blocks(sch.get_sblock("root")))
    except Exception:  # noqa: BLE001 - no root block: not a compute function
        return []


def analyze_mac(sch: s_tir.Schedule) -> MacInfo | None:
    """The :class:`MacInfo` of the function ``sch`` works on, or ``None``."""
    func = sch.mod["main"]
    blocks = root_blocks(sch)
    stmts = [sch.get(b) for b in blocks]
    if not stmts or any(len(sch.get_loops(rv)) != len(s.iter_vars) or s.match_buffers for rv, s in zip(blocks, stmts)):
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
    free = func.attrs.get("layout_free_buffers") if func.attrs is not None else None
    consts = [func.params[int(i)] for i in free] if free is not None else []
    if any(rhs.source.same_as(c) for c in consts):
        a, w = lhs, rhs
    elif any(lhs.source.same_as(c) for c in consts):
        a, w = rhs, lhs
    elif _batch_matmul(mac, lhs, rhs):  # activation x activation (attention)
        a, w = lhs, rhs
    else:
        return None
    if dtype == INT8 and (str(a.source.dtype) not in ("uint8", "int8") or str(w.source.dtype) != "int8"):
        return None
    if dtype == FP32 and (str(a.source.dtype) != FP32 or str(w.source.dtype) != FP32):
        return None
    if any(any(int(v.iter_type) != 0 for v in s.iter_vars) for s in stmts[pos + 1:]):
        return None
    extents = [int(v.dom.extent) for v in mac.iter_vars]
    conv = _conv(mac, a, w)
    if conv is not None:
        kind, stride, dilation = conv
        n, oh, ow, f, kh, kw, c = extents
        shape = dict(out_channels=f, in_channels=c if kind == "conv2d" else 1, kernel=(kh, kw), stride=stride,
                     dilation=dilation, out_hw=(oh, ow), batch=n)
    elif _batch_matmul(mac, a, w) and not any(w.source.same_as(c) for c in consts):
        kind = "batch_matmul"
        shape = dict(out_channels=extents[-2], in_channels=extents[-1], kernel=(1, 1), stride=(1, 1),
                     dilation=(1, 1), out_hw=(extents[-3], 1))
    elif _matmul(mac, a, w):
        kind = "matmul"
        shape = dict(out_channels=extents[-2], in_channels=extents[-1], kernel=(1, 1), stride=(1, 1),
                     dilation=(1, 1), out_hw=(extents[-3] if len(extents) >= 3 else 1, 1))
    else:
        return None
    a_read, b_read = _read_index(mac, a.source), _read_index(mac, w.source)
    if a_read is None or b_read is None:
        return None
    a_is_param = any(a.source.same_as(p) for p in func.params)
    if not a_is_param:
        writers = [s for s in stmts[:pos] if any(wr.source.same_as(a.source) for wr in s.writes)]
        if len(writers) != 1 or len(writers[0].writes) != 1:
            return None
    return MacInfo(kind, dtype, mac.name_hint, data_dtype=str(a.source.dtype), a_read=a_read, b_read=b_read, a_is_param=a_is_param,
                   producers=tuple(s.name_hint for s in stmts[:pos]),
                   epilogue=tuple(s.name_hint for s in stmts[pos + 1:]), **shape)


def data_producer(sch: s_tir.Schedule, info: MacInfo) -> s_tir.schedule.SBlockRV | None:
    """The block writing the MAC's data operand (``None`` when the data is a parameter)."""
    if info.a_is_param:
        return None
    return writer_of(sch, info, sch.get(sch.get_sblock(info.block)).reads[info.a_read].source)


def writer_of(sch: s_tir.Schedule, info: MacInfo, buf: tirx.Buffer) -> s_tir.schedule.SBlockRV | None:
    """The block of ``info.producers`` still in ``sch`` (not inlined) that writes ``buf``, if any."""
    for name in info.producers:
        try:
            rv = sch.get_sblock(name)
        except Exception:  # noqa: BLE001 - inlined by the schedule already
            continue
        if any(w.source.same_as(buf) for w in sch.get(rv).writes):
            return rv
    return None


def is_plain_copy(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """Whether a producer block only copies one buffer element (TOPI's ``pad_temp`` without
    padding): inlining it costs nothing in the consumer's inner loop."""
    stmt = sch.get(block)
    return isinstance(stmt.body, _Store) and isinstance(stmt.body.value, _Load)
