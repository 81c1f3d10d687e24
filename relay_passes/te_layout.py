"""RecoverPad, RecoverTile: a frontend's TE-built constant pad and tile back to Relax ops.

TVM 0.27's ONNX importer writes the padding of every ``Conv`` with ``auto_pad="SAME_UPPER"`` /
``"SAME_LOWER"`` (what tf2onnx emits for TensorFlow's ``padding="same"``) as a ``call_tir`` of a
TE-built ``topi.nn.pad`` in front of the conv, a copy even where the widths are all zero (a 1x1
conv). To the graph passes that ``call_tir`` is opaque: the layout pass puts the tensor back into
NCHW around it and the precision pass leaves a dequantize/quantize border at it. In the LEADER
fingerprint network (63 such pads) that was two transposes and one copy of the activation per
conv. This pass recognizes those PrimFuncs by their body - one store of ``if_then_else(in range,
data[i - before], value)`` whose condition is exactly the in-range test of those widths, or a
plain copy - and writes ``R.nn.pad(data, widths, "constant", value)`` instead (a zero-width pad:
the data itself), which :class:`~relay_passes.fold_pad.FoldPadIntoConv` folds into the conv's
own padding and which every other pass reads. ``Tile`` (tf2onnx's nearest-neighbour upsampling:
``Unsqueeze``, ``Tile``, ``Reshape`` per axis) is imported the same way; :class:`RecoverTile`
writes ``R.tile`` for a PrimFunc that stores ``data[i_0 % n_0, ...]`` (``0`` on a size-1 axis),
which :class:`~relay_passes.repeat_from_tile.RepeatFromTile` then reads as a repeat along one
axis. Other ``call_tir`` stay.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx

from relay_passes.te_elementwise import reads, replace_te_calls, single_store


def _ints(shape: object) -> list[int] | None:
    try:
        return [int(x) for x in shape]
    except TypeError:  # a symbolic extent
        return None


def _before(index: tirx.PrimExpr, var: tirx.Var) -> int | None:
    """``b`` when ``index`` is ``var - b`` (``0`` for ``var`` itself), else None."""
    if index.same_as(var):
        return 0
    if isinstance(index, tirx.Sub) and index.a.same_as(var) and isinstance(index.b, tirx.IntImm):
        return int(index.b.value)
    return None


def _bounds(cond: tirx.PrimExpr, dims: list[tirx.Var]) -> set[tuple[int, str, int]] | None:
    """The conjunction ``cond`` as ``{(dim, ">=" | "<", bound)}``, None for anything else."""
    if isinstance(cond, tirx.And):
        a, b = _bounds(cond.a, dims), _bounds(cond.b, dims)
        return None if a is None or b is None else a | b
    for kind, var_at, op in ((tirx.LE, 1, ">="), (tirx.GE, 0, ">="), (tirx.LT, 0, "<"), (tirx.GT, 1, "<")):
        if isinstance(cond, kind):
            var, bound = (cond.a, cond.b) if var_at == 0 else (cond.b, cond.a)
            at = [d for d, v in enumerate(dims) if v.same_as(var)]
            if len(at) != 1 or not isinstance(bound, tirx.IntImm):
                return None
            return {(at[0], op, int(bound.value))}
    return None


def constant_pad(func: tirx.PrimFunc) -> tuple[list[int], float] | None:
    """``(pad_width, value)`` (``pad_width`` flat, ``[before_0, after_0, ...]``) when ``func``
    pads its one input with a constant, else None."""
    if len(func.params) != 2:
        return None
    store = single_store(func)
    if store is None:
        return None
    in_shape = _ints(func.params[0].shape)
    out_shape = _ints(func.params[1].shape)
    value, fill, cond = store.value, 0.0, None
    if isinstance(value, tvm.ir.Call) and str(getattr(value.op, "name", "")).endswith(".if_then_else"):
        cond, value, fill_expr = value.args
        if not isinstance(fill_expr, (tirx.FloatImm, tirx.IntImm)):
            return None
        fill = float(fill_expr.value)
    dims = list(store.indices)
    if (in_shape is None or out_shape is None or not reads(value, func.params[0])
            or not (len(in_shape) == len(out_shape) == len(value.indices) == len(dims))
            or not all(isinstance(v, tirx.Var) for v in dims)):
        return None
    befores = [_before(i, v) for i, v in zip(value.indices, dims)]
    if any(b is None for b in befores):
        return None
    afters = [o - i - b for o, i, b in zip(out_shape, in_shape, befores)]
    if any(b < 0 or a < 0 for b, a in zip(befores, afters)):
        return None
    # the in-range test: each bound that cuts (required), maybe the ones that hold everywhere
    required = {(d, ">=", b) for d, b in enumerate(befores) if b} | \
               {(d, "<", b + n) for d, (b, a, n) in enumerate(zip(befores, afters, in_shape)) if a}
    always = {(d, ">=", 0) for d in range(len(dims))} | {(d, "<", n) for d, n in enumerate(out_shape)}
    bounds = set() if cond is None else _bounds(cond, dims)
    if bounds is None or not required <= bounds <= required | always:
        return None
    return [w for pair in zip(befores, afters) for w in pair], fill


def _pad_call(width: list[int], fill: float):
    def rewrite(args: list) -> relax.Expr:
        if not any(width):
            return args[0]
        return relax.op.nn.pad(args[0], width, "constant", fill)
    return rewrite


@tvm.transform.module_pass(opt_level=0, name="RecoverPad")
class RecoverPad:
    """Rewrite ``call_tir`` of constant-pad PrimFuncs into ``R.nn.pad`` (a zero-width one into
    its input) in every Relax function; the PrimFuncs no call reads any more are dropped."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        pads = {gv: constant_pad(f) for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
        return replace_te_calls(mod, {gv: _pad_call(*p) for gv, p in pads.items() if p is not None})


def _tile_index(index: tirx.PrimExpr, var: tirx.Var, extent: int) -> bool:
    """Whether ``index`` reads axis position ``var`` of a tiled axis of ``extent``."""
    if extent == 1:
        return isinstance(index, tirx.IntImm) and int(index.value) == 0
    if index.same_as(var):
        return True
    return (isinstance(index, tirx.FloorMod) and index.a.same_as(var) and isinstance(index.b, tirx.IntImm)
            and int(index.b.value) == extent)


def tile_repeats(func: tirx.PrimFunc) -> list[int] | None:
    """The repeats per axis when ``func`` tiles its one input (same rank), else None."""
    if len(func.params) != 2:
        return None
    store = single_store(func)
    in_shape, out_shape = _ints(func.params[0].shape), _ints(func.params[1].shape)
    if store is None or in_shape is None or out_shape is None or not reads(store.value, func.params[0]):
        return None
    dims, indices = list(store.indices), list(store.value.indices)
    if not (len(in_shape) == len(out_shape) == len(dims) == len(indices)) or any(o % i for o, i in zip(out_shape, in_shape)):
        return None
    if not all(isinstance(v, tirx.Var) and _tile_index(i, v, n) for i, v, n in zip(indices, dims, in_shape)):
        return None
    repeats = [o // i for o, i in zip(out_shape, in_shape)]
    return repeats if any(r > 1 for r in repeats) else None


@tvm.transform.module_pass(opt_level=0, name="RecoverTile")
class RecoverTile:
    """Rewrite ``call_tir`` of tile PrimFuncs into ``R.tile`` in every Relax function; the
    PrimFuncs no call reads any more are dropped."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        tiles = {gv: tile_repeats(f) for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
        return replace_te_calls(mod, {gv: (lambda args, r=r: relax.op.tile(args[0], r))
                                      for gv, r in tiles.items() if r is not None})
