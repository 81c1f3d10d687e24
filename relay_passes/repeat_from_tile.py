"""RepeatFromTile: ``reshape(tile(expand_dims(x, a)))`` that repeats each element becomes ``repeat``.

tf2onnx writes TensorFlow's nearest-neighbour ``UpSampling2D`` / ``repeat`` along one axis as
``Unsqueeze(a)``, ``Tile`` (``k`` copies along the new axis) and a ``Reshape`` that merges the new
axis into the one before it: element ``i`` of axis ``a - 1`` lands at ``i * k ... i * k + k - 1``,
i.e. ``R.repeat(x, k, axis=a - 1)``. As three ops on a rank-5 tensor the channels-last pass
cannot follow it (each upsampling cost two transposes in the LEADER fingerprint network) and the
precision pass leaves a border at the tile; ``repeat`` is one op whose axis maps to any layout and
which runs on int8 codes (a copy). A transpose between the tile and the reshape (tf2onnx moving
the result back to NHWC) is kept as a transpose of the repeated tensor. Only that exact shape of
the ops is rewritten (a reshape that merges the new axis with the one after it is a tile of
``x``, and stays).
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from relay_passes.convert_layout import tensor_shape
from relay_passes.precision_annotation import rewrite_every_function


def _repeat(reshape: relax.Call, permute: relax.Call | None, tile: relax.Call,
            expand: relax.Call) -> relax.Expr | None:
    data = expand.args[0]
    shape, out = tensor_shape(data), tensor_shape(reshape)
    axes = [int(a) for a in expand.attrs.axis]
    repeats = [int(r) for r in tile.attrs.repeats]
    if shape is None or out is None or len(axes) != 1 or len(repeats) != len(shape) + 1:
        return None
    at = axes[0] % (len(shape) + 1)
    k = repeats[at]
    if at == 0 or any(r != 1 for i, r in enumerate(repeats) if i != at):
        return None
    repeated = (*shape[:at - 1], shape[at - 1] * k, *shape[at:])
    order = list(range(len(shape) + 1)) if permute is None else [int(a) for a in permute.attrs.axes]
    j = order.index(at)
    if j == 0 or order[j - 1] != at - 1:  # the new axis must land right after the one it repeats
        return None
    rest = [q if q < at else q - 1 for q in order if q != at]
    if tuple(out) != tuple(repeated[q] for q in rest):
        return None
    result = relax.op.repeat(data, k, at - 1)
    return result if rest == sorted(rest) else relax.op.permute_dims(result, rest)


@tvm.transform.module_pass(opt_level=0, name="RepeatFromTile")
class RepeatFromTile:
    """Rewrite ``reshape([permute_dims](tile(expand_dims(x, a), k on a)))`` that merges the new
    axis into axis ``a - 1`` into ``[permute_dims](repeat(x, k, a - 1))`` in every Relax function."""

    def __init__(self) -> None:
        self._expand = is_op("relax.expand_dims")(wildcard())
        self._tile = is_op("relax.tile")(self._expand)
        self._permute = is_op("relax.permute_dims")(self._tile)
        self._reshape = is_op("relax.reshape")(self._tile | self._permute, wildcard())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
            new = _repeat(matches[self._reshape], matches.get(self._permute), matches[self._tile],
                          matches[self._expand])
            return expr if new is None else new

        return rewrite_every_function(mod, (self._reshape, rewriter))
