"""The int8 layers of a precision config as the lowering receives them, for the refinements that
read their weights (bias correction, weight rounding).

The module is the compile pipeline's :func:`~tvm_mpq.compiler.pipeline.annotation_passes` at
``A->C`` (parameters bound, precision annotated, batch-norm folded into the int8 layers) of the
config *without* its bias corrections and weight roundings: each MAC op reads the layer's folded
weight as it is, with the annotation's per-channel weight scales.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from relay_passes.precision_annotation import PrecisionAnnotation, annotated_layers, bound_constant, relax_functions
from tvm_mpq.compiler.pipeline import annotation_passes
from tvm_mpq.compiler.validate import INTEGER_KINDS
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import Layer, LayerTable
from tvm_mpq.quantization.mac_error import ConvGeometry
from tvm_mpq.quantization.quantizers import weight_scales

REFINED_KINDS = ("conv2d", "depthwise_conv2d", "grouped_conv2d", "dense", "matmul")
"""Layer kinds whose weights the refinements read (conv2d of any grouping, matmul)."""


def conv_geometry(call: relax.Call) -> ConvGeometry | None:
    """The geometry of a ``relax.nn.conv2d`` call (NCHW / OIHW), None for a matmul. ValueError
    for any other MAC op or layout (the refinements do not compute those)."""
    if call.op.name == "relax.matmul":
        return None
    if call.op.name != "relax.nn.conv2d":
        raise ValueError(f"bias correction and weight rounding compute conv2d and matmul layers, not {call.op.name}")
    attrs = call.attrs
    if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        raise ValueError(f"bias correction and weight rounding read NCHW/OIHW convolutions, not "
                         f"{attrs.data_layout}/{attrs.kernel_layout}")
    pad = [int(p) for p in attrs.padding]
    pad = pad * 2 if len(pad) == 2 else pad
    return ConvGeometry(tuple(int(s) for s in attrs.strides), tuple(pad), tuple(int(d) for d in attrs.dilation),
                        int(attrs.groups))


@dataclass(frozen=True)
class PreparedLayer:
    """One int8 layer: its table entry, its MAC call, its (folded) weight and weight scales."""

    layer: Layer
    call: relax.Call
    annotation: PrecisionAnnotation
    weight: np.ndarray
    scales: np.ndarray

    @property
    def geometry(self) -> ConvGeometry | None:
        """The conv's geometry (:func:`conv_geometry`), None for a matmul."""
        return conv_geometry(self.call)


def refined_layers(table: LayerTable, config: PrecisionConfig) -> list[Layer]:
    """The layers the refinements apply to: quantized conv2d / matmul layers with a constant
    weight that run on the integer kernels."""
    return [layer for layer in table if not config.layers[layer.name].is_fp32 and layer.weight_param is not None
            and layer.kind in INTEGER_KINDS and layer.kind in REFINED_KINDS]


def without_corrections(config: PrecisionConfig) -> PrecisionConfig:
    """``config`` with no layer's bias correction or weight rounding (the model the corrections
    and roundings are computed on: its MAC ops read the layers' folded weights as they are)."""
    from dataclasses import replace

    return PrecisionConfig(config.model, {n: replace(lp, bias_correction=None, weight_rounding=None)
                                          for n, lp in config.layers.items()}, dict(config.provenance))



def prepared_layers(graph: ModelGraph, config: PrecisionConfig, table: LayerTable) -> Iterator[PreparedLayer]:
    """Each layer of :func:`refined_layers` on the prepared module (module docstring), in the
    module's order."""
    layers = {layer.name: layer for layer in refined_layers(table, config)}
    if not layers:
        return
    with tvm.transform.PassContext(opt_level=3):
        prepared = tvm.transform.Sequential(annotation_passes(graph, without_corrections(config), "A->C", table),
                                            name="tvm_mpq.annotate")(graph.mod)
    for _, func in relax_functions(prepared):
        var2val = relax.analysis.get_var2val(func)
        for binding, annotation in annotated_layers(func):
            layer = layers.get(annotation.layer)
            if layer is None or annotation.is_fp32:
                continue
            weight = bound_constant(binding.value.args[1], var2val)
            if weight is None:
                raise RuntimeError(f"layer {layer.name}: weight is not a constant after preparation")
            scales = annotation.weight_scales
            if scales is None:
                scales = weight_scales(weight, annotation.w_bits, layer.channel_axis)
            yield PreparedLayer(layer, binding.value, annotation, weight, np.asarray(scales, np.float32))
