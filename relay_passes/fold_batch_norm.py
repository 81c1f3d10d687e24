"""FoldBatchNorm: fold inference batch-norm into the conv2d before it, for chosen layers only.

TVM's ``relax.transform.FoldBatchnormToConv2D`` folds every ``conv2d -> batch_norm -> [0]``.
The precision pass needs the fold per layer: an int8 layer's batch-norm belongs to its fused
group (its weight is quantized *after* folding, QuantuneV2 stage C), while an fp32 layer stays
bit-identical to the source model (so a fully fp32 config reproduces the fp32 model exactly).
The rewrite is TVM's: ``W' = W * gamma / sqrt(var + eps)`` per output channel and
``b' = beta - mean * gamma / sqrt(var + eps)`` added after the conv, computed in numpy from the
bound constants (run after ``BindParams``).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import TupleGetItemPattern, is_const, is_op, wildcard


@tvm.transform.module_pass(opt_level=0, name="FoldBatchNorm")
class FoldBatchNorm:
    """Fold ``batch_norm(conv2d(x, W) [+ b], gamma, beta, mean, var)[0]`` into ``conv2d(x, W') + b'``.

    ``layer_vars``: names of the conv2d bindings (layer-table ``var``) to fold; ``None`` folds
    every match. Only inference batch-norms over constant operands (after ``BindParams``) match.
    Usable in a ``tvm.transform.Sequential`` under a ``PassContext``.
    """

    def __init__(self, layer_vars: Iterable[str] | None = None):
        self.layer_vars = None if layer_vars is None else set(layer_vars)
        self.folded: list[str] = []
        self._data = wildcard()
        self._weight = is_const()
        self._conv = is_op("relax.nn.conv2d")(self._data, self._weight)
        self._bn_args = [is_const() for _ in range(4)]  # gamma, beta, mean, var
        self._conv_bias = is_const()
        self._biased = is_op("relax.add")(self._conv, self._conv_bias)
        self._bn = is_op("relax.nn.batch_norm")(self._conv | self._biased, *self._bn_args)
        self.pattern = TupleGetItemPattern(self._bn, 0)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        self.folded = []
        func = mod["main"]
        bound = [(var.name, value) for var, value in relax.analysis.get_var2val(func).items()
                 if isinstance(value, relax.Call)]

        def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
            conv = matches[self._conv]
            name = next((n for n, value in bound if value.same_as(conv)), "")
            if self.layer_vars is not None and name not in self.layer_vars:
                return expr
            bn = matches[self._bn]
            if conv.attrs.kernel_layout != "OIHW" or conv.attrs.data_layout != "NCHW" or int(bn.attrs.axis) != 1:
                return expr
            gamma, beta, mean, var = (matches[p].value.numpy().astype(np.float64) for p in self._bn_args)
            factor = gamma / np.sqrt(var + float(bn.attrs.epsilon))
            weight = matches[self._weight].value.numpy()
            folded_w = (weight.astype(np.float64) * factor.reshape(-1, 1, 1, 1)).astype(weight.dtype)
            conv_bias = matches[self._conv_bias].value.numpy().reshape(-1) if self._conv_bias in matches else 0.0
            bias = (beta + (conv_bias - mean) * factor).astype(weight.dtype).reshape(1, -1, 1, 1)
            self.folded.append(name)
            new_conv = relax.Call(conv.op, [matches[self._data], relax.const(folded_w)], conv.attrs)
            return relax.op.add(new_conv, relax.const(bias))

        new_func = relax.dpl.rewrite_call(self.pattern, rewriter, func)
        out = mod.clone()
        out["main"] = new_func
        return out
