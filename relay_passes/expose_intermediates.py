"""ExposeIntermediates: make chosen intermediate tensors extra outputs of an entry function."""

from __future__ import annotations

import tvm
from tvm import relax


@tvm.transform.module_pass(opt_level=0, name="ExposeIntermediates")
class ExposeIntermediates:
    """Append the tensors bound to ``var_names`` to the outputs of function ``function``.

    An entry function's outputs change, so one function is named (default ``main``) rather than
    all visited. The new function returns ``(original_output, (t_0, ..., t_k-1))``: flattened, the last
    ``len(var_names)`` outputs are the exposed tensors, in the order given. Calibration runs the
    compiled module once per batch and reads every observed tensor at once. The function is
    taken out of dataflow form (a dataflow variable cannot leave its block) and put back into it
    with ``ConvertToDataflow`` so that ``FuseOps`` still applies.
    """

    def __init__(self, var_names: list[str], function: str = "main"):
        self.var_names = list(var_names)
        self.function = function

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        mod = relax.transform.ToNonDataflow()(mod)
        func = mod[self.function]
        all_vars = [p for p in func.params] + [b.var for block in func.body.blocks for b in block.bindings]
        bound = {v.name: v for v in all_vars}
        if len(bound) != len(all_vars):
            raise ValueError(f"ExposeIntermediates: variable names in {self.function} are not unique")
        missing = [n for n in self.var_names if n not in bound]
        if missing:
            raise ValueError(f"ExposeIntermediates: no variable named {missing[:5]} in {self.function}")
        result = relax.BlockBuilder().normalize(
            relax.Tuple([func.body.body, relax.Tuple([bound[n] for n in self.var_names])])
        )
        body = relax.SeqExpr(func.body.blocks, result)
        new_func = relax.Function(func.params, body, ret_ty=result.ty, attrs=func.attrs)
        mod = mod.clone()  # ToNonDataflow may hand back the caller's module unchanged
        mod[self.function] = new_func
        mod = relax.transform.Normalize()(mod)
        return relax.transform.ConvertToDataflow(min_size=1)(mod)
