"""DropEmptyConcatInputs: a concat leaves out its inputs with no elements.

An exporter may pad a tensor by concatenating a constant of zero length (the EEG spindle U-Net's
segmentation head: ``Concat(x, ConstantOfShape([1, 0, 1]))``). The concat's value is the same
without it, and the empty constant cannot stay in a build: TVM 0.27 writes it into the library's
constant pool but cannot read a zero-byte tensor back (``Invalid DLTensor file format`` when the
exported ``.so`` is loaded), so every such model's library was unloadable. This pass drops every
zero-size input of every ``concat`` of every Relax function (a concat left with one input is that
input). It runs first in every target's graph passes (:func:`tvm_mpq.target_build.passes.graph_passes`).
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from relay_passes.convert_layout import tensor_shape
from relay_passes.precision_annotation import rewrite_every_function


def _empty(expr: relax.Expr) -> bool:
    shape = tensor_shape(expr)
    return shape is not None and 0 in shape


@tvm.transform.module_pass(opt_level=0, name="DropEmptyConcatInputs")
class DropEmptyConcatInputs:
    """Rewrite every ``concat`` with zero-size inputs of every Relax function without them."""

    def __init__(self) -> None:
        self._concat = is_op("relax.concat")(wildcard())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_every_function(mod, (self._concat, self._rewrite))

    @staticmethod
    def _rewrite(expr: relax.Expr, _matches: dict) -> relax.Expr:
        fields = expr.args[0]
        if not isinstance(fields, relax.Tuple) or not any(map(_empty, fields.fields)) or _empty(expr):
            return expr
        kept = [f for f in fields.fields if not _empty(f)]
        if len(kept) == 1:
            return kept[0]
        return relax.op.concat(relax.Tuple(kept), int(expr.attrs.axis))
