"""TakeInBounds: a gather whose indices the model does not bound reads within its table.

TVM's ONNX importer writes ``Gather`` (embedding lookups, token ids) as ``relax.take`` in its
default mode ``"fast"``: no bounds check, so an index past the table reads (or, far enough,
faults on) memory outside it, and TOPI says so at every build of one (``Warning: Fast mode
segfaults when there are out-of-bounds indices``, once per gather, on stderr: ten lines for
slovorez's tagger, one per compile of the analysis too). The importer has already mapped ONNX's
negative indices into range, so for every index the model defines the result is the same in
mode ``"clip"``, which clamps each index into ``[0, n - 1]`` (a min and a max per index, on the
indices, not on the rows copied): a library built with it cannot read outside the table, whatever
ids the deployment feeds it (``--calib`` data outside the table is refused before any build, as
before). Visits every Relax function.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from relay_passes.precision_annotation import rewrite_every_function


@tvm.transform.module_pass(opt_level=0, name="TakeInBounds")
class TakeInBounds:
    """Rewrite every ``take(x, indices, axis, mode="fast")`` of every Relax function into mode
    ``"clip"``."""

    def __init__(self) -> None:
        self._take = is_op("relax.take")(wildcard(), wildcard())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        def rewriter(expr: relax.Expr, _matches: dict) -> relax.Expr:
            if str(expr.attrs.mode) != "fast":
                return expr
            axis = expr.attrs.axis
            return relax.op.take(expr.args[0], expr.args[1], None if axis is None else int(axis), mode="clip")

        return rewrite_every_function(mod, (self._take, rewriter))


__all__ = ["TakeInBounds"]
