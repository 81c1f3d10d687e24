"""LaneVariance: float32 variance and layer norm over the last axis, their row sums written over vector lanes.

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
:mod:`tvm_mpq.kernels.cpu_generic`). The result is the variance to float32 rounding.

A transformer's ``nn.layer_norm`` over the last axis gets the same two lane sums, ``1 / sqrt(var +
eps)`` once per row, then ``(x - mean) * that * gamma + beta`` on whole vectors. TVM's
legalization of it (a mean and a variance reduction per row; ``RowChainCpu`` put the rows on
the vector lanes, and TVM's other reduction rules were no faster) took 50 us for 128 rows of 384
where onnxruntime takes 22, 6.5 us so (2-core Xeon, AVX-512, ``benchmarks/lane_layer_norm.py
--ops``). Rows shorter than two lane groups are left to TVM's op. Visits every Relax function.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx

from relay_passes.convert_layout import tensor_shape
from relay_passes.lane_softmax import lane_row_reduce, lane_rows
from relay_passes.precision_annotation import op_name, rewrite_calls

LANES = 16
"""Partial sums per row (fixed on every target: see the module docstring)."""


def _row_moments(x: te.Tensor, name: str) -> tuple[te.Tensor, te.Tensor]:
    """The mean of each row of ``x`` (its last axis) and the sum of its squared deviations from it,
    both sums over :data:`LANES` partials (``name``: the prefix of the computes)."""
    n = int(x.shape[-1])
    total = lane_row_reduce(x, "sum", f"{name}_sum", LANES)
    mean = te.compute(total.shape, lambda *i: total(*i) / tirx.const(n, "float32"), name=f"{name}_mean")
    square = te.compute(x.shape, lambda *i: (x(*i) - mean(*i[:-1])) * (x(*i) - mean(*i[:-1])), name=f"{name}_square")
    return mean, lane_row_reduce(square, "sum", f"{name}_deviation", LANES)


def lane_variance(x: te.Tensor, keepdims: bool) -> te.Tensor:
    """The population variance of ``x`` over its last axis, each row's sums over :data:`LANES` partials."""
    n = int(x.shape[-1])
    _mean, deviations = _row_moments(x, "variance")
    rows = len(x.shape) - 1
    shape = (*x.shape[:-1], 1) if keepdims else x.shape[:-1]
    return te.compute(shape, lambda *i: deviations(*i[:rows]) / tirx.const(n, "float32"), name="variance")


def lane_layer_norm(x: te.Tensor, gamma: te.Tensor, beta: te.Tensor, epsilon: float, center: bool,
                    scale: bool) -> te.Tensor:
    """``relax.nn.layer_norm`` over the last axis of ``x``, ``(x - mean) / sqrt(var + eps) * gamma +
    beta`` (``center`` / ``scale``: whether ``beta`` / ``gamma`` apply), the row's mean and variance
    from :func:`lane_variance`'s lane sums and ``1 / sqrt`` taken once per row."""
    n = int(x.shape[-1])
    mean, deviations = _row_moments(x, "layer_norm")
    inverse = te.compute(deviations.shape, lambda *i: tirx.const(1.0, "float32") / tirx.sqrt(
        deviations(*i) / tirx.const(n, "float32") + tirx.const(epsilon, "float32")), name="layer_norm_inverse")

    def normalized(*i: tirx.PrimExpr) -> tirx.PrimExpr:
        value = (x(*i) - mean(*i[:-1])) * inverse(*i[:-1])
        value = value * gamma(i[-1]) if scale else value
        return value + beta(i[-1]) if center else value

    return te.compute(x.shape, normalized, name="layer_norm_out")


def _lane_form(builder: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
    name = op_name(call)
    if name == "relax.nn.layer_norm":
        return _lane_layer_norm(builder, call)
    axes = call.attrs.axis if name == "relax.variance" else None
    if axes is None or len(axes) != 1 or not lane_rows(call.args[0], int(axes[0]), LANES):
        return None
    return builder.call_te(lane_variance, call.args[0], bool(call.attrs.keepdims), primfunc_name_hint="lane_variance")


def _lane_layer_norm(builder: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
    """A float32 layer norm over the last axis alone, with a 1-D gamma and beta of the row's length."""
    data, gamma, beta = call.args
    axes = [int(a) for a in call.attrs.axes]
    shape = tensor_shape(data)
    if len(axes) != 1 or not lane_rows(data, axes[0], LANES) or \
            any(tensor_shape(p) != (shape[-1],) or str(p.ty.dtype) != "float32" for p in (gamma, beta)):
        return None
    return builder.call_te(lane_layer_norm, data, gamma, beta, float(call.attrs.epsilon), bool(call.attrs.center),
                           bool(call.attrs.scale), primfunc_name_hint="lane_layer_norm")


@tvm.transform.module_pass(opt_level=0, name="LaneVariance")
class LaneVariance:
    """Rewrite float32 last-axis variance and layer norm into :func:`lane_variance` /
    :func:`lane_layer_norm` (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_calls(mod, _lane_form)


__all__ = ["LANES", "LaneVariance", "lane_layer_norm", "lane_variance"]
