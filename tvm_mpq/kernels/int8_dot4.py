"""int8 MAC kernels built on a 4-byte dot product ("dot4"), shared by aarch64 and x86.

The product lowers an int8 layer to ``conv2d(x_u8, w_s8, out_dtype="int32")`` (NCHW/OIHW) or
``matmul(x_u8, w_s8, out_dtype="int32")`` followed by an int32/fp32 epilogue, fused into one
PrimFunc. aarch64's ``sdot`` multiplies signed by signed bytes, so for it the kernels use the
shift trick, exact in int32 (x86 ``vpdpbusd`` takes uint8 x int8 and skips it,
:attr:`Dot4Isa.shift_activation`)::

    sum_k x[k] * w[k] = sum_k (x[k] - 128) * w[k] + 128 * sum_k w[k]

``x - 128`` is ``x ^ 0x80`` read as int8 (a runtime pass over the activation, which also
re-lays it out so that 4 consecutive reduction elements are 4 consecutive bytes), and
``128 * sum_k w[n, k]`` is a per-output-channel constant.

:func:`rewrite_int8_mac` rewrites the fused PrimFunc (same parameters, same epilogue blocks)
into four stages, for a vector of ``L`` int32 lanes (:class:`Dot4Isa`: 4 on NEON, 8 on AVX2):

1. ``mpq_wpack`` (annotated ``meta_schedule.layout_rewrite_preproc``): the weight packed as
   int32 words ``Wp[n / L, q, j]`` = the 4 bytes ``w[L n' + j, 4 q .. 4 q + 3]``, one extra
   word row ``q = KQ`` holding the correction ``128 * sum_k w``; the build's
   ``SplitLayoutRewritePreproc`` + ``FoldConstant`` run it once, at compile time;
2. ``mpq_xshift``: the activation, shifted to int8 (or kept uint8) and laid out
   reduction-innermost (padding block inlined into it);
3. ``mpq_gemm``: register tiles of ``MX`` output pixels (rows) x ``L * NV`` output channels,
   one ``int32 x L`` accumulator each, initialised with the correction and updated with the
   ISA's dot4 expression (:attr:`Dot4Isa.mac`);
4. the original epilogue blocks, inlined into one and computed at the tile
   (``reverse_compute_at``), so the int32 accumulator never goes to memory as a whole (an
   epilogue ending in a shape-changing op, a fused pad, runs after the GEMM: :mod:`.epilogue`).

The rewritten function is produced by printing the fused PrimFunc as TVMScript, replacing
the reduction statement by the generated stages and parsing it back: the epilogue, the
parameters and the attributes are kept verbatim. Anything the rule does not recognise
(groups, dilation patterns it cannot read, batch > 1, channel counts that are not multiples
of ``L``, non-int8 MACs) is declined with ``None`` and left to the other rules or the default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tvm
from tvm import s_tir
from tvm.s_tir.dlight.base import ScheduleRule

from tvm_mpq.kernels.epilogue import fits_mac_tile, schedule_after_mac

LOG = logging.getLogger(__name__)

PREPROC_ATTR = "meta_schedule.layout_rewrite_preproc"


@dataclass(frozen=True)
class Dot4Isa:
    """What the generated GEMM needs from an instruction set.

    ``lanes``: int32 lanes of one accumulator vector (its int8 operands have ``4 * lanes``
    bytes); ``mac(acc, b, a)``: TVMScript of ``acc + dot4(a, b)`` per int32 lane, for
    ``acc`` an ``int32 x lanes`` and ``a``, ``b`` ``int8 x 4 lanes`` expressions (``a`` is the
    broadcast activation word, ``b`` 4 weight bytes per lane); ``acc_registers``: accumulator
    vectors a register tile may use; ``vector_groups``: output-channel vectors per tile, tried
    largest first."""

    name: str
    lanes: int
    mac: Callable[[str, str, str], str]
    acc_registers: int
    vector_groups: tuple[int, ...] = (4, 2, 1)
    shift_activation: bool = True
    """``True``: the dot4 multiplies signed bytes, so the activation is shifted to int8 and the
    ``128 * sum_k w`` correction is packed; ``False`` (u8 x s8 instructions such as x86
    ``vpdpbusd``): the activation stays uint8 and the correction row is zero."""


# ------------------------------------------------------------------------------------ matching


@dataclass(frozen=True)
class MacPattern:
    """An int8 MAC reduction block found in a fused PrimFunc.

    ``kind``: ``conv2d`` or ``dense``. ``data``, ``weight``, ``out``: the buffers the block reads
    (uint8, int8) and writes (int32). For conv2d: ``stride``/``dilation`` (h, w) and the kernel
    size; for dense the data buffer is ``[1.., M, K]`` and the weight ``[K, N]``.
    """

    kind: str
    block: str
    data: Any
    weight: Any
    out: Any
    weight_param: int | None
    layout_free: bool
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)


def _ints(shape: Any) -> list[int]:
    return [int(s) for s in shape]


def _linear(expr: Any, variables: list[Any]) -> list[int] | None:
    """Integer coefficients (then the constant) of ``expr`` in ``variables``, or None."""
    from tvm.sym import detect_linear_equation

    coeffs = detect_linear_equation(expr, variables)
    if len(coeffs) != len(variables) + 1:
        return None
    out = []
    for c in coeffs:
        if not isinstance(c, tvm.tirx.IntImm):
            return None
        out.append(int(c.value))
    return out


def expr_dtype(expr: Any) -> str:
    """The scalar/vector type of a TIR expression, as a string (``int32``)."""
    ty = getattr(expr, "ty", None)
    return str(ty if ty is not None else expr.dtype)


def _is_var(expr: Any, var: Any) -> bool:
    return isinstance(expr, tvm.tirx.Var) and expr.same_as(var)


def _mac_operands(body: Any) -> tuple[Any, Any, Any] | None:
    """(store, data load, weight load) of ``C[..] = C[..] + i32(X[..]) * i32(W[..])``."""
    from tvm.ir.expr import TensorLoad

    T = tvm.tirx
    if not isinstance(body, T.BufferStore) or expr_dtype(body.value) != "int32":
        return None
    value = body.value
    if not isinstance(value, T.Add) or not isinstance(value.a, TensorLoad) \
            or not value.a.source.same_as(body.buffer) or not isinstance(value.b, T.Mul):
        return None
    a, b = value.b.a, value.b.b
    if not (isinstance(a, T.Cast) and isinstance(b, T.Cast)):
        return None
    a, b = a.value, b.value
    if not (isinstance(a, TensorLoad) and isinstance(b, TensorLoad)):
        return None
    if expr_dtype(a) == "int8" and expr_dtype(b) == "uint8":
        a, b = b, a
    if expr_dtype(a) != "uint8" or expr_dtype(b) != "int8":
        return None
    return body, a, b


def match_int8_mac(func: tvm.tirx.PrimFunc) -> MacPattern | None:
    """The int8 conv2d (NCHW/OIHW, groups 1, batch 1) or dense reduction block of ``func``."""
    sch = s_tir.Schedule(func)
    reductions = []
    for rv in sch.get_child_blocks(sch.get_sblock("root")) if has_root_block(sch) else []:
        block = sch.get(rv)
        if any(int(iv.iter_type) == 2 for iv in block.iter_vars):  # CommReduce
            reductions.append(block)
    if len(reductions) != 1:
        return None
    block = reductions[0]
    if block.init is None or not isinstance(block.init, tvm.tirx.BufferStore) \
            or not isinstance(block.init.value, tvm.tirx.IntImm) or int(block.init.value.value) != 0:
        return None
    ops = _mac_operands(block.body)
    if ops is None:
        return None
    store, xload, wload = ops
    ivs = [iv.var for iv in block.iter_vars]
    kinds = ["R" if int(iv.iter_type) == 2 else "S" for iv in block.iter_vars]
    weight_param = next((i for i, param in enumerate(func.params) if param.same_as(wload.source)), None)
    free = func.attrs.get("layout_free_buffers", None) if func.attrs is not None else None
    layout_free = weight_param is not None and free is not None and weight_param in [int(i) for i in free]
    if not all(_is_var(i, v) for i, v in zip(store.indices, ivs[:len(store.indices)])):
        return None
    if "".join(kinds) == "SSSSRRR" and len(wload.indices) == 4 and len(xload.indices) == 4:
        n, co, oh, ow, ci, kh, kw = ivs
        if int(block.iter_vars[0].dom.extent) != 1:
            return None
        if not (all(_is_var(i, v) for i, v in zip(wload.indices, [co, ci, kh, kw]))
                and _is_var(xload.indices[0], n) and _is_var(xload.indices[1], ci)):
            return None
        hy = _linear(xload.indices[2], [oh, kh])
        wx = _linear(xload.indices[3], [ow, kw])
        if hy is None or wx is None or hy[2] != 0 or wx[2] != 0:
            return None
        if _ints(wload.source.shape)[1] != _ints(xload.source.shape)[1]:  # groups != 1
            return None
        return MacPattern("conv2d", block.name_hint, xload.source, wload.source, store.buffer, weight_param,
                          layout_free, (hy[0], wx[0]), (hy[1], wx[1]))
    if kinds[-1] == "R" and kinds.count("R") == 1 and len(wload.indices) == 2 and len(store.indices) >= 2:
        *lead, m, nn, k = ivs
        if len(xload.indices) != len(store.indices) or any(int(iv.dom.extent) != 1 for iv in block.iter_vars[:len(lead)]):
            return None
        if not (_is_var(wload.indices[0], k) and _is_var(wload.indices[1], nn)
                and _is_var(xload.indices[-1], k) and _is_var(xload.indices[-2], m)
                and all(_is_var(i, v) for i, v in zip(xload.indices[:-2], lead))):
            return None
        return MacPattern("dense", block.name_hint, xload.source, wload.source, store.buffer, weight_param,
                          layout_free)
    return None


def has_root_block(sch: s_tir.Schedule) -> bool:
    """Whether the scheduled function has a ``root`` block (a fused compute function)."""
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # noqa: BLE001 - no root block: not a fused compute function
        return False


# ----------------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Gemm:
    """The implicit GEMM of a matched MAC: ``M`` output pixels/rows, ``N`` channels, ``K``.

    ``tile_m`` x ``lanes * tile_nv``: the register tile; ``KQ``: reduction quads (K padded to 4)."""

    M: int
    N: int
    K: int
    tile_m: int
    tile_nv: int

    @property
    def KQ(self) -> int:  # noqa: N802 - the usual GEMM letter
        return -(-self.K // 4)


def _tile(n: int, m_extent: int, isa: Dot4Isa) -> tuple[int, int]:
    """(rows per tile dividing ``m_extent``, accumulator vectors across channels) for ``n``
    output channels."""
    nv = next((v for v in isa.vector_groups if n % (v * isa.lanes) == 0), 1)
    limit = max(1, isa.acc_registers // nv)
    rows = max(d for d in range(1, min(limit, m_extent) + 1) if m_extent % d == 0)
    return rows, nv


def _pack_word(weight_at: Any) -> str:
    """int32 word of 4 weight bytes ``weight_at(r)`` (a (bounds, load) pair per byte r)."""
    terms = []
    for r in range(4):
        bound, load = weight_at(r)
        byte = f'T.Cast("int32", T.Cast("uint8", {load}))'
        if bound:
            byte = f"T.if_then_else({bound}, {byte}, 0)"
        terms.append(byte if r == 0 else f"T.shift_left({byte}, {8 * r})")
    return " | ".join(terms)


def _gemm_stage(g: Gemm, isa: Dot4Isa, *, a_word: Any, c_store: Any, outer: list[tuple[str, int]],
                reads: str, writes: str, wp: str) -> str:
    """The register-tiled GEMM block (shared by conv2d and dense).

    ``outer``: tile loops (name, extent) whose block vars are ``v_<name>``; ``a_word(i, q)``:
    TVMScript of the int32 word holding the 4 shifted activation bytes of tile row ``i`` for
    reduction quad ``q``; ``c_store(i, n)``: the output element of tile row ``i``, channel ``n``.
    """
    mt, nv, L = g.tile_m, g.tile_nv, isa.lanes
    acc_t, byte_t = f"int32x{L}", f"int8x{4 * L}"
    names = [n for n, _ in outer]
    vnames = [f"v_{n}" for n in names]
    lines = [f"for {', '.join(names)} in T.grid({', '.join(str(e) for _, e in outer)}):",
             '    with T.sblock("mpq_gemm"):',
             f'        {", ".join(vnames)} = T.axis.remap("{"S" * len(names)}", [{", ".join(names)}])',
             f"        T.reads({reads})",
             f"        T.writes({writes})",
             f'        acc = T.alloc_buffer(({mt * nv * L},), "int32", scope="local")',
             f"        for i, j in T.grid({mt}, {nv}):",
             f'            acc[T.ramp((i * {nv} + j) * {L}, 1, {L})] = {wp}.vload([v_c * {nv} + j, {g.KQ}, 0], "{acc_t}")',
             f"        for q in range({g.KQ}):",
             f"            for i in T.unroll({mt}):",
             f'                a = T.reinterpret(T.broadcast({a_word("i", "q")}, {L}), dtype="{byte_t}")',
             f"                for j in T.unroll({nv}):",
             f'                    b = T.reinterpret({wp}.vload([v_c * {nv} + j, q, 0], "{acc_t}"), dtype="{byte_t}")',
             f'                    acc[T.ramp((i * {nv} + j) * {L}, 1, {L})] = '
             + isa.mac(f'acc.vload([(i * {nv} + j) * {L}], "{acc_t}")', "b", "a"),
             f"        for i, j in T.grid({mt}, {nv * L}):",
             f"            {c_store('i', f'v_c * {nv * L} + j')} = acc[i * {nv * L} + j]"]
    return "\n".join(lines)


def _wpack_stage(layout_free: bool, n_out: int, kq: int, lanes: int, reads: str, word: str,
                 correction: str) -> str:
    """The weight-packing block ``mpq_wp[c, q, j]`` (int32 words of 4 bytes; row ``KQ``: the
    ``128 * sum_k w`` correction, ``correction`` is the loop that sums it)."""
    return "\n".join([
        f"for c, q, j in T.grid({n_out // lanes}, {kq + 1}, {lanes}):",
        '    with T.sblock("mpq_wpack"):',
        '        v_c, v_q, v_j = T.axis.remap("SSS", [c, q, j])',
        f"        T.reads({reads})",
        "        T.writes(mpq_wp[v_c, v_q, v_j])",
        *([f'        T.sblock_attr({{"{PREPROC_ATTR}": 1}})'] if layout_free else []),
        f"        if v_q < {kq}:",
        f"            mpq_wp[v_c, v_q, v_j] = {word}",
        "        else:",
        "            mpq_wp[v_c, v_q, v_j] = 0",
        *([correction] if correction else [])])


def _activation(isa: Dot4Isa, load: str) -> tuple[str, str]:
    """(buffer dtype, TVMScript value) of one activation byte as the dot4 reads it."""
    if isa.shift_activation:
        return "int8", f'T.Cast("int8", T.Cast("int32", {load}) - 128)'
    return "uint8", load


def _correction(isa: Dot4Isa, loop_header: str, weight_load: str) -> str:
    """The loop filling the correction row ``128 * sum_k w`` (nothing when not shifting)."""
    if not isa.shift_activation:
        return ""
    return "\n".join([f"            {loop_header}",
                      f'                mpq_wp[v_c, v_q, v_j] = mpq_wp[v_c, v_q, v_j] + T.Cast("int32", {weight_load}) * 128'])


def dense_stages(p: MacPattern, isa: Dot4Isa) -> tuple[list[str], str, Gemm]:
    """(root allocations, stages text, GEMM) replacing the dense reduction of ``p``."""
    xshape, (K, N) = _ints(p.data.shape), _ints(p.weight.shape)
    M = xshape[-2]
    L = isa.lanes
    mt, nv = _tile(N, M, isa)
    g = Gemm(M, N, K, mt, nv)
    X, W, C = p.data.name, p.weight.name, p.out.name
    lead = "0, " * (len(xshape) - 2)
    KP, KQ = 4 * g.KQ, g.KQ
    xs_dtype, xs_value = _activation(isa, f"{X}[{lead}v_m, T.min(v_k, {K - 1})]" if K % 4 else f"{X}[{lead}v_m, v_k]")
    allocs = [f'mpq_xs = T.sblock_alloc_buffer(({M}, {KP}), "{xs_dtype}")',
              f'mpq_wp = T.sblock_alloc_buffer(({N // L}, {KQ + 1}, {L}), "int32")']
    word = _pack_word(lambda r: (f"v_q * 4 + {r} < {K}" if K % 4 else "",
                                 f"{W}[T.min(v_q * 4 + {r}, {K - 1}), v_c * {L} + v_j]"))
    preproc = _wpack_stage(p.layout_free, N, KQ, L, f"{W}[0:{K}, v_c * {L} + v_j]", word,
                           _correction(isa, f"for r in range({K}):", f"{W}[r, v_c * {L} + v_j]"))
    xshift = "\n".join([
        f"for m, k in T.grid(T.int64({M}), T.int64({KP})):",
        '    with T.sblock("mpq_xshift"):',
        '        v_m, v_k = T.axis.remap("SS", [m, k])',
        f"        T.reads({X}[{lead}v_m, T.min(v_k, {K - 1})])",
        "        T.writes(mpq_xs[v_m, v_k])",
        f'        mpq_xs[v_m, v_k] = T.if_then_else(v_k < {K}, {xs_value}, T.{xs_dtype}(0))'
        if K % 4 else
        f"        mpq_xs[v_m, v_k] = {xs_value}"])
    gemm = _gemm_stage(
        g, isa, outer=[("c", N // (L * nv)), ("mo", M // mt)],
        a_word=lambda i, q: f'T.reinterpret(mpq_xs.vload([v_mo * {mt} + {i}, {q} * 4], "{xs_dtype}x4"), dtype="int32")',
        c_store=lambda i, n: f"{C}[{lead}v_mo * {mt} + {i}, {n}]",
        reads=f"mpq_xs[v_mo * {mt}:v_mo * {mt} + {mt}, 0:{KP}], mpq_wp[v_c * {nv}:v_c * {nv} + {nv}, 0:{KQ + 1}, 0:{L}]",
        writes=f"{C}[{lead}v_mo * {mt}:v_mo * {mt} + {mt}, v_c * {L * nv}:v_c * {L * nv} + {L * nv}]",
        wp="mpq_wp")
    return allocs, "\n".join([preproc, xshift, gemm]), g


def conv2d_stages(p: MacPattern, isa: Dot4Isa) -> tuple[list[str], str, Gemm]:
    """(root allocations, stages text, GEMM) replacing the conv2d reduction of ``p``.

    Reduction order ``(kh, kw, ci)`` with ``ci`` innermost and padded to 4: a quad is 4
    channels of one input pixel, 4 consecutive bytes of the shifted ``[H, W, C]`` activation."""
    _, CI, HP, WP = _ints(p.data.shape)
    CO, _, KH, KW = _ints(p.weight.shape)
    _, _, OH, OW = _ints(p.out.shape)
    (sh, sw), (dh, dw) = p.stride, p.dilation
    L = isa.lanes
    CQ = -(-CI // 4)
    CIP = 4 * CQ
    mt, nv = _tile(CO, OW, isa)
    g = Gemm(OH * OW, CO, KH * KW * CIP, mt, nv)
    KQ = g.KQ
    X, W, C = p.data.name, p.weight.name, p.out.name
    xload = f"{X}[0, T.min(v_k, {CI - 1}), v_h, v_w]" if CI % 4 else f"{X}[0, v_k, v_h, v_w]"
    xs_dtype, shifted = _activation(isa, xload)
    allocs = [f'mpq_xs = T.sblock_alloc_buffer(({HP}, {WP}, {CIP}), "{xs_dtype}")',
              f'mpq_wp = T.sblock_alloc_buffer(({CO // L}, {KQ + 1}, {L}), "int32")']
    # quad q = (kh * KW + kw) * CQ + cq
    kh, kw, cq = f"v_q // {KW * CQ}", f"v_q // {CQ} % {KW}", f"v_q % {CQ}"
    word = _pack_word(lambda r: (f"{cq} * 4 + {r} < {CI}" if CI % 4 else "",
                                 f"{W}[v_c * {L} + v_j, T.min({cq} * 4 + {r}, {CI - 1}), {kh}, {kw}]"))
    preproc = _wpack_stage(p.layout_free, CO, KQ, L, f"{W}[v_c * {L} + v_j, 0:{CI}, 0:{KH}, 0:{KW}]", word,
                           _correction(isa, f"for r, s, t in T.grid({CI}, {KH}, {KW}):",
                                       f"{W}[v_c * {L} + v_j, r, s, t]"))
    xshift = "\n".join([
        f"for h, w, k in T.grid(T.int64({HP}), T.int64({WP}), T.int64({CIP})):",  # the data's index type
        '    with T.sblock("mpq_xshift"):',
        '        v_h, v_w, v_k = T.axis.remap("SSS", [h, w, k])',
        f"        T.reads({xload})",
        "        T.writes(mpq_xs[v_h, v_w, v_k])",
        f"        mpq_xs[v_h, v_w, v_k] = T.if_then_else(v_k < {CI}, {shifted}, T.{xs_dtype}(0))" if CI % 4 else
        f"        mpq_xs[v_h, v_w, v_k] = {shifted}"])
    qh, qw, qc = f"q // {KW * CQ}", f"q // {CQ} % {KW}", f"q % {CQ}"
    rows_h = f"v_y * {sh}:v_y * {sh} + {(KH - 1) * dh + 1}"
    cols_w = f"v_xo * {mt * sw}:v_xo * {mt * sw} + {(mt - 1) * sw + (KW - 1) * dw + 1}"
    gemm = _gemm_stage(
        g, isa, outer=[("c", CO // (L * nv)), ("y", OH), ("xo", OW // mt)],
        a_word=lambda i, q: (f"T.reinterpret(mpq_xs.vload([v_y * {sh} + {qh} * {dh}, (v_xo * {mt} + {i}) * {sw} + "
                             f'{qw} * {dw}, {qc} * 4], "{xs_dtype}x4"), dtype="int32")'),
        c_store=lambda i, n: f"{C}[0, {n}, v_y, v_xo * {mt} + {i}]",
        reads=f"mpq_xs[{rows_h}, {cols_w}, 0:{CIP}], mpq_wp[v_c * {nv}:v_c * {nv} + {nv}, 0:{KQ + 1}, 0:{L}]",
        writes=f"{C}[0, v_c * {L * nv}:v_c * {L * nv} + {L * nv}, v_y, v_xo * {mt}:v_xo * {mt} + {mt}]",
        wp="mpq_wp")
    return allocs, "\n".join([preproc, xshift, gemm]), g


# ------------------------------------------------------------------------------------ splicing


def splice(script: str, block_name: str, allocs: list[str], stages: str) -> str:
    """Replace, in a printed PrimFunc, the root statement holding block ``block_name`` by
    ``stages`` and add the root allocations ``allocs``."""
    lines = script.splitlines()
    marker = f'T.sblock("{block_name}")'
    hit = next(i for i, line in enumerate(lines) if marker in line)
    body_indent = 4
    start = max(i for i in range(hit + 1) if _indent(lines[i]) == body_indent and lines[i].strip())
    end = next((i for i in range(hit + 1, len(lines)) if lines[i].strip() and _indent(lines[i]) <= body_indent),
               len(lines))
    pad = " " * body_indent
    new_stmt = [pad + line for line in stages.splitlines()]
    lines[start:end] = new_stmt
    anchor = max((i for i, line in enumerate(lines[:start])
                  if "T.sblock_alloc_buffer(" in line or "T.func_attr(" in line or '# with T.sblock("root")' in line),
                 default=None)
    if anchor is None:
        raise ValueError("no root block in the printed function")
    lines[anchor + 1:anchor + 1] = [pad + a for a in allocs]
    return "\n".join(lines) + "\n"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


# --------------------------------------------------------------------------------------- rules


class Int8Dot4Rule(ScheduleRule):
    """Base of the int8 conv2d (NCHW/OIHW, groups 1, batch 1) and dense rules built on a dot4
    instruction: a subclass says which :class:`Dot4Isa` a target gets (``None``: decline)."""

    def isa_for(self, target: tvm.target.Target) -> Dot4Isa | None:
        raise NotImplementedError

    def apply(self, func: tvm.tirx.PrimFunc, target: tvm.target.Target, tunable: bool) -> s_tir.Schedule | None:
        """The scheduled rewrite of ``func``, or None when it is not an int8 MAC this rule handles."""
        if not isinstance(func, tvm.tirx.PrimFunc) or str(target.kind.name) != "llvm":
            return None
        isa = self.isa_for(target)
        if isa is None:
            return None
        try:
            pattern = match_int8_mac(func)
        except Exception as err:  # noqa: BLE001 - an unexpected IR shape: decline, never break a build
            LOG.debug("%s int8 rule: no match (%s)", isa.name, err)
            return None
        if pattern is None or _channels(pattern) % isa.lanes:
            return None
        try:
            return build_int8_schedule(func, pattern, isa)
        except Exception as err:  # noqa: BLE001
            LOG.warning("%s int8 kernel declined for %s: %s", isa.name, pattern.block, err)
            return None


def _channels(p: MacPattern) -> int:
    return _ints(p.weight.shape)[0 if p.kind == "conv2d" else 1]


def rewrite_int8_mac(func: tvm.tirx.PrimFunc, p: MacPattern, isa: Dot4Isa) -> tuple[tvm.tirx.PrimFunc, Gemm]:
    """``func`` with its MAC reduction replaced by the packed/shifted/tiled stages (unscheduled
    epilogue)."""
    if _channels(p) % isa.lanes:
        raise ValueError(f"{_channels(p)} output channels: not a multiple of {isa.lanes}")
    allocs, stages, gemm = (conv2d_stages if p.kind == "conv2d" else dense_stages)(p, isa)
    text = splice(func.script(), p.block, allocs, stages)
    new = tvm.script.from_source(text, s_tir=True)
    if len(new.params) != len(func.params):
        raise ValueError("rewritten function lost parameters")
    return new, gemm


def build_int8_schedule(func: tvm.tirx.PrimFunc, p: MacPattern, isa: Dot4Isa) -> s_tir.Schedule:
    """Rewrite ``func`` (:func:`rewrite_int8_mac`) and schedule it: padding inlined into the
    shift pass, epilogue inlined and computed per register tile, outer tile loop parallel."""
    original = s_tir.Schedule(func)
    original_names = [original.get(b).name_hint for b in original.get_child_blocks(original.get_sblock("root"))]
    per_tile = original_names[-1] == p.block or fits_mac_tile(original, p.block, original_names[-1])
    new, _ = rewrite_int8_mac(func, p, isa)
    sch = s_tir.Schedule(new)
    root = sch.get_sblock("root")
    names = [sch.get(b).name_hint for b in sch.get_child_blocks(root)]
    gemm = sch.get_sblock("mpq_gemm")
    xshift = sch.get_sblock("mpq_xshift")
    # producers of the activation (the padding copy) -> into the shift pass
    for name in names[:names.index("mpq_wpack")]:
        sch.compute_inline(sch.get_sblock(name))
    epilogue = names[names.index("mpq_gemm") + 1:]
    for name in epilogue[:-1]:
        sch.compute_inline(sch.get_sblock(name))
    loops = sch.get_loops(gemm)
    if epilogue:
        last = sch.get_sblock(epilogue[-1])
        if per_tile:
            sch.reverse_compute_at(last, loops[-1])
        else:  # a shape-changing tail (fused pad): after the GEMM, over its whole output
            schedule_after_mac(sch, last)
    fused = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
    sch.parallel(fused)
    xl = sch.get_loops(xshift)
    sch.parallel(xl[0])
    return sch
