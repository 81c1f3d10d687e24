"""CorrectBias: add a per-output-channel vector to chosen layers' outputs (bias correction).

Bias correction (Nagel et al., "Data-Free Quantization", 2019) removes the expected error that
weight quantization adds to a layer's output: ``E[(W_q - W) x] = (W_q - W) E[x]``, per output
channel. The vectors are computed elsewhere (:mod:`tvm_mpq.ptq.bias_correction`, from the
calibration set's mean input and the weight the lowering quantizes); this pass only puts them in
the graph, where :class:`~relay_passes.lower_to_integer.LowerToInteger` folds them into the
int32 bias like any bias:

* a MAC op whose only consumer is ``add(mac, bias)`` with a constant per-channel ``bias`` (a conv
  after :class:`~relay_passes.fold_batch_norm.FoldBatchNorm`, a linear layer): the constant
  becomes ``bias + correction``;
* otherwise an ``add(mac, correction)`` is inserted after the MAC op.

Layers are found by their precision annotation (``R.mpq.precision``, the layer table's stable
name): run it after :class:`~relay_passes.annotate_precision.AnnotatePrecision` and batch-norm
folding, before the lowering (the compile pipeline does, for a config that carries corrections).
Every Relax function is visited; each function it changed records what it did as attribute
:data:`CORRECTED_ATTR` (:func:`bias_corrected_layers`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tvm
from tvm import relax

from relay_passes.precision_annotation import annotated_layers, bound_constant, relax_functions

CORRECTED_ATTR = "mpq_bias_correction"
"""Function attribute: ``{"folded": [layer, ...], "inserted": [layer, ...]}``, the layers whose
existing bias absorbed the correction / that got a new add."""


def bias_corrected_layers(mod: tvm.IRModule) -> dict[str, str]:
    """Layer -> ``"folded"`` or ``"inserted"``, for every layer :class:`CorrectBias` corrected
    in any function of ``mod``."""
    out: dict[str, str] = {}
    for _, func in relax_functions(mod):
        if func.attrs is not None and CORRECTED_ATTR in func.attrs:
            record = func.attrs[CORRECTED_ATTR]
            for how in ("folded", "inserted"):
                out.update({str(name): how for name in record[how]})
    return out


def output_channel_axis(call: relax.Call) -> int:
    """The output-channel axis of a MAC op's result (conv: where ``C`` is in its out layout,
    matmul: last)."""
    if call.op.name.startswith("relax.nn.conv"):
        layout = str(call.attrs.out_layout or call.attrs.data_layout)
        return layout.index("C")
    return len(call.ty.shape) - 1



def _per_channel_shape(shape: tuple[int, ...], out_ndim: int, axis: int, channels: int) -> bool:
    """True when a constant of ``shape`` added to a rank-``out_ndim`` tensor varies along
    ``axis`` only, with ``channels`` entries (or is a broadcast scalar/vector of 1s)."""
    if len(shape) > out_ndim:
        return False
    padded = (1,) * (out_ndim - len(shape)) + tuple(shape)
    return all(d == 1 or (k == axis and d == channels) for k, d in enumerate(padded))


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


def _consumers(func: relax.Function) -> dict[relax.Var, list[relax.VarBinding]]:
    out: dict[relax.Var, list[relax.VarBinding]] = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            used = [binding.value] if isinstance(binding.value, relax.Var) else relax.analysis.free_vars(binding.value)
            for v in used:
                out.setdefault(v, []).append(binding)
    return out


@tvm.transform.module_pass(opt_level=0, name="CorrectBias")
class CorrectBias:
    """Add ``corrections[layer]`` (one value per output channel) to the output of each layer.

    Layers are named by their precision annotations. A name no function annotates raises
    ``KeyError``; a vector of the wrong length ``ValueError``. What was done is written on each
    changed function (:data:`CORRECTED_ATTR`, :func:`bias_corrected_layers`).
    """

    def __init__(self, corrections: Mapping[str, np.ndarray]):
        self.corrections = {name: np.asarray(v, dtype=np.float32).reshape(-1) for name, v in corrections.items()}

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = mod.clone()
        seen: set[str] = set()
        for gvar, func in relax_functions(mod):
            named = {binding.var: annotation.layer for binding, annotation in annotated_layers(func)
                     if annotation.layer in self.corrections}
            if not named:
                continue
            seen.update(named.values())
            inserts, bias_adds, record = self._plan(func, named)
            new_func = _BiasRewriter(mod, inserts, bias_adds).visit_expr(func)
            out[gvar] = new_func.with_attr(CORRECTED_ATTR, record)
        unknown = sorted(set(self.corrections) - seen)
        if unknown:
            raise KeyError(f"CorrectBias: no layer annotated {unknown[:5]}")
        return out

    def _plan(self, func: relax.Function, named: dict[relax.Var, str]):
        var2val = relax.analysis.get_var2val(func)
        consumers = _consumers(func)
        add_op = tvm.ir.Op.get("relax.add")
        inserts: dict[relax.Var, np.ndarray] = {}
        bias_adds: dict[relax.Var, tuple[int, np.ndarray]] = {}
        record: dict[str, list[str]] = {"folded": [], "inserted": []}
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
                and users[0].value.op.same_as(add_op) else None
            if add is not None and add.var not in bias_adds:
                args = list(add.value.args)
                index = 1 if args[0].same_as(var) else 0
                bias = bound_constant(args[index], var2val)
                if bias is not None and bias.dtype == np.float32 and not args[1 - index].same_as(args[index]) \
                        and bias.size in (1, vector.size) \
                        and _per_channel_shape(bias.shape, len(out_shape), axis, vector.size):
                    padded = bias.reshape((1,) * (len(out_shape) - bias.ndim) + bias.shape)
                    new = (padded + vector.reshape(shape)).astype(np.float32)
                    bias_adds[add.var] = (index, new)
                    record["folded"].append(name)
                    continue
            inserts[var] = vector.reshape(shape)
            record["inserted"].append(name)
        return inserts, bias_adds, record
