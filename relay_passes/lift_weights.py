"""LiftWeights: turn chosen layers' constant weights back into function parameters.

After ``BindParams`` and folds (e.g. :class:`~relay_passes.fold_batch_norm.FoldBatchNorm` into
every conv: the stage-C model), a layer's weight is a constant the fold computed. Lifting it to
a parameter under the layer's stage-A parameter name lets the stage-C model be handled like an
imported one (the layer table finds the same stable names; methods swap weight values at run
time). Layers are found by their precision annotations.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant

from relay_passes.precision_annotation import is_mac, read_annotation, relax_functions


@relax.expr_functor.mutator
class _Lift(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, names: Mapping[str, str], lifted: dict[str, np.ndarray]):
        super().__init__(mod)
        self.names = names
        self.lifted = lifted
        self.var2val: dict = {}
        self.params: dict[str, relax.Var] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        data = value.args[0] if is_mac(value) else None
        annotation = read_annotation(self.var2val.get(data)) if isinstance(data, relax.Var) else None
        weight = value.args[1] if annotation is not None else None
        while isinstance(weight, relax.Var) and weight in self.var2val:
            weight = self.var2val[weight]
        if annotation is None or annotation.layer not in self.names or not isinstance(weight, Constant):
            super().visit_var_binding_(binding)
            return
        name = self.names[annotation.layer]
        array = weight.value.numpy()
        if name not in self.params:
            self.params[name] = relax.Var(name, relax.TensorType(array.shape, str(array.dtype)))
            self.lifted[name] = array
        call = self.visit_expr(value)
        new_call = relax.Call(call.op, [call.args[0], self.params[name], *call.args[2:]], call.attrs, call.ty_args)
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(new_call, name_hint=binding.var.name))


@tvm.transform.module_pass(opt_level=0, name="LiftWeights")
class LiftWeights:
    """Replace the constant weight of each layer in ``names`` (stable name -> parameter name) by
    a new parameter of its function, appended after the existing ones (``num_input`` keeps the
    count of the original parameters). The lifted values are written into ``lifted`` (parameter
    name -> array), which the caller passes in and keeps."""

    def __init__(self, names: Mapping[str, str], lifted: dict[str, np.ndarray]):
        self.names = dict(names)
        self.lifted = lifted

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = mod.clone()
        for gvar, func in relax_functions(mod):
            lift = _Lift(mod, self.names, self.lifted)
            lift.var2val = relax.analysis.get_var2val(func)
            new = lift.visit_expr(func)
            if not lift.params:
                continue
            params = [lift.params[n] for n in dict.fromkeys(self.names.values()) if n in lift.params]
            lifted = relax.Function(list(new.params) + params, new.body, new.ret_ty, new.is_pure, new.attrs)
            out[gvar] = lifted.with_attr("num_input", len(func.params))
        return out
