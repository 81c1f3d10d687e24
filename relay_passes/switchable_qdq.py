"""InsertSwitchableQDQ: activation quantizers whose scale, zero point, range and on/off are inputs.

Methods that score many precision assignments (Top-1 one layer at a time, Pandey et al.'s
phase 1 and Pareto walk) would otherwise compile one simulated model per assignment. This pass
makes one module serve them all: before each chosen operand of each chosen layer it inserts the
quantize-dequantize chain of :mod:`relay_passes.qdq_steps` whose scale, zero point, ``qmax``
and an on/off switch are new scalar parameters of the function; "off" selects the fp32 tensor
(``where``), so an fp32 layer computes exactly what the fp32 model computes, and "on" computes
exactly what :class:`~relay_passes.simulate_quantization.SimulateQuantization` does.

Layers are found by their precision annotations (stable names); the pass consumes every
annotation. The new parameters follow the function's own, in the order of ``sites`` (layer,
then operand), four per site: :func:`site_param_names`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tvm
from tvm import relax

from relay_passes.precision_annotation import PrecisionAnnotation, detach_annotations, relax_functions
from relay_passes.qdq_steps import clamp_codes, dequantize_steps, emit_chain, quantize_steps

SITE_FIELDS = ("s", "zp", "qmax", "on")
"""The runtime parameters of one site: scale, zero point, qmax (float32 scalars), on (bool)."""


def site_param_names(layer: str, operand: int) -> list[str]:
    """Names of the parameters of ``layer``'s quantizer on ``operand`` (0: data, 1: matmul's B)."""
    return [f"mpq_probe_{layer}_{operand}_{field}" for field in SITE_FIELDS]


@relax.expr_functor.mutator
class _Switchable(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, annotations: dict[relax.Var, PrecisionAnnotation],
                 params: Mapping[tuple[str, int], list[relax.Var]]):
        super().__init__(mod)
        self.annotations = annotations
        self.params = params

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        annotation = self.annotations.get(binding.var)
        operands = [] if annotation is None else [op for layer, op in self.params if layer == annotation.layer]
        if not operands:
            super().visit_var_binding_(binding)
            return
        call = self.visit_expr(binding.value)
        args = list(call.args)
        for operand in operands:
            scale, zero_point, qmax, on = self.params[(annotation.layer, operand)]
            x = args[operand]
            steps = [*quantize_steps(scale, zero_point, clamp_codes(qmax)), *dequantize_steps(scale, zero_point),
                     lambda v, x=x, on=on: relax.op.where(on, v, x)]
            args[operand] = emit_chain(self.builder_.emit, x, steps, f"mpq_probe_{binding.var.name}_{operand}_")
        new_call = relax.Call(call.op, args, call.attrs, call.ty_args)
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(new_call, name_hint=binding.var.name))


@tvm.transform.module_pass(opt_level=0, name="InsertSwitchableQDQ")
class InsertSwitchableQDQ:
    """Insert a switchable QDQ at every site of ``sites`` (stable name -> operand indices, 0 for
    the data operand, 1 for the second operand of an activation x activation matmul)."""

    def __init__(self, sites: Mapping[str, Sequence[int]]):
        self.sites = {layer: tuple(operands) for layer, operands in sites.items()}

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = mod.clone()
        for gvar, func in relax_functions(mod):
            detached, annotations = detach_annotations(func, mod)
            present = {a.layer for a in annotations.values()}
            params = {(layer, operand): [relax.Var(name, relax.TensorType((), "bool" if name.endswith("_on") else
                                                                            "float32"))
                                         for name in site_param_names(layer, operand)]
                      for layer, operands in self.sites.items() if layer in present for operand in operands}
            new = _Switchable(mod, annotations, params).visit_expr(detached)
            extra = [p for site_params in params.values() for p in site_params]
            out[gvar] = relax.Function(list(new.params) + extra, new.body, ret_ty=new.ret_ty, attrs=new.attrs)
        return relax.transform.Normalize()(out)
