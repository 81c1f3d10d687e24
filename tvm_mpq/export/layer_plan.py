"""What the compiler does to each int8 layer, read from its own lowering (the export's ground truth).

The ONNX export must carry *exactly* the compiled model's numbers, so nothing here is recomputed
from the ONNX file: the stage-C module is prepared by the compile pipeline's own passes
(``BindParams``, ``AnnotatePrecision``, ``FoldBatchNorm`` on the int8 layers, ``FoldConstant``
...), and the precision pass (:mod:`relay_passes.lower_to_integer`, simulated arithmetic) is run
on it. From the annotations and that lowering we read, per int8 layer:

* its quantizers (the annotation: activation scale and zero point, weight scales of the folded
  weight);
* the weight it quantizes (batch-norm folded, in the MAC op's operand layout) and the bias that
  is folded into the int32 accumulator (quantized at ``s_x * s_w``), or the fp32 bias add that
  stays in the epilogue;
* whether the compiler folded a batch-norm into it (``FoldBatchNorm``'s record);
* where its input quantizer sits: on the edge into the layer only, or on a tensor that every
  consumer then reads quantized (the pass stores an int8 group's output once, as uint8 codes,
  when an int8 layer reads it; fp32 consumers read those codes dequantized).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from relay_passes.fold_batch_norm import folded_layers
from relay_passes.lower_to_integer import IntegerLowering, code_layout_source
from relay_passes.precision_annotation import bound_constant, detach_annotations, op_name
from relay_passes.quantized_arith import FakeQuantArith, accumulator_scale
from tvm_mpq.compiler.pipeline import annotation_passes
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import Layer, LayerTable, build_layer_table, iter_bindings
from tvm_mpq.quantization.quantizers import ActQParams, weight_scales


@dataclass(frozen=True)
class OperandQuantizer:
    """Where an int8 op's activation operand is quantized: ``act``, on the edge into the op, or,
    ``shared``, on the tensor itself (stored as uint8 codes at ``shared_act``, every consumer
    reads it quantized); ``source_act``: the same holds for the tensor the operand's layout-op
    chain (max-pool, reshape, transpose ...) starts from (``None``: that tensor's other
    consumers read it in fp32)."""

    act: ActQParams
    shared: bool
    shared_act: ActQParams | None
    source_act: ActQParams | None


@dataclass(frozen=True)
class Int8Product:
    """An int8 matmul of two activations (attention's ``q k^T``, ``p v``) as the compiled model
    runs it: both operands quantized per tensor (``a`` at the layer's activation quantizer, ``b``
    at its ``b_act``), the product exact in int32, no weight or bias."""

    layer: Layer
    a: OperandQuantizer
    b: OperandQuantizer

    @property
    def name(self) -> str:
        return self.layer.name


@dataclass(frozen=True)
class Int8Layer:
    """One int8 layer as the compiled model runs it.

    ``weight`` is the float weight the compiler quantizes, in the MAC op's operand layout
    (conv2d ``OIHW``; matmul ``[K, N]``), output channels along ``channel_axis``; ``weight_scales``
    its per-channel scales. ``bias`` is the per-channel bias added to the accumulator (``None``:
    no bias op after the layer); ``bias_folded`` says it is quantized to int32 at
    ``acc_scale = s_x * s_w`` (otherwise it stays an fp32 add). ``bn_folded``: the compiler folded
    the batch-norm after the layer into its weight and bias (:class:`relay_passes.FoldBatchNorm`'s
    record, :func:`relay_passes.folded_layers`); a batch-norm it did not fold (one after a dense
    layer) it computes after the layer as a multiply-add. ``input_shared``: the layer's input tensor is
    stored as uint8 codes at ``shared_act``, so all its consumers read it quantized;
    ``source_act``: the same holds for the tensor the input's layout-op chain (max-pool, reshape,
    transpose ...) starts from (``None``: that tensor's other consumers read it in fp32).
    """

    layer: Layer
    act: ActQParams
    w_bits: int
    weight: np.ndarray
    weight_scales: np.ndarray
    bias: np.ndarray | None
    bias_folded: bool
    bn_folded: bool
    input_shared: bool
    shared_act: ActQParams | None
    source_act: ActQParams | None
    bias_correction: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def input_quantizer(self) -> OperandQuantizer:
        return OperandQuantizer(self.act, self.input_shared, self.shared_act, self.source_act)

    @property
    def channel_axis(self) -> int:
        return self.layer.channel_axis % self.weight.ndim

    @property
    def acc_scale(self) -> np.ndarray:
        """Per-channel real value of one int32 accumulator unit, float32 (as the compiler)."""
        return accumulator_scale(self.act, self.weight_scales)

    def quantized_weight(self) -> np.ndarray:
        """int8 codes of :attr:`weight` (operand layout), bit-identical to the integer kernel's."""
        qmax = 2 ** (self.w_bits - 1) - 1
        shape = [1] * self.weight.ndim
        shape[self.channel_axis] = self.weight_scales.size
        codes = np.round(self.weight.astype(np.float32) / self.weight_scales.reshape(shape))
        return np.clip(codes, -qmax, qmax).astype(np.int8)

    def source_bias(self) -> np.ndarray | None:
        """:attr:`bias` without the bias correction: the model's own (batch-norm folded) bias."""
        if self.bias is None or self.bias_correction is None:
            return self.bias
        return (self.bias.astype(np.float64) - self.bias_correction.astype(np.float64)).astype(np.float32)

    def quantized_bias(self) -> np.ndarray:
        """The folded bias as int32 codes at :attr:`acc_scale` (``round(b / (s_x s_w))``)."""
        if self.bias is None or not self.bias_folded:
            raise ValueError(f"layer {self.name} has no folded bias")
        codes = np.round(self.bias.astype(np.float64) / self.acc_scale.astype(np.float64))
        return codes.astype(np.int32)



def int8_layers(graph: ModelGraph, config: PrecisionConfig, table: LayerTable | None = None) -> list[Int8Layer]:
    """Every int8 layer with a constant weight of ``config`` on ``graph`` (:func:`lowered_layers`)."""
    return lowered_layers(graph, config, table)[0]


def lowered_layers(graph: ModelGraph, config: PrecisionConfig,
                   table: LayerTable | None = None) -> tuple[list[Int8Layer], list[Int8Product]]:
    """Every int8 layer of ``config`` on ``graph`` (table order), as the default ``A->C`` compile
    lowers it: those with a constant weight, and the products of two activations. Raises
    MpqError when the config does not fit the model or the integer kernels cannot run a layer
    (the compiler's own errors)."""
    table = table or build_layer_table(graph)
    with tvm.transform.PassContext(opt_level=3):
        prepared = tvm.transform.Sequential(annotation_passes(graph, config, "A->C", table),
                                            name="tvm_mpq.annotate")(graph.mod)
        func, annotations = detach_annotations(prepared["main"], prepared)
        lowering = IntegerLowering(prepared, annotations, FakeQuantArith(), True)
        lowering.prepare(func)
        lowering.visit_expr(func)
    var2val = relax.analysis.get_var2val(func)
    bindings = list(iter_bindings(func))
    consumers: dict[relax.Var, list[relax.VarBinding]] = {}
    for binding in bindings:
        for used in relax.analysis.free_vars(binding.value) if not isinstance(binding.value, relax.Var) else []:
            consumers.setdefault(used, []).append(binding)
    int8_vars = {annotation.layer: var for var, annotation in lowering.int8.items()}
    bn_folded = set(folded_layers(prepared))
    out: list[Int8Layer] = []
    products: list[Int8Product] = []
    for layer in table:
        if layer.name not in int8_vars:
            continue
        var = int8_vars[layer.name]
        annotation = lowering.int8[var]
        call = var2val[var]
        if annotation.weight_act is not None:
            products.append(Int8Product(layer, _operand(lowering, var2val, call.args[0], annotation.act),
                                        _operand(lowering, var2val, call.args[1], annotation.weight_act)))
            continue
        weight = bound_constant(call.args[1], var2val)
        scales = annotation.weight_scales
        if scales is None:
            scales = weight_scales(weight, annotation.w_bits, layer.channel_axis)
        bias, bias_folded = None, False
        add = next((b for b in consumers.get(var, []) if op_name(b.value) == "relax.add"), None)
        if add is not None:
            other = add.value.args[1] if add.value.args[0].same_as(var) else add.value.args[0]
            value = bound_constant(other, var2val)
            if value is not None and value.size == scales.size:
                bias = value.reshape(-1).astype(np.float32)
                forms = lowering.forms.get(add.var)
                bias_folded = forms is not None and forms.acc is not None
        data = _operand(lowering, var2val, call.args[0], annotation.act)
        correction = config.layers[layer.name].bias_correction
        out.append(Int8Layer(layer, annotation.act, annotation.w_bits, weight.astype(np.float32), scales, bias,
                             bias_folded, layer.name in bn_folded, data.shared, data.shared_act, data.source_act,
                             None if correction is None else np.asarray(correction, np.float32)))
    return out, products


def _operand(lowering: IntegerLowering, var2val: dict, operand: relax.Expr, act: ActQParams) -> OperandQuantizer:
    """Where the lowering quantizes ``operand`` of an int8 op reading it at ``act``."""
    shared = isinstance(operand, relax.Var) and lowering.has_int_form(operand)
    shared_act = lowering.targets.get(operand) if shared else None
    source_act = None
    if shared:
        source = operand
        while (isinstance(source, relax.Var) and lowering.has_int_form(source)
               and (before := code_layout_source(var2val.get(source), var2val)) is not None):
            source = before
        if source is not operand and lowering.has_int_form(source):
            source_act = lowering.targets.get(source)
        elif source is operand:
            source_act = shared_act
    return OperandQuantizer(act, shared, shared_act, source_act)
