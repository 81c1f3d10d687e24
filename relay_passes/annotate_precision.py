"""AnnotatePrecision: write a precision config into the IR, one annotation per layer.

The decision "this conv runs int8 at these scales, that matmul stays fp32" is part of the module,
not a plan handed to the lowering beside it: every MAC op of the layer table reads its data
operand through ``R.mpq.precision(...)``
(:mod:`relay_passes.precision_annotation`), keyed by the layer's stable name. Printing the
module shows the decision next to each layer; a pass of one's own can read or change it; the
passes after it (:class:`~relay_passes.fold_batch_norm.FoldBatchNorm`,
:class:`~relay_passes.lower_to_integer.LowerToInteger`,
:class:`~relay_passes.simulate_quantization.SimulateQuantization`) act on what it says.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant

from relay_passes.precision_annotation import (PrecisionAnnotation, annotate, is_mac, relax_functions,
                                               weight_channel_axis)
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.errors import MpqError
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.quantization.quantizers import weight_scales

Precisions = Mapping[str, PrecisionAnnotation]
"""Layer stable name -> its annotation."""


def config_annotations(config: PrecisionConfig, table: LayerTable) -> dict[str, PrecisionAnnotation]:
    """The annotation of every layer of ``config`` (checked against ``table`` first: MpqError
    when it names layers the model lacks or misses some). Weight scales are the config's where
    it has them; the pass computes the others from the bound weight."""
    config.validate(table)
    out: dict[str, PrecisionAnnotation] = {}
    for layer in table:
        lp = config.layers[layer.name]
        if lp.is_fp32:
            out[layer.name] = PrecisionAnnotation.fp32(layer.name)
            continue
        scales = None if lp.weight_scales is None else np.asarray(lp.weight_scales, np.float32)
        out[layer.name] = PrecisionAnnotation(layer.name, lp.w_bits, lp.a_bits, lp.act, scales, lp.b_act)
    return out


@relax.expr_functor.mutator
class _Annotate(relax.PyExprMutator):
    """Wrap the data operand of each MAC binding named in ``by_var`` in its annotation."""

    def __init__(self, mod: tvm.IRModule, by_var: Mapping[str, PrecisionAnnotation]):
        super().__init__(mod)
        self.by_var = by_var
        self.var2val: dict = {}
        self.done: list[str] = []

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        annotation = self.by_var.get(binding.var.name)
        if annotation is None or not is_mac(binding.value):
            super().visit_var_binding_(binding)
            return
        call = self.visit_expr(binding.value)
        if not annotation.is_fp32 and annotation.weight_scales is None and annotation.weight_act is None:
            annotation = annotation.with_weight_scales(self._scales(call, annotation.w_bits))
        data = self.builder_.emit(annotate(call.args[0], annotation), f"{binding.var.name}_precision")
        new_call = relax.Call(call.op, [data, *call.args[1:]], call.attrs, call.ty_args)
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(new_call, name_hint=binding.var.name))
        self.done.append(annotation.layer)

    def _scales(self, call: relax.Call, bits: int) -> np.ndarray | None:
        """Per-channel scales of the weight operand when it is a constant (params bound)."""
        weight = call.args[1]
        while isinstance(weight, relax.Var) and weight in self.var2val:
            weight = self.var2val[weight]
        if not isinstance(weight, Constant) or bits >= 32:
            return None
        return weight_scales(weight.value.numpy(), bits, weight_channel_axis(call))


@tvm.transform.module_pass(opt_level=0, name="AnnotatePrecision")
class AnnotatePrecision:
    """Annotate every layer of ``table`` with its precision from ``config``.

    ``config``: a :class:`PrecisionConfig` (checked against the table when the pass is made:
    MpqError before anything runs) or a mapping stable name -> :class:`PrecisionAnnotation`
    (the sensitivity analysis uses it for precisions a config cannot express, e.g. the second
    operand of an activation x activation matmul). Layers are found by the layer table's
    binding name in the function the table was built from; every Relax function is visited.
    An int8 layer whose weight scales are not given gets those of its weight when the weight is
    a bound constant. MpqError when a layer of the table is not in the module (a layer must never
    silently stay fp32). Run after ``BindParams``/``FoldConstant`` (weights constant) for
    compilation, or on the stage-A module (weights as parameters) for simulation.
    """

    def __init__(self, config: PrecisionConfig | Precisions, table: LayerTable):
        self.annotations = (config_annotations(config, table) if isinstance(config, PrecisionConfig)
                            else dict(config))
        unknown = [name for name in self.annotations if name not in table.by_name]
        if unknown:
            raise MpqError(f"precision given for {len(unknown)} layer(s) not in the model: {', '.join(unknown[:5])}")
        self.by_function: dict[str, dict[str, PrecisionAnnotation]] = {}
        for layer in table:
            if layer.name in self.annotations:
                self.by_function.setdefault(layer.function, {})[layer.var] = self.annotations[layer.name]

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = mod.clone()
        done: set[str] = set()
        for gvar, func in relax_functions(mod):
            by_var = self.by_function.get(gvar.name_hint)
            if not by_var:
                continue
            mutator = _Annotate(mod, by_var)
            mutator.var2val = relax.analysis.get_var2val(func)
            out[gvar] = mutator.visit_expr(func)
            done.update(mutator.done)
        missing = [name for name in self.annotations if name not in done]
        if missing:
            raise MpqError(f"AnnotatePrecision: no MAC op of the module is layer {', '.join(missing[:5])} "
                           "(the layer table comes from another model or stage)")
        return out
