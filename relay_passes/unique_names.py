"""UniqueBindingNames: give every binding of a function a name no other binding has.

TVM's DPL rewrites (``rewrite_call``) and folds name new bindings ``lv``, ``lv1``, ... afresh,
which can repeat names already in the function. Tools that find tensors by name (the layer
table, calibration's exposed tensors) need them unique.
"""

from __future__ import annotations

import tvm
from tvm import relax


@relax.expr_functor.mutator
class _Rename(relax.PyExprMutator):
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


@relax.transform.function_pass(opt_level=0, name="UniqueBindingNames")
class UniqueBindingNames:
    """Rename each binding whose name an earlier binding of the function has (``name_k``)."""

    def transform_function(self, func: relax.Function, mod: tvm.IRModule,
                           _ctx: tvm.transform.PassContext) -> relax.Function:
        if func.attrs is not None and func.attrs.get("Primitive"):
            return func
        return _Rename(mod).visit_expr(func)
