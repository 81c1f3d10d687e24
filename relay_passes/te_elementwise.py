"""RecoverMinMax: a frontend's TE-built ``maximum`` / ``minimum`` back to Relax ops.

TVM 0.27's ONNX importer turns every ``Clip`` (the ReLU6 of MobileNet-style exports, the clip of
a HardSigmoid/HardSwish written out) into two ``call_tir`` of TE-built PrimFuncs,
``topi.maximum(x, lo)`` and ``topi.minimum(x, hi)``. To the graph passes a ``call_tir`` is opaque:
the precision pass cannot fuse it into an int8 group's epilogue, so every such clip became a
dequantize/quantize border (94 of them in PicoDet-LCNet fully int8). This pass recognizes those
PrimFuncs by their body - one elementwise store of ``max`` / ``min`` of the first argument with a
scalar (an immediate, or a 0-d tensor argument) - and writes ``R.maximum`` / ``R.minimum``
instead, which compute the same and which every later pass reads. Other ``call_tir`` stay.
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx

_OPS = {tirx.Max: relax.op.maximum, tirx.Min: relax.op.minimum}


def single_store(func: tirx.PrimFunc) -> tirx.BufferStore | None:
    """The one store of a PrimFunc whose root holds a single block writing its last parameter
    (a TE-built elementwise or layout op), else None."""
    try:
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
    except Exception:  # noqa: BLE001 - not a single-root-block PrimFunc: not ours to read
        return None
    if len(blocks) != 1:
        return None
    store = sch.get(blocks[0]).body
    if not isinstance(store, tirx.BufferStore) or store.buffer.name != func.params[-1].name:
        return None
    return store


def _scalar_minmax(func: tirx.PrimFunc) -> tuple[type, object] | None:
    """``(tirx.Max | tirx.Min, bound)`` when ``func`` is ``out[i] = max|min(in0[i], bound)``;
    ``bound`` is a float/int immediate or the index (1) of a 0-d buffer argument."""
    store = single_store(func)
    if store is None or type(store.value) not in _OPS:
        return None
    value, params = store.value, list(func.params)
    if len(params) not in (2, 3):
        return None
    data, bound = value.a, value.b
    if not reads(data, params[0]):
        data, bound = bound, data
    if not reads(data, params[0]) or len(data.indices) != len(store.indices) or any(
            not i.same_as(j) for i, j in zip(data.indices, store.indices)):
        return None
    if isinstance(bound, (tirx.FloatImm, tirx.IntImm)) and len(params) == 2:
        return type(value), bound.value
    if len(params) == 3 and reads(bound, params[1]) and len(bound.indices) == 0:
        return type(value), 1
    return None


def reads(expr: object, param: object) -> bool:
    """Whether ``expr`` is a load of the PrimFunc parameter ``param``."""
    source = getattr(expr, "source", None)
    return source is not None and hasattr(expr, "indices") and source.same_as(param)


def replace_te_calls(mod: tvm.IRModule, rewrites: dict) -> tvm.IRModule:
    """``mod`` with every ``call_tir`` of a PrimFunc in ``rewrites`` (GlobalVar -> a function of
    the call's arguments giving the Relax expression to use instead) rewritten in every Relax
    function; the PrimFuncs no call reads any more are dropped. Shared by the passes that read a
    frontend's TE-built ops back as Relax ops."""
    if not rewrites:
        return mod

    @relax.expr_functor.mutator
    class _Rewrite(relax.PyExprMutator):
        def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802 - TVM's visitor name
            call = super().visit_call_(call)
            if call.op != tvm.ir.Op.get("relax.call_tir") or call.args[0] not in rewrites:
                return call
            return rewrites[call.args[0]](list(call.args[1].fields))

    out = mod.clone()
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            out[gv] = _Rewrite().visit_expr(func)
    return relax.transform.DeadCodeElimination()(out)


def _minmax_call(op: type, bound: object):
    def rewrite(args: list) -> relax.Expr:
        scalar = args[1] if bound == 1 else relax.const(bound, str(args[0].ty.dtype))
        return _OPS[op](args[0], scalar)
    return rewrite


@tvm.transform.module_pass(opt_level=0, name="RecoverMinMax")
class RecoverMinMax:
    """Rewrite ``call_tir`` of scalar ``maximum`` / ``minimum`` PrimFuncs into ``R.maximum`` /
    ``R.minimum`` in every Relax function; the PrimFuncs no call reads any more are dropped."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        kinds = {gv: _scalar_minmax(f) for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
        return replace_te_calls(mod, {gv: _minmax_call(*k) for gv, k in kinds.items() if k is not None})
