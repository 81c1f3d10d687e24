"""LaneSoftmax: float32 softmax and log-softmax over the last axis, row reductions over vector lanes.

TVM's softmax (``topi.nn.softmax``) reduces each row with one scalar accumulator (its max, then
its sum), calls ``expf`` once per element and, where the row length is not a multiple of the
vector width, leaves every vectorized loop with a per-lane bounds predicate, which LLVM
scalarizes. An OCR recogniser's last op is a softmax over its whole character set
(PP-OCRv6-small: 40 positions x 18710 classes): it took 1.0 of the int8 build's 2.9 ms,
onnxruntime's 0.08 ms.

This pass rewrites it (on CPU builds, before fusion) into a TE compute whose reductions a
schedule can vectorize without predicates: each row of ``n`` values is read as ``n // lanes``
vectors plus a tail of ``n % lanes`` values; the max and the sum are first reduced over the
vectors into ``lanes`` partial results (a reduction with a spatial lane axis, vectorized by
:class:`tvm_mpq.kernels.cpu_generic.RowChainCpu`), then over the lanes (a balanced tree, not a
chain of ``lanes - 1`` dependent steps) and the tail; the row is scaled by ``1 / sum``, computed
once per row (a vector divide per element before: sudachi-tagger's attention softmax 0.236 ->
0.165 ms with the row groups of ``RowChainCpu``, Xeon, ``python benchmarks/row_softmax.py``). The
exponential is ``topi.fast_exp`` (as :class:`relay_passes.fast_exp.VectorExp`). The result is
the softmax to float32 rounding (the sums are associated differently). A log-softmax (a CTC
head's, PyTorch's ``LogSoftmax``) gets the same reductions and one ``fast_log`` per row
(:func:`tvm_mpq.kernels.fast_math.fast_log`). Rows shorter than two vectors are left to TVM's op
(:class:`relay_passes.fast_exp.VectorExp` still takes their exponentials). Visits every Relax
function.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx, topi

from relay_passes.convert_layout import tensor_shape
from relay_passes.precision_annotation import op_name, rewrite_calls
from tvm_mpq.kernels.fast_math import fast_log


_REDUCERS = {"max": (te.max, tirx.max), "min": (te.min, tirx.min), "sum": (te.sum, lambda a, b: a + b)}
"""Each row reduction :func:`lane_row_reduce` takes: the TE reducer and how two of its results combine."""


def lane_row_reduce(values: te.Tensor, combine: str, name: str, lanes: int) -> te.Tensor:
    """The max, min or sum (``combine``) of each row of ``values`` (its last axis): first over
    ``n // lanes`` vectors into ``lanes`` partial results, then over those and the row's tail."""
    *lead, n = (int(d) for d in values.shape)
    blocks, m = n // lanes, (n // lanes) * lanes
    lead_shape = tuple(lead)
    j = te.reduce_axis((0, blocks), name=f"{name}_j")
    reducer, pair = _REDUCERS[combine]
    partial = te.compute((*lead_shape, lanes), lambda *i: reducer(values[(*i[:-1], j * lanes + i[-1])], axis=j),
                         name=f"{name}_lanes")
    total = te.compute(lead_shape, lambda *i: _pairwise(pair, [partial[(*i, l)] for l in range(lanes)]),
                       name=f"{name}_row")
    if m == n:
        return total
    t = te.reduce_axis((0, n - m), name=f"{name}_t")
    tail = te.compute(lead_shape, lambda *i: reducer(values[(*i, m + t)], axis=t), name=f"{name}_tail")
    return te.compute(lead_shape, lambda *i: pair(total(*i), tail(*i)), name=f"{name}_all")


def _pairwise(pair, values: list) -> tirx.PrimExpr:
    """``values`` combined as a balanced tree (depth log2 n, not a chain of n - 1 dependent steps)."""
    while len(values) > 1:
        values = [pair(values[k], values[k + 1]) if k + 1 < len(values) else values[k] for k in range(0, len(values), 2)]
    return values[0]


def lane_rows(data: relax.Expr, axis: int, lanes: int) -> bool:
    """Whether ``data`` is a float32 tensor of static shape, ``axis`` its last, and its rows at
    least two ``lanes`` groups long: the rows :func:`lane_row_reduce` takes (shorter ones stay
    with TVM's op)."""
    shape = tensor_shape(data)  # (None unless a tensor of static shape)
    return (bool(shape) and str(data.ty.dtype) == "float32"
            and axis % len(shape) == len(shape) - 1 and shape[-1] >= 2 * lanes)


def _shifted_exponentials(x: te.Tensor, lanes: int, name: str) -> tuple[te.Tensor, te.Tensor, te.Tensor]:
    """``x - max`` of each row of ``x`` (its last axis), its ``exp`` and the row sums of that, both
    row reductions over ``lanes`` partial accumulators (``name``: the prefix of the computes)."""
    row_max = lane_row_reduce(x, "max", f"{name}_max", lanes)
    delta = te.compute(x.shape, lambda *i: x(*i) - row_max(*i[:-1]), name=f"{name}_delta")
    exp = topi.fast_exp(delta)
    return delta, exp, lane_row_reduce(exp, "sum", f"{name}_sum", lanes)


def lane_softmax(x: te.Tensor, lanes: int) -> te.Tensor:
    """Softmax of ``x`` over its last axis, row reductions over ``lanes`` partial accumulators."""
    _delta, exp, row_sum = _shifted_exponentials(x, lanes, "softmax")
    inverse = te.compute(row_sum.shape, lambda *i: tirx.const(1.0, "float32") / row_sum(*i), name="softmax_inverse")
    return te.compute(x.shape, lambda *i: exp(*i) * inverse(*i[:-1]), name="softmax_norm")


def lane_log_softmax(x: te.Tensor, lanes: int) -> te.Tensor:
    """Log-softmax of ``x`` over its last axis, ``x - max - log(sum(exp(x - max)))``: the row
    reductions of :func:`lane_softmax`, one logarithm per row."""
    delta, _exp, row_sum = _shifted_exponentials(x, lanes, "log_softmax")
    log_sum = te.compute(row_sum.shape, lambda *i: fast_log(row_sum(*i)), name="log_softmax_log")
    return te.compute(x.shape, lambda *i: delta(*i) - log_sum(*i[:-1]), name="log_softmax_out")


_LANE_FORMS = {"relax.nn.softmax": (lane_softmax, "lane_softmax"),
               "relax.nn.log_softmax": (lane_log_softmax, "lane_log_softmax")}


@tvm.transform.module_pass(opt_level=0, name="LaneSoftmax")
class LaneSoftmax:
    """Rewrite float32 last-axis softmax and log-softmax into :func:`lane_softmax` /
    :func:`lane_log_softmax` (see the module docstring)."""

    def __init__(self, lanes: int) -> None:
        self.lanes = lanes

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_calls(mod, self._rewrite)

    def _rewrite(self, builder: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
        form = _LANE_FORMS.get(op_name(call))
        if form is None or not lane_rows(call.args[0], int(call.attrs.axis), self.lanes):
            return None
        compute, name = form
        return builder.call_te(compute, call.args[0], self.lanes, primfunc_name_hint=name)
