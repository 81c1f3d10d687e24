"""FoldPadIntoConv: a zero ``nn.pad`` before a conv becomes the conv's own padding.

Exports from frameworks with "same" padding (TensorFlow, EfficientNet's ``ZeroPad2d``) and the
precision pass (an int8 layer's input padded with the zero point's code, 0 after a ReLU) put an
explicit ``pad`` in front of convs. As a separate op it is one more pass over the activation; as
the conv's ``padding`` the kernel reads the border in place. Only constant pads of value 0 on the
two spatial axes of an NCHW or NHWC conv fold (a conv pads with zeros); other pads stay.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from relay_passes.precision_annotation import rewrite_every_function

SPATIAL = {"NCHW": (2, 3), "NHWC": (1, 2)}


def _fold(conv: relax.Call, pad: relax.Call) -> relax.Expr | None:
    a, p = conv.attrs, pad.attrs
    axes = SPATIAL.get(str(a.data_layout))
    if axes is None or str(p.pad_mode) != "constant" or float(p.pad_value) != 0.0:
        return None
    width = [int(w) for w in p.pad_width]
    if any(width[2 * i] or width[2 * i + 1] for i in range(4) if i not in axes):
        return None
    top, left, bottom, right = (int(x) for x in a.padding)
    (h0, h1), (w0, w1) = (width[2 * axes[0]:2 * axes[0] + 2], width[2 * axes[1]:2 * axes[1] + 2])
    padding = (top + h0, left + w0, bottom + h1, right + w1)
    out_dtype = None if str(a.out_dtype) in ("", "None", "void") else str(a.out_dtype)
    return relax.op.nn.conv2d(pad.args[0], conv.args[1], a.strides, padding, a.dilation, int(a.groups),
                              str(a.data_layout), str(a.kernel_layout), str(a.out_layout), out_dtype)


@tvm.transform.module_pass(opt_level=0, name="FoldPadIntoConv")
class FoldPadIntoConv:
    """Fold ``conv2d(pad(x, 0), W)`` into ``conv2d(x, W, padding=...)`` in every Relax function."""

    def __init__(self) -> None:
        self._pad = is_op("relax.nn.pad")(wildcard())
        self._conv = is_op("relax.nn.conv2d")(self._pad, wildcard())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
            folded = _fold(matches[self._conv], matches[self._pad])
            return expr if folded is None else folded

        return rewrite_every_function(mod, (self._conv, rewriter))
