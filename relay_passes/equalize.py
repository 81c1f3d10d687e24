"""EqualizeCrossLayer: cross-layer equalization of conv pairs (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", 2019).

A pair is two convolutions joined by a chain that commutes with a positive per-channel scale::

    conv2d(W1) [-> add(bias)] [-> batch_norm[0]]
        [-> relu | clip(0, hi) | maximum(0) [-> minimum(hi)]] [-> pad(0)] -> conv2d(W2)

with, anywhere after the bias add and batch-norm, any number of affine steps ``multiply(c)`` /
``add(c)`` by a constant ``c`` that is a scalar or per channel (PP-LCNetV3's learnable affine
after each conv, as paddle2onnx writes it: ``Mul(a) -> Add(b)`` with scalars), where every tensor
of the chain has a single consumer and ``W2`` is a regular conv (groups 1:
its input channels are scaled) or a depthwise conv (its channels are scaled). Dividing output
channel ``c`` of the first layer by ``s_c > 0`` and multiplying the matching input channel of
the second by ``s_c`` leaves the function unchanged, exactly in real arithmetic:

* the first layer: with a batch-norm, its ``gamma`` and ``beta`` are divided (``BN(y) / s``);
  without, the weight's row and the bias are;
* an affine step: a multiply by ``c`` commutes with the scale (DFQ's range of the first layer's
  output then includes ``|c|``); an add of ``c`` becomes an add of ``c / s`` (per channel);
* ReLU is positively homogeneous; ReLU6 is not (``min(x / s, 6) != min(x, 6) / s``), so
  ``clip(x, 0, 6)`` becomes ``minimum(maximum(x, 0), 6 / s)`` with a per-channel upper bound
  (and an ONNX import's ``minimum(maximum(x, 0), 6)``, after
  :class:`~relay_passes.te_elementwise.RecoverMinMax`, gets the bound ``6 / s``): the clipping
  happens at the same points of the original function;
* zero padding commutes with any scale.

The scales are DFQ's (``s_c = sqrt(r1_c / r2_c)``, ``r1``: the range of the first layer's output
channel ``c`` (batch-norm gain included), ``r2``: the range of the second layer's weights for
input channel ``c``; both become ``sqrt(r1 r2)``) unless given (``scales``: e.g. from a precision
config, so that a compile reproduces the analysis). Pairs are equalized in program order, each
with the weights as left by the previous ones (a depthwise conv is the second layer of one pair
and the first of the next).

Layers are found by their precision annotations (``R.mpq.precision``, the layer table's stable
names; fp32 annotations only name a layer): run it after ``BindParams`` and
:class:`~relay_passes.annotate_precision.AnnotatePrecision`, on every Relax function. An
annotation between the two convs (the second one's data operand) is part of the chain. What was
done is written on each changed function as attribute :data:`EQUALIZED_ATTR`
(:func:`equalized_pairs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Mapping

import numpy as np
import tvm
from tvm import relax

from relay_passes.precision_annotation import annotated_layers, op_name, read_annotation, relax_functions

SCALE_LIMIT = 2.0**10
"""DFQ scales are clamped to ``[1 / SCALE_LIMIT, SCALE_LIMIT]`` (a near-dead channel would
otherwise get an extreme one)."""
EQUALIZED_ATTR = "mpq_equalized_pairs"
"""Function attribute: the pairs :class:`EqualizeCrossLayer` equalized in that function, each
``{"first", "second", "scales": [...], "clip_hi"?}`` (:meth:`EqualizedPair.to_attr`)."""


@dataclass(frozen=True)
class EqualizedPair:
    """``first``'s output channel ``c`` was divided by ``scales[c]`` and ``second``'s input
    channel ``c`` multiplied by it. ``clip_hi``: the upper bound of the ReLU6-like clip between
    them (now ``clip_hi / scales`` per channel), or None."""

    first: str
    second: str
    scales: np.ndarray
    clip_hi: float | None

    def to_json(self) -> dict:
        return {"first": self.first, "second": self.second, "scales": [float(s) for s in self.scales]}

    def to_attr(self) -> dict:
        out: dict = self.to_json()
        if self.clip_hi is not None:
            out["clip_hi"] = float(self.clip_hi)
        return out

    @staticmethod
    def from_attr(attr: Mapping) -> "EqualizedPair":
        clip_hi = float(attr["clip_hi"]) if "clip_hi" in attr else None
        return EqualizedPair(str(attr["first"]), str(attr["second"]),
                             np.asarray([float(v) for v in attr["scales"]], np.float64), clip_hi)


def equalized_pairs(mod: tvm.IRModule) -> list[EqualizedPair]:
    """Every pair :class:`EqualizeCrossLayer` equalized in ``mod``, function by function (in
    name order) and in program order within each."""
    out: list[EqualizedPair] = []
    for _, func in sorted(relax_functions(mod), key=lambda item: item[0].name_hint):
        if func.attrs is not None and EQUALIZED_ATTR in func.attrs:
            out += [EqualizedPair.from_attr(pair) for pair in func.attrs[EQUALIZED_ATTR]]
    return out


def _bindings(func: relax.Function) -> list[relax.VarBinding]:
    return [b for block in func.body.blocks for b in block.bindings]


@dataclass
class _Chain:
    """The bindings between two equalizable convs (see the module docstring)."""

    first: relax.Var
    second: relax.Var
    bias_add: relax.Var | None = None
    bias_index: int = 1
    batch_norm: relax.Var | None = None
    clip: relax.Var | None = None
    clip_hi: float | None = None
    relu_max: bool = False
    """A ``maximum(x, 0)`` (ReLU, or the lower half of a ReLU6 written as max / min)."""
    minimum: relax.Var | None = None
    minimum_index: int = 1
    """A ``minimum(x, hi)`` after ``maximum(x, 0)``: the argument index of its bound ``hi``."""
    affine_adds: list[tuple[relax.Var, int]] = field(default_factory=list)
    """Adds of a constant (scalar or per channel) after the bias add and batch-norm: binding and
    the constant's argument index (the constant becomes ``c / s``)."""
    gain: np.ndarray | float = 1.0
    """The product of the chain's constant multipliers' magnitudes (scalar or per channel)."""


def _const(expr: relax.Expr) -> np.ndarray | None:
    value = getattr(expr, "value", None)
    return value.numpy() if hasattr(value, "numpy") else None


def _scalar(expr: relax.Expr) -> float:
    """The number held by a ``PrimValue`` argument (clip's bounds)."""
    value = getattr(expr, "value", expr)
    return float(getattr(value, "value", value))


def _const_operand(call: relax.Call, data: relax.Var) -> tuple[int, np.ndarray] | None:
    """``(index, value)`` of the constant operand of a binary op whose other operand is ``data``,
    or None."""
    args = list(call.args)
    if len(args) != 2 or not any(a.same_as(data) for a in args):
        return None
    index = 1 if args[0].same_as(data) else 0
    value = _const(args[index])
    return None if value is None else (index, value)


def _scalar_const(call: relax.Call, data: relax.Var) -> tuple[int, float] | None:
    """``(index, value)`` of the scalar constant operand of a binary op whose other operand is
    ``data``, or None."""
    found = _const_operand(call, data)
    if found is None or found[1].size != 1:
        return None
    return found[0], float(found[1].reshape(-1)[0])


def _operand(call: relax.Call, data: relax.Var, channels: int, scalar: bool) -> int | None:
    """The argument index of the constant operand of binary ``call`` whose other operand is
    ``data`` when that constant is per channel (or, with ``scalar``, a scalar), else None."""
    found = _const_operand(call, data)
    if found is None:
        return None
    index, value = found
    if value.dtype.kind != "f" or not (_per_channel(value, channels) or (scalar and value.size == 1)):
        return None
    return index


def _is_nchw_conv(call: relax.Call) -> bool:
    attrs = call.attrs
    return (op_name(call) == "relax.nn.conv2d" and attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW"
            and attrs.out_layout == "NCHW" and _const(call.args[1]) is not None)


def _per_channel(value: np.ndarray, channels: int) -> bool:
    return value.size == channels and value.ndim >= 1 and max(value.shape) == channels and \
        (value.ndim == 1 or value.shape[1 if value.ndim == 4 else -1] == channels)


class _Finder:
    """Finds the equalizable chains of one function."""

    def __init__(self, func: relax.Function, named: dict[relax.Var, str]):
        self.named = named
        self.var2val = relax.analysis.get_var2val(func)
        self.consumers: dict[relax.Var, list[relax.VarBinding]] = {}
        for binding in _bindings(func):
            used = [binding.value] if isinstance(binding.value, relax.Var) else relax.analysis.free_vars(binding.value)
            for v in used:
                self.consumers.setdefault(v, []).append(binding)
        self.outputs = set(relax.analysis.free_vars(func.body.body)) if not isinstance(func.body.body, relax.Var) \
            else {func.body.body}

    def _single_user(self, var: relax.Var) -> relax.VarBinding | None:
        users = self.consumers.get(var, [])
        if len(users) != 1 or var in self.outputs:
            return None
        return users[0]

    def chain(self, first: relax.Var) -> _Chain | None:
        call = self.var2val[first]
        if not _is_nchw_conv(call):
            return None
        channels = int(call.ty.shape[1])
        found = _Chain(first, first)
        cur = first
        stage = 0  # order: bias add, batch-norm, activation, pad
        while True:
            user = self._single_user(cur)
            if user is None:
                return None
            value, name = user.value, op_name(user.value)
            if read_annotation(value) is not None:
                pass  # the next layer's precision annotation: the identity
            elif isinstance(value, relax.TupleGetItem):
                if found.batch_norm is None or not value.tuple_value.same_as(found.batch_norm) or value.index != 0:
                    return None
            elif name == "relax.add" and stage < 1 and (bias := _operand(value, cur, channels, scalar=False)) is not None:
                found.bias_add, found.bias_index, stage = user.var, bias, 1
            elif name in ("relax.add", "relax.multiply"):  # an affine step (no batch-norm after it)
                index = _operand(value, cur, channels, scalar=True)
                if index is None:
                    return None
                if name == "relax.add":
                    found.affine_adds.append((user.var, index))
                else:
                    factor = np.abs(_const(value.args[index]).astype(np.float64)).reshape(-1)
                    found.gain = found.gain * (factor if factor.size == channels else float(factor[0]))
                stage = max(stage, 2)
            elif name == "relax.nn.batch_norm" and stage < 2:
                if int(value.attrs.axis) != 1 or any(_const(a) is None for a in value.args[1:5]) \
                        or not value.args[0].same_as(cur):
                    return None
                found.batch_norm, stage = user.var, 2
                user = self._tuple_item(user.var)
                if user is None:
                    return None
            elif name == "relax.nn.relu" and stage < 3:
                stage = 3
            elif name == "relax.clip" and stage < 3:
                lo, hi = _scalar(value.args[1]), _scalar(value.args[2])
                if lo != 0.0 or not hi > 0.0:
                    return None
                found.clip, found.clip_hi, stage = user.var, hi, 3
            elif name == "relax.maximum" and stage < 3:  # ReLU (6) as an ONNX import writes it
                bound = _scalar_const(value, cur)
                if bound is None or bound[1] != 0.0:
                    return None
                found.relu_max, stage = True, 3
            elif name == "relax.minimum" and stage == 3 and found.relu_max and found.minimum is None:
                bound = _scalar_const(value, cur)
                if bound is None or not bound[1] > 0.0:
                    return None
                found.minimum, found.minimum_index, found.clip_hi = user.var, bound[0], bound[1]
            elif name == "relax.nn.pad" and stage < 4:
                if float(value.attrs.pad_value) != 0.0 or value.attrs.pad_mode != "constant":
                    return None
                stage = 4
            elif user.var in self.named and _is_nchw_conv(value) and value.args[0].same_as(cur):
                groups = int(value.attrs.groups)
                weight = _const(value.args[1])
                if groups == 1 and weight.shape[1] == channels:
                    found.second = user.var
                    return found
                if groups == channels and weight.shape[0] == channels and weight.shape[1] == 1:
                    found.second = user.var
                    return found
                return None
            else:
                return None
            cur = user.var

    def _tuple_item(self, bn: relax.Var) -> relax.VarBinding | None:
        user = self._single_user(bn)
        if user is None or not isinstance(user.value, relax.TupleGetItem) or user.value.index != 0:
            return None
        return user


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    """Replaces constant arguments (binding -> {arg index: array}) and the clips' upper bounds."""

    def __init__(self, mod: tvm.IRModule, args: dict[relax.Var, dict[int, np.ndarray]],
                 clips: dict[relax.Var, np.ndarray]):
        super().__init__(mod)
        self.args = args
        self.clips = clips

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        var = binding.var
        if var not in self.args and var not in self.clips:
            super().visit_var_binding_(binding)
            return
        emit = self.builder_.emit if isinstance(var, relax.DataflowVar) else self.builder_.emit_output
        call = binding.value
        new_args = [self.visit_expr(a) for a in call.args]
        if var in self.clips:
            x = self.builder_.emit(relax.op.maximum(new_args[0], relax.const(np.float32(0.0))), f"{var.name}_relu")
            self.set_var_remap(var, emit(relax.op.minimum(x, relax.const(self.clips[var])), var.name))
            return
        for index, value in self.args[var].items():
            new_args[index] = relax.const(value)
        self.set_var_remap(var, emit(relax.Call(call.op, new_args, call.attrs, call.ty_args), var.name))


@tvm.transform.module_pass(opt_level=0, name="EqualizeCrossLayer")
class EqualizeCrossLayer:
    """Equalize every equalizable conv pair of every Relax function (see the module docstring).

    ``scales``: ``{(first, second): per-channel scales}`` to apply instead of computing DFQ's
    (then exactly those pairs; one that is not equalizable raises ``ValueError``). Each changed
    function records its pairs as attribute :data:`EQUALIZED_ATTR` (:func:`equalized_pairs`).
    """

    def __init__(self, scales: Mapping[tuple[str, str], np.ndarray] | None = None):
        self.scales = None if scales is None else {k: np.asarray(v, np.float64) for k, v in scales.items()}

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = mod.clone()
        done: set[tuple[str, str]] = set()
        for gvar, func in relax_functions(mod):
            named = {binding.var: annotation.layer for binding, annotation in annotated_layers(func)}
            if not named:
                continue
            args, clips, pairs = self._plan(func, named)
            if not pairs:
                continue
            new_func = _Rewriter(mod, args, clips).visit_expr(func)
            out[gvar] = new_func.with_attr(EQUALIZED_ATTR, [pair.to_attr() for pair in pairs])
            done.update((p.first, p.second) for p in pairs)
        if self.scales is not None:
            missing = set(self.scales) - done
            if missing:
                raise ValueError(f"EqualizeCrossLayer: no equalizable pair {sorted(missing)[:3]}")
        return out

    def _plan(self, func: relax.Function, named: dict[relax.Var, str]):
        finder = _Finder(func, named)
        var2val = finder.var2val
        args: dict[relax.Var, dict[int, np.ndarray]] = {}
        clips: dict[relax.Var, np.ndarray] = {}

        def current(var: relax.Var, index: int) -> np.ndarray:
            if index in args.get(var, {}):
                return args[var][index]
            return _const(var2val[var].args[index]).astype(np.float32)

        def put(var: relax.Var, index: int, value: np.ndarray) -> None:
            args.setdefault(var, {})[index] = value.astype(np.float32)

        pairs: list[EqualizedPair] = []
        macs = [b.var for b in _bindings(func) if b.var in named]
        for first in macs:
            chain = finder.chain(first)
            if chain is None:
                continue
            key = (named[chain.first], named[chain.second])
            if self.scales is not None and key not in self.scales:
                continue
            w1 = current(chain.first, 1)
            gain = np.ones(w1.shape[0]) * chain.gain
            if chain.batch_norm is not None:
                bn = var2val[chain.batch_norm]
                gamma, var_ = current(chain.batch_norm, 1).astype(np.float64), current(chain.batch_norm, 4)
                gain = gain * np.abs(gamma / np.sqrt(var_.astype(np.float64) + float(bn.attrs.epsilon)))
            w2 = current(chain.second, 1)
            depthwise = int(var2val[chain.second].attrs.groups) != 1
            if self.scales is not None:
                s = self.scales[key]
                if s.size != w1.shape[0] or not np.all(s > 0):
                    raise ValueError(f"EqualizeCrossLayer: scales of {key} must be {w1.shape[0]} positive values")
            else:
                r1 = np.abs(w1.astype(np.float64)).reshape(w1.shape[0], -1).max(axis=1) * gain
                r2 = (np.abs(w2.astype(np.float64)).reshape(w2.shape[0], -1).max(axis=1) if depthwise
                      else np.abs(w2.astype(np.float64)).max(axis=(0, 2, 3)))
                live = (r1 > 0) & (r2 > 0)
                s = np.ones_like(r1)
                s[live] = np.clip(np.sqrt(r1[live] / r2[live]), 1 / SCALE_LIMIT, SCALE_LIMIT)
            s32 = s.astype(np.float32)
            if chain.batch_norm is not None:
                put(chain.batch_norm, 1, current(chain.batch_norm, 1) / s32)
                put(chain.batch_norm, 2, current(chain.batch_norm, 2) / s32)
            else:
                put(chain.first, 1, w1 / s32.reshape(-1, 1, 1, 1))
                if chain.bias_add is not None:
                    bias = current(chain.bias_add, chain.bias_index)
                    put(chain.bias_add, chain.bias_index, bias / s32.reshape(_channel_shape(bias, s32.size)))
            if depthwise:
                put(chain.second, 1, w2 * s32.reshape(-1, 1, 1, 1))
            else:
                put(chain.second, 1, w2 * s32.reshape(1, -1, 1, 1))
            for add, index in chain.affine_adds:  # y / s + c / s = (y + c) / s
                put(add, index, _per_channel_quotient(current(add, index), s32))
            if chain.clip is not None:
                clips[chain.clip] = (np.float32(chain.clip_hi) / s32).reshape(1, -1, 1, 1)
            if chain.minimum is not None:  # min(max(x / s, 0), hi / s) = min(max(x, 0), hi) / s
                put(chain.minimum, chain.minimum_index, (np.float32(chain.clip_hi) / s32).reshape(1, -1, 1, 1))
            pairs.append(EqualizedPair(key[0], key[1], s, chain.clip_hi))
        return args, clips, pairs


def _channel_shape(value: np.ndarray, channels: int) -> tuple[int, ...]:
    """The shape that broadcasts a per-channel vector against ``value`` (channels at axis 1 of
    an NCHW-shaped constant, or along its only non-1 axis)."""
    shape = [1] * value.ndim
    axis = next(i for i, d in enumerate(value.shape) if d == channels)
    shape[axis] = channels
    return tuple(shape)


def _per_channel_quotient(value: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``value / scales`` per channel of an NCHW tensor: a scalar becomes ``(1, C, 1, 1)``."""
    if value.size == 1:
        return np.float32(value.reshape(-1)[0]) / scales.reshape(1, -1, 1, 1)
    return value / scales.reshape(_channel_shape(value, scales.size))
