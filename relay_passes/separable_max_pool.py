"""SeparableMaxPool: a stride-1 ``k x k`` max pool as a ``k x 1`` pool then a ``1 x k`` one.

The maximum over a window is the maximum over its columns of the maximum down each column, and a
max pool pads with ``-inf`` on both passes, so the split is exact (bit for bit) at stride 1 and
dilation 1: ``kh + kw`` comparisons per output instead of ``kh * kw``. Keypoint networks end in
such a pool (non-maximum suppression on a score map: the LEADER fingerprint network's 7 x 7 over
its 256 x 256 minutia map, 1.9 ms of its 38 ms int8 build as one pool). Strided and dilated
pools, and pools with a 1-wide window, stay. Layout-agnostic (the pool's own layout is kept);
visits every Relax function.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from relay_passes.precision_annotation import rewrite_every_function


def _separable(pool: relax.Call) -> relax.Expr | None:
    a = pool.attrs
    (kh, kw), strides, dilation = ([int(v) for v in a.pool_size], [int(v) for v in a.strides],
                                   [int(v) for v in a.dilation])
    if strides != [1, 1] or dilation != [1, 1] or kh < 2 or kw < 2:
        return None
    top, left, bottom, right = (int(v) for v in a.padding)
    layout, out_layout = str(a.layout), str(a.out_layout)
    down = relax.op.nn.max_pool2d(pool.args[0], (kh, 1), (1, 1), (top, 0, bottom, 0), (1, 1),
                                  bool(a.ceil_mode), False, layout, layout)
    return relax.op.nn.max_pool2d(down, (1, kw), (1, 1), (0, left, 0, right), (1, 1),
                                  bool(a.ceil_mode), False, layout, out_layout)


@tvm.transform.module_pass(opt_level=0, name="SeparableMaxPool")
class SeparableMaxPool:
    """Rewrite stride-1 ``max_pool2d`` with a window of at least 2 x 2 into a column pool and a
    row pool in every Relax function."""

    def __init__(self) -> None:
        self._pool = is_op("relax.nn.max_pool2d")(wildcard())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
            new = _separable(matches[self._pool])
            return expr if new is None else new

        return rewrite_every_function(mod, (self._pool, rewriter))
