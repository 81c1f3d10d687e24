"""DropProvenClips: a clip whose input is already within its bounds, removed (or halved).

An int8 layer's requantize ends ``clip(round(y / s_y) + zp, 0, 255)`` (:mod:`relay_passes.qdq_steps`),
and where the layer ends in ReLU6 ``y`` is ``clip(x, 0, 6)`` before it: with ``s_y = 6 / 255`` the
codes cannot leave ``[0, 255]``, yet the kernel's epilogue clamps them again, two of its 14 vector
instructions per output vector (a depthwise conv has 9 multiply-adds per output vector of a 3x3
window). This pass bounds each clip's input by walking back through the ops that keep bounds
computable (``clip``, ``nn.relu``, a ``divide`` or ``multiply`` by positive finite constants, an
``add`` of finite constants, ``round``), evaluating the bounds in float32 as the kernels compute
(each of those is monotone in its input: ``RN(x / c)`` for ``c > 0``, ``RN(x + c)``, rounding;
an endpoint at a tie is taken either way), and where both bounds of the clip are already met
drops it; where one is, keeps the other as a ``minimum`` / ``maximum``. The results are the same
bit for bit. Anything it cannot bound (a conv's output, a model input) is unbounded, so its clip
stays. Fully int8 efficientnet-lite0: 83 -> 51 clips, 0.949 of the time (``python
benchmarks/proven_clips.py``, AVX-512 VNNI Xeon, 2026-12-07).

Runs in the build (the precision config, its QDQ simulation and the ONNX export keep the clip);
visits every Relax function.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tvm
from tvm import relax

from relay_passes.precision_annotation import bound_constant, op_name, relax_functions

Interval = tuple[float, float]
UNBOUNDED: Interval = (-np.inf, np.inf)
_F32 = np.float32


def _clip_bounds(call: relax.Call) -> Interval | None:
    """A ``clip`` call's bounds (``FloatImm`` / ``IntImm`` arguments) as float32 values in
    floats, or None where they are not constants."""
    bounds = call.args[1:3]
    if not all(isinstance(b, (tvm.tirx.FloatImm, tvm.tirx.IntImm)) for b in bounds):
        return None
    return float(_F32(bounds[0].value)), float(_F32(bounds[1].value))


def _finite_constant(expr: relax.Expr, var2val: Mapping) -> np.ndarray | None:
    value = bound_constant(expr, var2val)
    if value is None or value.dtype != np.float32 or value.size == 0 or not np.all(np.isfinite(value)):
        return None
    return value


def _through(lo: np.ndarray, hi: np.ndarray) -> Interval:
    """The interval covering every element of the endpoint arrays (per-channel constants)."""
    return float(np.min(lo)), float(np.max(hi))


def _rounded(bound: float, at_tie) -> float:
    """``bound`` rounded to an integer; at a tie by ``at_tie`` (floor for a lower bound, ceil for
    an upper one), so it holds whichever way the target rounds ties."""
    if not np.isfinite(bound):
        return bound
    return float(at_tie(bound) if abs(bound - np.trunc(bound)) == 0.5 else np.rint(bound))


def interval(expr: relax.Expr, var2val: Mapping, depth: int = 8) -> Interval:
    """Bounds of every element of the float32 ``expr``, as the kernels compute it; ``UNBOUNDED``
    where an op on the way is not one this pass reasons about."""
    while isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    if depth == 0 or not isinstance(expr, relax.Call) or str(getattr(expr.ty, "dtype", "")) != "float32":
        return UNBOUNDED
    name, args = op_name(expr), expr.args
    if name == "relax.clip":
        bounds = _clip_bounds(expr)
        if bounds is None:
            return UNBOUNDED
        lo, hi = interval(args[0], var2val, depth - 1)
        return max(lo, bounds[0]), min(hi, bounds[1])
    if name == "relax.nn.relu":
        lo, hi = interval(args[0], var2val, depth - 1)
        return max(lo, 0.0), hi
    if name == "relax.round":  # (a tie may go either way: nearbyint on CPUs, away from zero elsewhere)
        lo, hi = interval(args[0], var2val, depth - 1)
        return _rounded(lo, np.floor), _rounded(hi, np.ceil)
    if name in ("relax.divide", "relax.multiply", "relax.add"):
        c = _finite_constant(args[1], var2val)
        if c is None or (name != "relax.add" and not np.all(c > 0)):
            return UNBOUNDED
        lo, hi = interval(args[0], var2val, depth - 1)
        with np.errstate(over="ignore", invalid="ignore"):
            apply = {"relax.divide": np.divide, "relax.multiply": np.multiply, "relax.add": np.add}[name]
            return _through(apply(_F32(lo), c), apply(_F32(hi), c))
    return UNBOUNDED


@tvm.transform.module_pass(opt_level=0, name="DropProvenClips")
class DropProvenClips:
    """Remove each float32 ``clip`` whose input provably lies within its bounds; where only one
    bound is proven, keep the other as ``minimum`` / ``maximum`` (see the module docstring)."""

    def __init__(self) -> None:
        self._clip = relax.dpl.is_op("relax.clip")(relax.dpl.wildcard(), relax.dpl.wildcard(), relax.dpl.wildcard())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = mod.clone()
        for gvar, func in relax_functions(mod):
            var2val = relax.analysis.get_var2val(func)

            def rewriter(call: relax.Expr, _matches: dict, var2val=var2val) -> relax.Expr:
                if not isinstance(call, relax.Call) or str(getattr(call.ty, "dtype", "")) != "float32":
                    return call
                bounds = _clip_bounds(call)
                if bounds is None:
                    return call
                (a, b), (lo, hi) = bounds, interval(call.args[0], var2val)
                low_met, high_met = lo >= a, hi <= b
                x = call.args[0]
                if low_met and high_met:
                    return x
                if low_met:
                    return relax.op.minimum(x, relax.const(_F32(b)))
                if high_met:
                    return relax.op.maximum(x, relax.const(_F32(a)))
                return call

            out[gvar] = relax.dpl.rewrite_call(self._clip, rewriter, func)
        return out


__all__ = ["DropProvenClips", "interval"]
