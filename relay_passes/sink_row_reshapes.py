"""SinkRowReshapes: the ops after a row conv run on its 4-D output, so they fuse into its kernel.

A ``conv1d`` runs as a conv2d along a row (:class:`~relay_passes.conv_on_rows.ConvOnRows`): its
``[N, C, L]`` data is reshaped to ``[N, C, 1, L]`` and its output back to ``[N, O, L']``; after
:class:`~relay_passes.convert_layout.ConvertToChannelsLast` these are reshapes between ``[N, L,
C]`` and ``[N, 1, L, C]`` (no data moves). The bias, activation and residual adds that follow
then read the 3-D tensor, and TVM's ``FuseOps`` fuses a conv only with the elementwise and
broadcast ops after it, not through a reshape: every conv's epilogue was a kernel of its own that
wrote the conv's output and read it back (an EEG sleep-spindle U-Net, 13 dilated conv1d over
7500 samples: about 8 of its 48 ms fp32, ``benchmarks/kernel_profile.py eeg-spindle-unet``,
2026-12-03).

This pass moves such a reshape down past elementwise ops, strided slices and concats: each of
them runs on the 4-D row form ``[N, 1, L, C]`` (a 3-D operand gets the unit axis, a lower-rank
one broadcasts against the last axes as before), the 3-D tensor is reshaped from it only where
another op reads it, and a reshape of a row form back to the 4-D shape (the next conv's input)
is that row form itself. The same ops run on the same elements, so values do not change. It
runs in the CPU build after ``ConvertToChannelsLast`` (:func:`tvm_mpq.target_build.passes.
graph_passes`), on every Relax function.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.ir.expr import Constant

from relay_passes.convert_layout import ELEMENTWISE, tensor_shape
from relay_passes.precision_annotation import mutate_every_function


def _row_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``[N, L, C]`` -> ``[N, 1, L, C]``."""
    return (shape[0], 1, *shape[1:])


def _row_axis(axis: int) -> int:
    """Where an axis of ``[N, L, C]`` sits in ``[N, 1, L, C]``."""
    axis %= 3
    return axis + (axis >= 1)


@relax.expr_functor.mutator
class _SinkRowReshapes(relax.PyExprMutator):
    """Re-emits each binding; 3-D tensors with a 4-D row form are computed in it."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.rows: dict[relax.Var, relax.Expr] = {}  # a 3-D var -> its [N, 1, L, C] form

    def _row(self, expr: relax.Expr) -> relax.Expr:
        """``expr`` (a 3-D tensor) in its row form: recorded, a constant reshaped here, or a reshape."""
        if isinstance(expr, relax.Var) and expr in self.rows:
            return self.rows[expr]
        if isinstance(expr, Constant):
            value = expr.value.numpy()
            return relax.const(value.reshape(_row_shape(value.shape)), str(value.dtype))
        return self.builder_.emit(relax.op.reshape(expr, _row_shape(tensor_shape(expr))), "mpq_row")

    def _in_rows(self, call: relax.Call, shape: tuple[int, ...] | None) -> relax.Expr | None:
        """``call`` (arguments visited, result ``shape``) computed on row forms, or None."""
        op = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
        args = list(call.args)
        if shape is None or len(shape) != 3:
            return None
        if op in ELEMENTWISE and any(isinstance(a, relax.Var) and a in self.rows for a in args):
            shapes = [tensor_shape(a) for a in args]
            if any(s is not None and len(s) > 3 for s in shapes):
                return None
            new_args = [self._row(a) if s is not None and len(s) == 3 else a for a, s in zip(args, shapes)]
            return relax.Call(call.op, new_args, call.attrs, call.ty_args)
        if op == "relax.strided_slice" and isinstance(args[0], relax.Var) and args[0] in self.rows \
                and all(isinstance(a, relax.Tuple) for a in args[1:4]):
            axes, begin, end = ([int(v) for v in a.fields] for a in args[1:4])
            strides = [int(v) for v in args[4].fields] if len(args) > 4 and isinstance(args[4], relax.Tuple) else None
            return relax.op.strided_slice(self.rows[args[0]], [_row_axis(a) for a in axes], begin, end, strides,
                                          bool(call.attrs.assume_inbound))
        if op == "relax.concat" and isinstance(args[0], relax.Tuple):
            fields = list(args[0].fields)
            if any(isinstance(f, relax.Var) and f in self.rows for f in fields) \
                    and all(tensor_shape(f) is not None and len(tensor_shape(f)) == 3 for f in fields):
                return relax.op.concat(relax.Tuple([self._row(f) for f in fields]), _row_axis(int(call.attrs.axis)))
        return None

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        if not isinstance(binding.var, relax.DataflowVar) or not isinstance(value, relax.Call) \
                or not isinstance(value.op, tvm.ir.Op):
            super().visit_var_binding_(binding)
            return
        call = relax.Call(value.op, [self.visit_expr(a) for a in value.args], value.attrs, value.ty_args)
        shape = tensor_shape(binding.var)
        name = binding.var.name
        if call.op.name == "relax.reshape" and shape is not None:
            source, source_shape = call.args[0], tensor_shape(call.args[0])
            if isinstance(source, relax.Var) and source in self.rows and shape == tensor_shape(self.rows[source]):
                self.set_var_remap(binding.var, self.rows[source])  # back to the row form: nothing to do
                return
            new_var = self.builder_.emit(call, name)
            if len(shape) == 3 and source_shape == _row_shape(shape):
                self.rows[new_var] = source
            self.set_var_remap(binding.var, new_var)
            return
        row = self._in_rows(call, shape)
        if row is None:
            self.set_var_remap(binding.var, self.builder_.emit(call, name))
            return
        row_var = self.builder_.emit(row, name + "_row")
        new_var = self.builder_.emit(relax.op.reshape(row_var, shape), name)  # dropped if nothing reads it
        self.rows[new_var] = row_var
        self.set_var_remap(binding.var, new_var)


@tvm.transform.module_pass(opt_level=0, name="SinkRowReshapes")
class SinkRowReshapes:
    """Move every ``[N, 1, L, C] -> [N, L, C]`` reshape of every Relax function past the
    elementwise ops, strided slices and concats that read it (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return mutate_every_function(mod, lambda m, _f: _SinkRowReshapes(m), lambda m: len(m.rows))[0]
