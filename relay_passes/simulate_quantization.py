"""SimulateQuantization: quantize-dequantize (QDQ) the operands of the annotated MAC ops.

Fake quantization as the sensitivity analysis measures it: each MAC op's operands are replaced
by their quantize-dequantize, in float32, exactly as :mod:`tvm_mpq.quantization.quantizers`
computes them (the chain of :mod:`relay_passes.qdq_steps`), as the layer's precision
annotation (:mod:`relay_passes.precision_annotation`) says:

* data operand: asymmetric per tensor at ``act`` (``a_bits``; 32 leaves it fp32);
* weight operand: symmetric per output channel at ``weight_scales`` (``w_bits``), or, for an
  activation x activation matmul, asymmetric per tensor at ``weight_act``.

Any bit-width 2..16. The weights may be constants or parameters (the stage-A module), so the
weight QDQ is emitted in the graph. Every annotation is consumed; fp32 layers stay as they are.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from relay_passes.precision_annotation import PrecisionAnnotation, detach_annotations, weight_channel_axis
from relay_passes.qdq_steps import emit_chain, fake_quant_activation_steps, rank, weight_fake_quant_steps
from tvm_mpq.errors import MpqError
from tvm_mpq.quantization.quantizers import ActQParams, broadcast_scales


@relax.expr_functor.mutator
class _QDQRewriter(relax.PyExprMutator):
    """QDQ on the operands of each MAC binding in ``annotations`` (a function without annotations)."""

    def __init__(self, mod: tvm.IRModule, annotations: dict[relax.Var, PrecisionAnnotation]):
        super().__init__(mod)
        self.annotations = annotations

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        annotation = self.annotations.get(binding.var)
        if annotation is None or annotation.is_fp32:
            super().visit_var_binding_(binding)
            return
        call = self.visit_expr(binding.value)
        data, weight = call.args[0], call.args[1]
        name = f"mpq_{binding.var.name}"
        if annotation.a_bits < 32:
            data = self._activation(data, annotation.act, annotation.layer, f"{name}_a")
        if annotation.w_bits < 32:
            if annotation.weight_act is not None:
                weight = self._activation(weight, annotation.weight_act, annotation.layer, f"{name}_b")
            elif annotation.weight_scales is not None:
                weight = self._weight(weight, annotation, weight_channel_axis(call), f"{name}_w")
            else:
                raise MpqError(f"layer '{annotation.layer}' has no weight scales (\"weight_scales\") to simulate "
                               f"its {annotation.w_bits}-bit weight with")
        new_call = relax.Call(call.op, [data, weight, *call.args[2:]], call.attrs, call.ty_args)
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(new_call, name_hint=binding.var.name))

    def _activation(self, x: relax.Expr, qp: ActQParams | None, layer: str, name: str) -> relax.Expr:
        if qp is None:
            raise MpqError(f"layer '{layer}' has no activation quantizer (\"act\") to simulate")
        return emit_chain(self.builder_.emit, x, fake_quant_activation_steps(qp, rank(x)), name)

    def _weight(self, w: relax.Expr, annotation: PrecisionAnnotation, axis: int, name: str) -> relax.Expr:
        """``clip(round(w / s_c), -qmax, qmax) * s_c`` with per-channel ``s_c``."""
        ndim = len(w.ty.shape)
        scales = relax.const(broadcast_scales(annotation.weight_scales.astype(np.float32), ndim, axis))
        qmax = 2 ** (annotation.w_bits - 1) - 1
        return emit_chain(self.builder_.emit, w, weight_fake_quant_steps(scales, qmax), name)


@relax.transform.function_pass(opt_level=0, name="SimulateQuantization")
class SimulateQuantization:
    """Replace every precision annotation by the fake quantization it describes (see the module
    docstring); visits every Relax function."""

    def transform_function(self, func: relax.Function, mod: tvm.IRModule,
                           _ctx: tvm.transform.PassContext) -> relax.Function:
        if func.attrs is not None and func.attrs.get("Primitive"):
            return func
        detached, annotations = detach_annotations(func, mod)
        return _QDQRewriter(mod, annotations).visit_expr(detached) if annotations else detached
