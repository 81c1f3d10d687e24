"""RoundWeights: put chosen layers' weights on their int8 grid, rounded the way a config says.

The integer lowering, the QDQ simulation and the ONNX export all quantize a layer's weight with
round-to-nearest at the annotation's per-channel scales. Hessian-weighted rounding
(:mod:`tvm_mpq.quantization.adaptive_rounding`, computed by :mod:`tvm_mpq.ptq.weight_rounding`)
rounds some weights the other way; this pass applies that choice in the graph, once, for all of
them: each named layer's constant weight becomes ``codes * scales`` (float32), the codes rounded
to nearest except where the layer's flip mask is set. The annotation's scales are unchanged
(they are the original weight's, and ``round(codes * s / s) == codes``), so every later step
quantizes the new weight to exactly those codes.

Layers are found by their precision annotation (the layer table's stable name): run it after
:class:`~relay_passes.annotate_precision.AnnotatePrecision` and batch-norm folding, before the
lowering (the compile pipeline does, for a config that carries roundings). Every Relax function
is visited; each function it changed lists the layers as attribute :data:`ROUNDED_ATTR`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tvm
from tvm import relax

from relay_passes.precision_annotation import annotated_layers, bound_constant, relax_functions, weight_channel_axis
from tvm_mpq.quantization.adaptive_rounding import decode_flips, rounded_weight
from tvm_mpq.quantization.quantizers import weight_scales

ROUNDED_ATTR = "mpq_weight_rounding"
"""Function attribute: the layers whose weights :class:`RoundWeights` replaced."""


def rounded_layers(mod: tvm.IRModule) -> list[str]:
    """Every layer :class:`RoundWeights` rounded, in any function of ``mod``."""
    return sorted(str(name) for _, func in relax_functions(mod)
                  if func.attrs is not None and ROUNDED_ATTR in func.attrs for name in func.attrs[ROUNDED_ATTR])



@relax.expr_functor.mutator
class _WeightRewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, weights: dict[relax.Var, np.ndarray]):
        super().__init__(mod)
        self.weights = weights  # MAC var -> its new weight

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        weight = self.weights.get(binding.var)
        if weight is None:
            super().visit_var_binding_(binding)
            return
        call = binding.value
        args = [self.visit_expr(call.args[0]), relax.const(weight), *[self.visit_expr(a) for a in call.args[2:]]]
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(relax.Call(call.op, args, call.attrs, call.ty_args), binding.var.name))


@tvm.transform.module_pass(opt_level=0, name="RoundWeights")
class RoundWeights:
    """Replace each named layer's weight by its codes times its scales, the codes rounded to
    nearest except where ``roundings[layer]`` (a flip mask: bool array of the weight's shape, or
    the text :func:`~tvm_mpq.quantization.adaptive_rounding.encode_flips` wrote) is set.

    A name no function annotates as a quantized layer raises ``KeyError``; a mask that does not
    fit the weight, or a layer whose weight is not a constant, ``ValueError``.
    """

    def __init__(self, roundings: Mapping[str, np.ndarray | str]):
        self.roundings = dict(roundings)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = mod.clone()
        seen: set[str] = set()
        for gvar, func in relax_functions(mod):
            var2val = relax.analysis.get_var2val(func)
            weights: dict[relax.Var, np.ndarray] = {}
            names: list[str] = []
            for binding, annotation in annotated_layers(func):
                if annotation.layer not in self.roundings or annotation.is_fp32:
                    continue
                weights[binding.var] = self._rounded(binding.value, annotation, var2val)
                names.append(annotation.layer)
            if weights:
                seen.update(names)
                out[gvar] = _WeightRewriter(mod, weights).visit_expr(func).with_attr(ROUNDED_ATTR, names)
        unknown = sorted(set(self.roundings) - seen)
        if unknown:
            raise KeyError(f"RoundWeights: no quantized layer annotated {unknown[:5]}")
        return out

    def _rounded(self, call: relax.Call, annotation, var2val: Mapping) -> np.ndarray:
        weight = bound_constant(call.args[1], var2val)
        if weight is None:
            raise ValueError(f"RoundWeights: layer {annotation.layer}'s weight is not a constant")
        axis = weight_channel_axis(call)
        scales = annotation.weight_scales
        if scales is None:
            scales = weight_scales(weight, annotation.w_bits, axis)
        mask = self.roundings[annotation.layer]
        try:
            flips = decode_flips(mask, weight.shape) if isinstance(mask, str) else np.asarray(mask, bool)
        except ValueError as err:
            raise ValueError(f"RoundWeights: layer {annotation.layer}: {err}") from None
        if flips.shape != weight.shape:
            raise ValueError(f"RoundWeights: layer {annotation.layer}: a mask of shape {flips.shape} for a weight "
                             f"of shape {weight.shape}")
        return rounded_weight(weight, scales, annotation.w_bits, axis, flips)
