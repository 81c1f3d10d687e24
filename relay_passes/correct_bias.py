"""CorrectBias: add a per-output-channel vector to chosen layers' outputs (bias correction).

Bias correction (Nagel et al., "Data-Free Quantization", 2019) removes the expected error that
weight quantization adds to a layer's output: ``E[(W_q - W) x] = (W_q - W) E[x]``, per output
channel. The vectors are computed elsewhere (:mod:`tvm_mpq.ptq.bias_correction`, from the
calibration set's mean input and the weight the precision pass quantizes); this pass only puts
them in the graph, where the precision pass folds them into the int32 bias like any bias:

* a MAC op whose only consumer is ``add(mac, bias)`` with a constant per-channel ``bias`` (a conv
  after :class:`~relay_passes.fold_batch_norm.FoldBatchNorm`, a linear layer): the constant
  becomes ``bias + correction``;
* otherwise an ``add(mac, correction)`` is inserted after the MAC op.

Run it after ``BindParams`` / batch-norm folding and before ``LowerToInteger``. Layers are keyed
by the layer table's stable names (:class:`~relay_passes.layer_keys.LayerKeys`); every Relax
function the keys describe is visited. Usable in a ``tvm.transform.Sequential``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tvm
from tvm import relax

from relay_passes.layer_keys import LayerKeys, bindings_of, relax_functions


def output_channel_axis(call: relax.Call) -> int:
    """The output-channel axis of a MAC op's result (conv: 1 (NCHW), matmul: last)."""
    return 1 if call.op.name.startswith("relax.nn.conv") else len(call.ty.shape) - 1


def _constant(expr: relax.Expr, var2val: dict) -> np.ndarray | None:
    while isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    value = getattr(expr, "value", None)
    return value.numpy() if hasattr(value, "numpy") else None


def _per_channel_shape(shape: tuple[int, ...], out_ndim: int, axis: int, channels: int) -> bool:
    """True when a constant of ``shape`` added to a rank-``out_ndim`` tensor varies along
    ``axis`` only, with ``channels`` entries (or is a broadcast scalar/vector of 1s)."""
    if len(shape) > out_ndim:
        return False
    padded = (1,) * (out_ndim - len(shape)) + tuple(shape)
    return all(d == (channels if k == axis else 1) or d == 1 for k, d in enumerate(padded)) and \
        padded[axis] in (1, channels)


@relax.expr_functor.mutator
class _BiasRewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, inserts: dict[relax.Var, np.ndarray],
                 bias_adds: dict[relax.Var, tuple[int, np.ndarray]]):
        super().__init__(mod)
        self.inserts = inserts      # MAC var -> correction constant (broadcastable to its output)
        self.bias_adds = bias_adds  # add var -> (argument index of the bias constant, new constant)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        var = binding.var
        emit = self.builder_.emit if isinstance(var, relax.DataflowVar) else self.builder_.emit_output
        if var in self.bias_adds:
            index, value = self.bias_adds[var]
            call = binding.value
            args = [self.visit_expr(a) for a in call.args]
            args[index] = relax.const(value)
            self.set_var_remap(var, emit(relax.Call(call.op, args, call.attrs, call.ty_args), var.name))
            return
        if var in self.inserts:
            mac = self.builder_.emit(self.visit_expr(binding.value), f"{var.name}_uncorrected")
            self.set_var_remap(var, emit(relax.op.add(mac, relax.const(self.inserts[var])), var.name))
            return
        super().visit_var_binding_(binding)


@tvm.transform.module_pass(opt_level=0, name="CorrectBias")
class CorrectBias:
    """Add ``corrections[name]`` (one value per output channel) to the output of each named layer.

    ``keys`` names the MAC ops (see :mod:`relay_passes.layer_keys`). A name that is not a layer
    raises ``KeyError``; a vector of the wrong length ``ValueError``. :attr:`folded` /
    :attr:`inserted` list the layers whose existing bias absorbed the vector / that got a new add.
    """

    def __init__(self, corrections: Mapping[str, np.ndarray], keys: LayerKeys):
        self.corrections = {name: np.asarray(v, dtype=np.float32).reshape(-1) for name, v in corrections.items()}
        self.keys = keys
        self.folded: list[str] = []
        self.inserted: list[str] = []

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        unknown = set(self.corrections) - self.keys.names()
        if unknown:
            raise KeyError(f"CorrectBias: no layer named {sorted(unknown)[:5]}")
        self.folded, self.inserted = [], []
        out = mod
        for gvar, func in relax_functions(mod):
            named = {var: name for var, name in self.keys.name_macs(gvar.name_hint, func).items()
                     if name in self.corrections}
            if not named:
                continue
            inserts, bias_adds = self._plan(func, named)
            rewriter = _BiasRewriter(out, inserts, bias_adds)
            new_func = rewriter.visit_expr(func)
            rewriter.builder_.update_func(out.get_global_var(gvar.name_hint), new_func)
            out = rewriter.builder_.get()
        return out

    def _plan(self, func: relax.Function, named: dict[relax.Var, str]):
        var2val = relax.analysis.get_var2val(func)
        consumers: dict[relax.Var, list[relax.VarBinding]] = {}
        for binding in bindings_of(func):
            used = [binding.value] if isinstance(binding.value, relax.Var) else relax.analysis.free_vars(binding.value)
            for v in used:
                consumers.setdefault(v, []).append(binding)
        inserts: dict[relax.Var, np.ndarray] = {}
        bias_adds: dict[relax.Var, tuple[int, np.ndarray]] = {}
        for var, name in named.items():
            call = var2val[var]
            out_shape = tuple(int(d) for d in call.ty.shape)
            axis = output_channel_axis(call)
            vector = self.corrections[name]
            if vector.size != out_shape[axis]:
                raise ValueError(f"CorrectBias: layer {name} has {out_shape[axis]} output channels, "
                                 f"the correction has {vector.size} values")
            shape = [1] * len(out_shape)
            shape[axis] = vector.size
            users = consumers.get(var, [])
            add = users[0] if len(users) == 1 and isinstance(users[0].value, relax.Call) \
                and users[0].value.op.same_as(tvm.ir.Op.get("relax.add")) else None
            if add is not None:
                args = list(add.value.args)
                index = 1 if args[0].same_as(var) else 0
                bias = _constant(args[index], var2val)
                if bias is not None and bias.dtype == np.float32 and not args[1 - index].same_as(args[index]) \
                        and _per_channel_shape(bias.shape, len(out_shape), axis, vector.size):
                    padded = bias.reshape((1,) * (len(out_shape) - bias.ndim) + bias.shape)
                    new = (padded + vector.reshape(shape)).astype(np.float32)
                    bias_adds[add.var] = (index, new)
                    self.folded.append(name)
                    continue
            inserts[var] = vector.reshape(shape)
            self.inserted.append(name)
        return inserts, bias_adds
