"""InjectTensors: replace chosen intermediate tensors by values fed from outside.

Teacher forcing for layer-by-layer checks: after each binding named in ``names``, every later
use reads a new parameter ``forced_<name>`` of the function instead, so the ops downstream see
exactly the values the caller feeds (e.g. another model's tensors).
"""

from __future__ import annotations

from collections.abc import Sequence

import tvm
from tvm import relax

INJECTED_ATTR = "mpq_injected_tensors"
"""Function attribute: the names whose tensors became parameters, in parameter order."""


@relax.expr_functor.mutator
class _Inject(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, names: Sequence[str]):
        super().__init__(mod)
        self.names = set(names)
        self.params: dict[str, relax.Var] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        super().visit_var_binding_(binding)
        if binding.var.name in self.names:
            param = relax.Var(f"forced_{binding.var.name}", binding.var.ty)
            self.params[binding.var.name] = param
            self.set_var_remap(binding.var, param)


@tvm.transform.module_pass(opt_level=0, name="InjectTensors")
class InjectTensors:
    """Make each binding of function ``function`` named in ``names`` a parameter for its later
    uses (appended after the inputs, in the order of ``names``; ``num_input`` counts them). The
    names found are the function's attribute :data:`INJECTED_ATTR`. An entry function's
    signature changes, so one function is named (default ``main``) rather than all visited."""

    def __init__(self, names: Sequence[str], function: str = "main"):
        self.names = list(names)
        self.function = function

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        func = mod[self.function]
        inject = _Inject(mod, self.names)
        body = inject.visit_expr(func.body)
        order = [n for n in self.names if n in inject.params]
        new = relax.Function(list(func.params) + [inject.params[n] for n in order], body, func.ret_ty,
                             func.is_pure, func.attrs)
        out = mod.clone()  # keep the module's other functions (PrimFuncs from the importer)
        out[self.function] = new.with_attr("num_input", len(func.params) + len(order)).with_attr(INJECTED_ATTR, order)
        return out
