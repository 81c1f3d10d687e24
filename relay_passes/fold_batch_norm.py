"""FoldBatchNorm: fold inference batch-norm into the conv2d, conv1d or conv2d_transpose before it, for chosen layers only.

TVM's ``relax.transform.FoldBatchnormToConv2D`` folds every ``conv2d -> batch_norm -> [0]`` (conv2d
only: a PyTorch ``Conv1d`` -> ``BatchNorm1d``, an EEG or audio model's block, it leaves to be
decomposed into a multiply-add after the conv, and an int8 conv1d would then quantize the
unfolded weight).
The precision passes need the fold per layer, by name: an int8 layer's batch-norm belongs to its
fused group (its weight is quantized *after* folding, QuantuneV2 stage C); the compile pipeline
folds every layer's (an fp32 layer then computes one conv + bias, as onnxruntime's fp32 build
does, where keeping the batch norm costs a subtract, divide, multiply and add per output in the
conv's epilogue: 1-3% of the zoo models' latency, fp32 and mixed, ``benchmarks/batch_norm_fold.py``). Layers are chosen by what their
precision annotation says
(:mod:`relay_passes.precision_annotation`): by stable name, or every layer annotated int8. The
rewrite is TVM's: ``W' = W * gamma / sqrt(var + eps)`` per output channel (axis 0 of an OIHW
conv's weight, axis 1 of a one-group IOHW transposed conv's: a decoder's upsampling) and
``b' = beta - mean * gamma / sqrt(var + eps)`` (a conv1d's: axis 0 of its OIW weight) added after the conv, computed in numpy from the
bound constants (run after ``BindParams``). A folded layer's annotation moves with it and its
weight scales become those of the folded weight (the weight the lowering quantizes).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import TupleGetItemPattern, is_const, is_op, wildcard

from relay_passes.precision_annotation import PrecisionAnnotation, read_annotation, reannotate_for_weight

FOLDED_ATTR = "mpq_folded_batch_norm"
"""Function attribute: the stable names of the annotated layers whose batch-norm was folded
(and ``n_folded``, every fold, annotated or not)."""


def folded_layers(mod: tvm.IRModule) -> list[str]:
    """The annotated layers whose batch-norm :class:`FoldBatchNorm` folded, over every function."""
    out: list[str] = []
    for _, func in mod.functions.items():
        if isinstance(func, relax.Function) and func.attrs is not None and FOLDED_ATTR in func.attrs:
            out += [str(name) for name in func.attrs[FOLDED_ATTR]["layers"]]
    return out


@relax.transform.function_pass(opt_level=0, name="FoldBatchNorm")
class FoldBatchNorm:
    """Fold ``batch_norm(conv(x, W) [+ b], gamma, beta, mean, var)[0]`` into ``conv(x, W') + b'``
    (``conv``: conv2d, conv1d, or a one-group conv2d_transpose).

    ``layers``: stable names of the layers to fold (read from their precision annotations);
    ``None`` folds every match, annotated or not. ``quantized_only``: fold only layers annotated
    int8. Only inference batch-norms
    over constant operands (after ``BindParams``) match. Each function gets the folded layers'
    names as attribute :data:`FOLDED_ATTR` (:func:`folded_layers`).
    """

    def __init__(self, layers: Iterable[str] | None = None, quantized_only: bool = False):
        self.layers = None if layers is None else set(layers)
        self.quantized_only = quantized_only
        self.data = wildcard()
        self.weight = is_const()
        self.conv = (is_op("relax.nn.conv2d")(self.data, self.weight) | is_op("relax.nn.conv1d")(self.data, self.weight)
                     | is_op("relax.nn.conv2d_transpose")(self.data, self.weight))
        self.bn_args = [is_const() for _ in range(4)]  # gamma, beta, mean, var
        self.conv_bias = is_const()
        self.biased = is_op("relax.add")(self.conv, self.conv_bias)
        self.bn = is_op("relax.nn.batch_norm")(self.conv | self.biased, *self.bn_args)
        self.pattern = TupleGetItemPattern(self.bn, 0)

    def _selected(self, annotation: PrecisionAnnotation | None) -> bool:
        if self.quantized_only and (annotation is None or annotation.is_fp32):
            return False
        return self.layers is None or (annotation is not None and annotation.layer in self.layers)

    def transform_function(self, func: relax.Function, _mod: tvm.IRModule,
                           _ctx: tvm.transform.PassContext) -> relax.Function:
        if func.attrs is not None and func.attrs.get("Primitive"):
            return func
        var2val = relax.analysis.get_var2val(func)
        folded: list[str] = []
        n_folded = 0

        def rewriter(expr: relax.Expr, matches: dict) -> relax.Expr:
            nonlocal n_folded
            conv, bn, data = matches[self.conv], matches[self.bn], matches[self.data]
            bound = var2val.get(data, data) if isinstance(data, relax.Var) else data  # DPL may match the value
            annotation = read_annotation(bound)
            if not self._selected(annotation):
                return expr
            transposed = conv.op.name == "relax.nn.conv2d_transpose"  # IOHW: output channels on axis 1
            layout = "IOHW" if transposed else "OIW" if conv.op.name == "relax.nn.conv1d" else "OIHW"
            if conv.attrs.kernel_layout != layout or conv.attrs.data_layout != "NC" + layout[2:] or int(bn.attrs.axis) != 1:
                return expr
            if transposed and int(conv.attrs.groups) != 1:
                return expr
            gamma, beta, mean, var = (matches[p].value.numpy().astype(np.float64) for p in self.bn_args)
            factor = gamma / np.sqrt(var + float(bn.attrs.epsilon))
            weight = matches[self.weight].value.numpy()
            axis = layout.index("O")
            folded_w = (weight.astype(np.float64) * factor.reshape([-1 if i == axis else 1 for i in range(weight.ndim)])
                        ).astype(weight.dtype)
            conv_bias = matches[self.conv_bias].value.numpy().reshape(-1) if self.conv_bias in matches else 0.0
            bias = (beta + (conv_bias - mean) * factor).astype(weight.dtype).reshape([1, -1] + [1] * (weight.ndim - 2))
            n_folded += 1
            if annotation is not None:
                folded.append(annotation.layer)
            data = reannotate_for_weight(data, folded_w, axis, var2val)
            new_conv = relax.Call(conv.op, [data, relax.const(folded_w)], conv.attrs)
            return relax.op.add(new_conv, relax.const(bias))

        new_func = relax.dpl.rewrite_call(self.pattern, rewriter, func)
        return new_func.with_attr(FOLDED_ATTR, {"layers": folded, "n_folded": n_folded})
