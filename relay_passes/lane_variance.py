"""LaneVariance: float32 variance over the last axis, its row sums written over vector lanes.

TVM's ``variance`` (its legalization: the mean, then the mean of the squared deviations) reduces
each row with one scalar accumulator, a chain of dependent adds, and TVM's CPU ``Reduction`` rule
keeps it so: pyannote's instance norms (each of 80 channels over 5325 positions, channels
outermost) took 0.81 ms for ``sqrt(variance(x) + eps)``, where the same values channels-last,
reduced across rows on vector lanes, take 0.052 ms (2-core Zen 4, 2026-12-05).

This pass rewrites it (CPU builds, before fusion) into a TE compute whose two row sums go first
into :data:`LANES` partial sums (:func:`relay_passes.lane_softmax.lane_row_reduce`, vectorized by
:class:`tvm_mpq.kernels.cpu_generic.RowChainCpu`), then over them and the row's tail. The lane
count is fixed, not the target's vector width, so the sums add in the same order on every CPU
(16 lanes: one AVX-512 vector, two AVX2, four NEON): an int8 layer reading a normalized value
gets the same codes on each (as the long reductions of
:mod:`tvm_mpq.kernels.cpu_generic`). The result is the variance to float32 rounding. Rows shorter
than two lane groups are left to TVM's op. Visits every Relax function.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx

from relay_passes.lane_softmax import lane_row_reduce, lane_rows
from relay_passes.precision_annotation import op_name, rewrite_calls

LANES = 16
"""Partial sums per row (fixed on every target: see the module docstring)."""


def lane_variance(x: te.Tensor, keepdims: bool) -> te.Tensor:
    """The population variance of ``x`` over its last axis, each row's sums over :data:`LANES` partials."""
    n = int(x.shape[-1])
    total = lane_row_reduce(x, "sum", "variance_sum", LANES)
    mean = te.compute(total.shape, lambda *i: total(*i) / tirx.const(n, "float32"), name="variance_mean")
    square = te.compute(x.shape, lambda *i: (x(*i) - mean(*i[:-1])) * (x(*i) - mean(*i[:-1])), name="variance_square")
    deviations = lane_row_reduce(square, "sum", "variance_deviation", LANES)
    rows = len(x.shape) - 1
    shape = (*x.shape[:-1], 1) if keepdims else x.shape[:-1]
    return te.compute(shape, lambda *i: deviations(*i[:rows]) / tirx.const(n, "float32"), name="variance")


def _lane_form(builder: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
    axes = call.attrs.axis if op_name(call) == "relax.variance" else None
    if axes is None or len(axes) != 1 or not lane_rows(call.args[0], int(axes[0]), LANES):
        return None
    return builder.call_te(lane_variance, call.args[0], bool(call.attrs.keepdims), primfunc_name_hint="lane_variance")


@tvm.transform.module_pass(opt_level=0, name="LaneVariance")
class LaneVariance:
    """Rewrite float32 last-axis variance into :func:`lane_variance` (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_calls(mod, _lane_form)


__all__ = ["LANES", "LaneVariance", "lane_variance"]
