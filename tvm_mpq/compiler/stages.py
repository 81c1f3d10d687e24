"""The model at QuantuneV2's IR stages, as :class:`ModelGraph` s the analysis can run on.

* stage A — the imported model (conv, batch-norm, relu separate): ``ModelGraph`` as loaded;
* stage C — batch-norm folded into every conv (TVM-style fold, :class:`FoldBatchNorm`), weights
  detached again as parameters under their stage-A names, so the layer table, the analysis and
  the precision config see the same layer names at both stages.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from relay_passes.fold_batch_norm import FoldBatchNorm
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import MAC_OPS, build_layer_table


@relax.expr_functor.mutator
class _LiftWeights(relax.PyExprMutator):
    """Replace the constant weight of the i-th MAC op by a new parameter ``names[i]``."""

    def __init__(self, mod: tvm.IRModule, names: list[str | None]):
        super().__init__(mod)
        self.names = names
        self.index = 0
        self.var2val: dict = {}
        self.lifted: dict[str, tuple[relax.Var, np.ndarray]] = {}

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        new = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name in MAC_OPS):
            return new
        name = self.names[self.index]
        self.index += 1
        weight = call.args[1]
        while isinstance(weight, relax.Var) and weight in self.var2val:
            weight = self.var2val[weight]
        value = getattr(weight, "value", None)
        if name is None or not hasattr(value, "numpy"):
            return new
        array = value.numpy()
        param = relax.Var(name, relax.TensorType(array.shape, str(array.dtype)))
        self.lifted[name] = (param, array)
        return relax.Call(new.op, [new.args[0], param, *new.args[2:]], new.attrs, new.ty_args)


@relax.expr_functor.mutator
class _UniqueNames(relax.PyExprMutator):
    """Re-emit every binding under a name no other binding has (TVM's DPL rewrites reuse ``lv``
    names; the analysis finds tensors by name)."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.seen: set[str] = set()

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        name = binding.var.name
        if name not in self.seen:
            self.seen.add(name)
            super().visit_var_binding_(binding)
            return
        k = 1
        while f"{name}_{k}" in self.seen:
            k += 1
        unique = f"{name}_{k}"
        self.seen.add(unique)
        value = self.visit_expr(binding.value)
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(value, unique))


def unique_binding_names(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with every binding of ``main`` uniquely named."""
    mutator = _UniqueNames(mod)
    func = mutator.visit_expr(mod["main"])
    mutator.builder_.update_func(mod.get_global_var("main"), func)
    return mutator.builder_.get()


def stage_c_graph(graph: ModelGraph) -> ModelGraph:
    """``graph`` with batch-norm folded into the convs, weights as parameters (stage-A names)."""
    from tvm_mpq.compiler.pipeline import bind_params

    seq = tvm.transform.Sequential([relax.transform.FoldConstant(), FoldBatchNorm(None), relax.transform.FoldConstant(),
                                    relax.transform.CanonicalizeBindings(), relax.transform.DeadCodeElimination()])
    with tvm.transform.PassContext(opt_level=3):
        folded = seq(bind_params(graph))
    return lift_weights(graph, folded)


def lift_weights(graph: ModelGraph, folded: tvm.IRModule, transforms: dict | None = None) -> ModelGraph:
    """A :class:`ModelGraph` of ``folded`` (``graph``'s ``main`` after ``BindParams`` and
    rewrites that keep every MAC op in place) with each MAC op's constant weight a parameter
    again, under ``graph``'s names; ``transforms``: the new graph's (default ``graph``'s)."""
    table = build_layer_table(graph)
    func = folded["main"]
    lifter = _LiftWeights(folded, [layer.weight_param for layer in table])
    lifter.var2val = relax.analysis.get_var2val(func)
    body = lifter.visit_expr(func.body)
    params = [lifter.lifted[n][0] for n in (layer.weight_param for layer in table) if n in lifter.lifted]
    new_func = relax.Function(list(func.params) + params, body, func.ret_ty, func.is_pure, func.attrs)
    new_func = new_func.with_attr("num_input", len(func.params))
    mod = folded.clone()  # keep the module's other functions (PrimFuncs from the importer)
    mod["main"] = new_func
    mod = unique_binding_names(relax.transform.DeadCodeElimination()(mod))
    arrays = {p.name: lifter.lifted[p.name][1] for p in params}
    return ModelGraph(graph.name, mod, graph.inputs, arrays, graph.layer_names, graph.source,
                      dict(graph.transforms if transforms is None else transforms))
