"""LaneArgmax: float32 argmax over the last axis, its row max and index search on vector lanes.

TVM's ``argmax`` (``topi.argmax``) reduces each row with one (index, value) pair carried through
a chain of compares and selects, which no CPU schedule of TVM vectorizes: a tagger's last op,
an argmax over 3788 tag scores for each of 256 positions (sudachi-tagger), took 0.42 ms of the
int8 build's 3.8 ms (2-core Zen 4, 2026-12-05).

This pass rewrites it (CPU builds, before fusion) into a TE compute of two row reductions that
:class:`tvm_mpq.kernels.cpu_generic.RowChainCpu` vectorizes like a softmax's: the row's maximum
(:func:`relay_passes.lane_softmax.lane_row_reduce`, ``lanes`` partial maxima, then over them and
the row's tail), then the lowest position holding it (a minimum, on the same lanes, of each
position where the value equals the maximum and ``n`` elsewhere). Both are exact: the result is
the index TVM's op and ONNX's ``ArgMax`` give, the first of equal maxima. A row holding a NaN has
no position equal to its maximum; its index is clamped to the row (``n - 1``), never out of
range. Rows shorter than two vectors are left to TVM's op. Visits every Relax function.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx

from relay_passes.lane_softmax import lane_row_reduce, lane_rows
from relay_passes.precision_annotation import op_name, rewrite_calls


def lane_argmax(x: te.Tensor, keepdims: bool, lanes: int, dtype: str) -> te.Tensor:
    """The position of each row's first maximum along the last axis of ``x``, as ``dtype``."""
    n = int(x.shape[-1])
    row_max = lane_row_reduce(x, "max", "argmax_max", lanes)
    outside = tirx.const(n, "int32")
    position = te.compute(x.shape, lambda *i: tirx.Select(x(*i) == row_max(*i[:-1]), i[-1].astype("int32"), outside),
                          name="argmax_position")
    first = lane_row_reduce(position, "min", "argmax_first", lanes)
    rows = len(x.shape) - 1
    shape = (*x.shape[:-1], 1) if keepdims else x.shape[:-1]
    last = tirx.const(n - 1, "int32")
    return te.compute(shape, lambda *i: tirx.min(first(*i[:rows]), last).astype(dtype), name="argmax")


@tvm.transform.module_pass(opt_level=0, name="LaneArgmax")
class LaneArgmax:
    """Rewrite float32 last-axis argmax into :func:`lane_argmax` (see the module docstring)."""

    def __init__(self, lanes: int) -> None:
        self.lanes = lanes

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_calls(mod, self._rewrite)

    def _rewrite(self, builder: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
        if op_name(call) != "relax.argmax" or call.attrs.axis is None:
            return None
        if not lane_rows(call.args[0], int(call.attrs.axis), self.lanes):
            return None
        return builder.call_te(lane_argmax, call.args[0], bool(call.attrs.keepdims), self.lanes,
                               str(call.ty.dtype), primfunc_name_hint="lane_argmax")


__all__ = ["LaneArgmax", "lane_argmax"]
