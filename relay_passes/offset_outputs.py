"""OffsetLayerOutputs: add a run-time vector to chosen layers' outputs, and return their MAC results.

Measured bias correction (:mod:`tvm_mpq.ptq.measured_bias`) needs, for one precision config,
the mean output error of each depthwise layer *given the corrections already chosen upstream*:
a sequence of runs in which the corrections change between runs. Compiling once per layer would
cost a compile per depthwise conv; this pass makes one module serve them all. After each named
layer's MAC op (found by its precision annotation, the layer table's stable name) every later use
reads ``mac + offset``, ``offset`` a new parameter of the function with one value per output
channel (shape broadcastable to the MAC result along its channel axis), and the MAC results
themselves (before the offset) are appended to the function's outputs, in the order of
``layers``. Run it on the annotated module, before
:class:`~relay_passes.lower_to_integer.LowerToInteger`: the lowering then emits the MAC's
integer (or simulated) form, and the offset is one float ``add`` in the layer's epilogue.

An entry function's signature changes, so one function is named (default ``main``). The function
records the layers in parameter order as attribute :data:`OFFSET_ATTR`.
"""

from __future__ import annotations

from collections.abc import Sequence

import tvm
from tvm import relax

from relay_passes.correct_bias import output_channel_axis
from relay_passes.expose_intermediates import ExposeIntermediates
from relay_passes.precision_annotation import annotated_layers
from relay_passes.unique_names import UniqueBindingNames

OFFSET_ATTR = "mpq_offset_layers"
"""Function attribute: the layers given an offset parameter, in parameter (and output) order."""


def mac_output_name(index: int) -> str:
    """The binding name of the ``index``-th offset layer's MAC result (an output of the function)."""
    return f"mpq_offset_mac{index}"


@relax.expr_functor.mutator
class _Offset(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, named: dict[relax.Var, int], params: list[relax.Var]):
        super().__init__(mod)
        self.named = named
        self.params = params

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        index = self.named.get(binding.var)
        if index is None:
            super().visit_var_binding_(binding)
            return
        mac = self.builder_.emit(self.visit_expr(binding.value), mac_output_name(index))
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(relax.op.add(mac, self.params[index]), binding.var.name))


@tvm.transform.module_pass(opt_level=0, name="OffsetLayerOutputs")
class OffsetLayerOutputs:
    """Give each layer of ``layers`` an output offset parameter and return its MAC result.

    The new parameters follow the function's own, one per layer in the order of ``layers``; the
    function returns ``(original_output, (mac_0, ..., mac_k-1))`` (flattened: the MAC results
    are the last ``len(layers)`` outputs). ``KeyError`` when a layer is not annotated in the
    function.
    """

    def __init__(self, layers: Sequence[str], function: str = "main"):
        self.layers = list(layers)
        self.function = function

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        func = mod[self.function]
        position = {name: i for i, name in enumerate(self.layers)}
        named: dict[relax.Var, int] = {}
        params: list[relax.Var | None] = [None] * len(self.layers)
        for binding, annotation in annotated_layers(func):
            index = position.get(annotation.layer)
            if index is None:
                continue
            call = binding.value
            axis = output_channel_axis(call)
            shape = [1] * len(call.ty.shape)
            shape[axis] = call.ty.shape[axis]
            named[binding.var] = index
            params[index] = relax.Var(f"mpq_offset{index}", relax.TensorType(shape, str(call.ty.dtype)))
        missing = [name for name, p in zip(self.layers, params) if p is None]
        if missing:
            raise KeyError(f"OffsetLayerOutputs: no layer annotated {missing[:5]} in {self.function}")
        body = _Offset(mod, named, params).visit_expr(func.body)
        new = relax.Function(list(func.params) + params, body, func.ret_ty, func.is_pure, func.attrs)
        if func.attrs is not None and "num_input" in func.attrs:
            new = new.with_attr("num_input", int(func.attrs["num_input"]) + len(params))
        out = mod.clone()
        out[self.function] = new.with_attr(OFFSET_ATTR, list(self.layers))
        out = UniqueBindingNames()(out)  # exposing finds tensors by name
        return ExposeIntermediates([mac_output_name(i) for i in range(len(self.layers))], self.function)(out)
