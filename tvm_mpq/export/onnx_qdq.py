"""Write a precision config as an ONNX QDQ model: the compiled model's decisions and scales,
runnable by onnxruntime / TensorRT.

Start: the model's fp32 ONNX (:mod:`tvm_mpq.export.fp32_onnx`). Per int8 layer (what the compiler
does, :mod:`tvm_mpq.export.layer_plan`) its ONNX ``Conv`` / ``Gemm`` / ``MatMul`` is found by
weight content (output-channel directions, so a batch-norm folded on one side only still
matches; shapes checked), then:

* weight -> int8 initializer (the compiler's codes: symmetric per output channel, batch-norm
  folded first) + ``DequantizeLinear(axis = output-channel axis)``;
* a batch-norm the compiler folded into the layer is folded here too (node removed);
* bias -> int32 codes at ``s_x * s_w`` + ``DequantizeLinear`` (the integer kernel's bias; a
  bias the kernel keeps in fp32 stays fp32);
* a matmul of two activations (attention, ``--int8-attention``): its ``MatMul`` (the products
  matched in graph order, shapes checked) gets both inputs quantized, at the layer's ``act`` and ``b_act``;
  ONNX computes the product of the dequantized values, which the int32 product is exactly;
* input -> ``QuantizeLinear``/``DequantizeLinear`` (uint8, the config's scale / zero point; a
  depthwise conv's input quantized per channel is written as the float ops of the quantizer,
  which onnxruntime and TensorRT run: their Q/DQ activations are per tensor only),
  on the edge into the layer, or, where the compiler stores the tensor once as uint8 codes for
  all its readers (an int8 group's output), on the tensor itself so every consumer reads it
  quantized, exactly as the compiled model does.

fp32 layers and every other op stay as they are. Only the default ``A->C`` stage is exported.
A graph that was cross-layer equalized (:mod:`tvm_mpq.ptq.equalization`) has its equalization
replayed on the fp32 ONNX first (:mod:`tvm_mpq.export.onnx_equalize`); a layer's bias correction
(``bias_correction`` in the config) is part of the int32 bias written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from relay_passes.integer_support import ATTENTION_KIND
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.errors import MpqError
from tvm_mpq.export.fp32_onnx import Source, fp32_onnx, load_with_source
from tvm_mpq.export.layer_plan import Int8Layer, Int8Product, OperandQuantizer, lowered_layers
from tvm_mpq.export.onnx_equalize import equalize_onnx
from tvm_mpq.export.onnx_graph import (CHANNELS_FIRST_OPS, OnnxGraph, attr, is_nearest_resize, is_zero_pad, onnx_weight,
                                      same_directions, set_attr, with_opset)
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable, build_layer_table
from tvm_mpq.quantization.quantizers import ActQParams

MIN_OPSET = 13
"""Per-channel ``DequantizeLinear`` (``axis``) exists from opset 13."""
LAYOUT_OPS = ("MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Pad", "Resize",
              "Upsample", "Split", "Expand")
"""ONNX ops that commute with per-tensor quantization (TVM imports them as the precision pass's
layout ops); a quantizer moves back through them."""


@dataclass
class QdqExport:
    """An exported QDQ model and what the export did."""

    model: onnx.ModelProto
    int8_layers: list[str]
    fp32_layers: list[str]
    nodes: dict[str, str] = field(default_factory=dict)
    """int8 layer name -> name of the ONNX node it became."""
    n_act_qdq: int = 0
    """QuantizeLinear/DequantizeLinear pairs on activations."""
    n_weight_dq: int = 0
    n_bias_dq: int = 0
    n_bn_folded: int = 0

    def save(self, path: Path | str) -> Path:
        """Write the model (``.onnx``); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(self.model, str(path))
        return path


def export_qdq_onnx(graph_or_model: ModelGraph | str | Path, config: PrecisionConfig, path: Path | str,
                    source: Source = None, input_shapes: dict[str, tuple[int, ...]] | None = None) -> Path:
    """Write ``config`` on a model as an ONNX QDQ model at ``path``; returns ``path``.

    ``graph_or_model``: a stage-A :class:`ModelGraph`, or a model spec (zoo name, ``.onnx``,
    ``.pt2``; ``input_shapes`` as ``--input-shape``). ``source``: the fp32 ONNX model / file or
    the ``torch.nn.Module`` a graph was imported from, when the graph's own ``source`` does not
    lead to one. MpqError when the config does not fit the model or a layer has no ONNX node.
    """
    if isinstance(graph_or_model, ModelGraph):
        graph, fp32 = graph_or_model, fp32_onnx(graph_or_model, source)
    elif source is not None:
        from tvm_mpq.zoo import load_model

        graph = load_model(str(graph_or_model), input_shapes)
        fp32 = fp32_onnx(graph, source)
    else:
        graph, fp32 = load_with_source(str(graph_or_model), input_shapes)
    return build_qdq_onnx(graph, config, fp32).save(path)


def build_qdq_onnx(graph: ModelGraph, config: PrecisionConfig, fp32: onnx.ModelProto | None = None) -> QdqExport:
    """The QDQ model of ``config`` on ``graph`` (see the module docstring), from the fp32 ONNX
    model ``fp32`` (default: :func:`~tvm_mpq.export.fp32_onnx.fp32_onnx` of the graph)."""
    table = build_layer_table(graph)
    layers, products = lowered_layers(graph, config, table)
    for name, qp in [(il.name, il.act) for il in layers] + [(p.name, q.act) for p in products for q in (p.a, p.b)]:
        if qp.bits != 8:
            raise MpqError(f"config layer '{name}' has {qp.bits}-bit activations: the ONNX QDQ export "
                           "writes 8-bit (uint8) activation quantizers only")
    model = with_opset(equalize_onnx(fp32 if fp32 is not None else fp32_onnx(graph), graph), MIN_OPSET)
    g = OnnxGraph(model)
    g.drop_identities()
    matches = _match_layers(layers, g, graph.name)
    product_nodes = _match_products(products, table, g, graph.name) if products else []
    in_order = sorted([*layers, *products], key=lambda x: x.layer.index)
    result = QdqExport(model, [x.name for x in in_order], config.fp32_layers(),
                       {il.name: node.name for il, node in [*matches, *product_nodes]})
    for il, node in matches:
        _rewrite_weight(g, il, node)
        n_bias, bn_folded = _rewrite_bias(g, il, node)
        result.n_bias_dq += n_bias
        result.n_bn_folded += int(bn_folded)
    result.n_weight_dq = len(matches)
    edges = [(node, 0, il.input_quantizer) for il, node in matches]
    edges += [(node, i, q) for p, node in product_nodes for i, q in enumerate((p.a, p.b))]
    result.n_act_qdq = _insert_activation_qdq(g, edges)
    g.write_back()
    try:
        onnx.checker.check_model(model)
    except Exception as err:  # a bug here, not the user's: keep the message
        raise RuntimeError(f"the exported QDQ model fails onnx.checker: {err}") from err
    return result


def _match_layers(layers: list[Int8Layer], g: OnnxGraph, model_name: str) -> list[tuple[Int8Layer, onnx.NodeProto]]:
    """Each int8 layer -> its ONNX node: same op family, same weight shape and output shape (where
    known), parallel output channels; first unused candidate in graph order."""
    candidates = [(n, w) for n in g.nodes if (w := onnx_weight(g, n)) is not None]
    used: set[str] = set()
    matches = []
    for il in layers:
        want = _onnx_family(il.layer.kind)
        found = None
        for node, weight in candidates:
            if node.name in used or _node_family(node.op_type) != want:
                continue
            if weight.operand.shape != il.weight.shape:
                continue
            out_shape = g.shapes.get(node.output[0])
            if out_shape is not None and il.layer.output_shape and \
                    _without_leading_ones(out_shape) != _without_leading_ones(il.layer.output_shape):
                continue
            if same_directions(weight.operand, il.weight, il.channel_axis):
                found = node
                break
        if found is None:
            raise MpqError(f"int8 layer '{il.name}' ({il.layer.kind}, weight {list(il.weight.shape)}) matches no "
                           f"{want} node of {model_name}'s ONNX model (by weight content and shape)")
        used.add(found.name)
        matches.append((il, found))
    return matches


def _match_products(products: list[Int8Product], table: LayerTable, g: OnnxGraph,
                    model_name: str) -> list[tuple[Int8Product, onnx.NodeProto]]:
    """Each int8 product of two activations -> its ONNX ``MatMul``. The layer table lists every
    product (int8 or not) in the order the importer read the model's nodes, so the k-th of them
    is the k-th ``MatMul`` of two computed tensors (not initializers) in graph order: both lists
    must be as long, and every output shape that ONNX shape inference knows must be the
    product's (all of a transformer's products often have one shape: nothing but the order can
    tell them apart, so no node is ever skipped)."""
    candidates = [n for n in g.nodes if n.op_type == "MatMul" and onnx_weight(g, n) is None
                  and not any(g.const(i) is not None for i in n.input)]
    every = [layer for layer in table if layer.kind == ATTENTION_KIND]
    if len(candidates) != len(every):
        raise MpqError(f"{model_name}'s ONNX model has {len(candidates)} MatMul(s) of two computed tensors where the "
                       f"compiled model has {len(every)} product(s) of two activations: the int8 ones ("
                       f"{', '.join(p.name for p in products[:3])}) cannot be placed; keep them fp32 (no --int8-attention)")
    node_of = dict(zip((layer.name for layer in every), candidates))
    matches = []
    for product in products:
        node = node_of[product.name]
        out_shape = g.shapes.get(node.output[0])
        if out_shape is not None and product.layer.output_shape and \
                _without_leading_ones(out_shape) != _without_leading_ones(product.layer.output_shape):
            raise MpqError(f"int8 layer '{product.name}' (a product of two activations, output "
                           f"{list(product.layer.output_shape)}) is, by order, ONNX MatMul '{node.name}' of output "
                           f"{list(out_shape)} in {model_name}'s ONNX model: the two do not match")
        matches.append((product, node))
    return matches


def _without_leading_ones(shape) -> tuple[int, ...]:
    """``shape`` less its leading unit dims: a PyTorch ``Linear`` on ``[1, L, C]`` is a layer of
    output ``[L, C]`` in the graph ``torch.export`` gives and a MatMul of ``[1, L, C]`` in the ONNX
    file the TorchScript exporter writes."""
    dims = tuple(int(d) for d in shape)
    first = next((i for i, d in enumerate(dims) if d != 1), len(dims))
    return dims[first:]


def _onnx_family(kind: str) -> str:
    """The ONNX ops a layer of the layer table's ``kind`` is written as."""
    if kind.endswith("conv2d_transpose"):
        return "ConvTranspose"
    return "Conv" if kind.endswith(("conv2d", "conv1d")) else "Gemm/MatMul"


def _node_family(op_type: str) -> str:
    return op_type if op_type in CHANNELS_FIRST_OPS else "Gemm/MatMul"


# -- rewriting ----------------------------------------------------------------------------------

def _rewrite_weight(g: OnnxGraph, il: Int8Layer, node: onnx.NodeProto) -> None:
    """Weight input -> DequantizeLinear(int8 codes, per-channel scales, zero points 0)."""
    weight = onnx_weight(g, node)
    assert weight is not None
    if node.op_type == "Gemm" and (attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0):
        raise MpqError(f"int8 layer '{il.name}': ONNX Gemm '{node.name}' with transA or alpha != 1 is not supported")
    codes = il.quantized_weight()
    codes = codes.T if weight.transposed else codes
    channels = il.weight_scales.size
    q = g.add_init(f"{il.name}.weight_quantized", np.ascontiguousarray(codes))
    s = g.add_init(f"{il.name}.weight_scale", il.weight_scales.astype(np.float32))
    z = g.add_init(f"{il.name}.weight_zero_point", np.zeros(channels, np.int8))
    node.input[1] = g.add_node("DequantizeLinear", [q, s, z], f"{il.name}.weight_dequantized", axis=weight.onnx_axis)


def _single_user(g: OnnxGraph, tensor: str, op: str) -> onnx.NodeProto | None:
    users = g.consumers(tensor)
    if len(users) == 1 and users[0].op_type == op and not g.is_output(tensor):
        return users[0]
    return None


def _unit_squeeze(g: OnnxGraph, node: onnx.NodeProto) -> tuple[onnx.NodeProto, list[int]] | None:
    """A single-use ``Squeeze`` right after ``node`` and the axes it removes (constant axes), or None."""
    squeeze = _single_user(g, node.output[0], "Squeeze")
    if squeeze is None:
        return None
    rank = len(g.shapes.get(node.output[0], ()))
    axes = g.const(squeeze.input[1]) if len(squeeze.input) > 1 and squeeze.input[1] else attr(squeeze, "axes", None)
    if axes is None or not rank:
        return None
    return squeeze, sorted(int(a) % rank for a in np.asarray(axes).reshape(-1))


def _bias_add(g: OnnxGraph, node: onnx.NodeProto,
              channels: int) -> tuple[onnx.NodeProto, np.ndarray, onnx.NodeProto | None] | None:
    """An ``Add`` of a per-output-channel constant right after ``node`` (a bias written as a
    separate op: MatMul + Add, paddle2onnx's Conv + Add(Reshape(b))), or after a ``Squeeze`` of
    its unit axes (tf2onnx's conv1d: Conv -> Squeeze -> Add, which the compiler computes before
    the squeeze: :class:`relay_passes.sink_unit_squeezes.SinkUnitSqueezes`), with that constant
    and the squeeze."""
    rank = len(g.shapes.get(node.output[0], ())) or (4 if node.op_type in CHANNELS_FIRST_OPS else 2)
    axis = 1 if node.op_type in CHANNELS_FIRST_OPS else rank - 1
    found = _unit_squeeze(g, node) if node.op_type in CHANNELS_FIRST_OPS else None
    squeeze = None
    if found is not None and found[1] and axis not in found[1]:
        squeeze, squeezed = found
        rank, axis = rank - len(squeezed), axis - sum(a < axis for a in squeezed)
    tensor = (squeeze or node).output[0]
    add = _single_user(g, tensor, "Add")
    if add is None or len(add.input) != 2:
        return None
    other = add.input[1] if add.input[0] == tensor else add.input[0]
    value = g.const(other)
    if value is None or value.size != channels or value.dtype != np.float32:
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    if len(shape) != rank or (channels > 1 and shape[axis] != channels):
        return None
    return add, value.reshape(-1), squeeze


def _bias_tolerance(source_bias: np.ndarray, bias: np.ndarray) -> float:
    """How far the model's own bias recovered from the compiled one (``bias - correction``, in
    float32) may lie from the ONNX node's: 1e-5 of its largest value, or four float32 steps at
    the compiled bias's largest value where a bias correction much larger than the bias makes
    that round trip coarser (a diffusion UNet's skip conv: bias 0.14, correction -146)."""
    largest = float(np.abs(bias).max()) if bias is not None and bias.size else 0.0
    return max(1e-5 * max(float(np.abs(source_bias).max()), 1e-3), 4.0 * float(np.spacing(np.float32(largest))))


def _rewrite_bias(g: OnnxGraph, il: Int8Layer, node: onnx.NodeProto) -> tuple[int, bool]:
    """Fold the batch-norm the compiler folded; bias -> int32 codes + DequantizeLinear where the
    integer kernel folds it. Returns (bias DequantizeLinear nodes written, batch-norm folded)."""
    channels = il.weight_scales.size
    own_bias = node.op_type in (*CHANNELS_FIRST_OPS, "Gemm") and len(node.input) > 2 and bool(node.input[2])
    add = None if own_bias else _bias_add(g, node, channels)
    tail = add[0].output[0] if add is not None else node.output[0]
    bn = _single_user(g, tail, "BatchNormalization")
    bn = bn if bn is not None and bn.input[0] == tail else None
    # Fold the batch-norm after the node where the compiler folded one (FoldBatchNorm's record,
    # Int8Layer.bn_folded; an ONNX file without one has it folded already, a PyTorch export's:
    # the bias check below holds it to the compiled bias). One the compiler did not fold (after a
    # Gemm / MatMul: an MXNet export's FullyConnected + BatchNorm, SFace's embedding) it computes
    # after the product as a multiply-add, so the export keeps that node as it is.
    fold_bn = il.bn_folded and bn is not None
    onnx_bias = _onnx_bias(g, node, add[1] if add is not None else None, bn if fold_bn else None)
    source_bias = il.source_bias()  # the compiled model's bias without the config's bias correction
    if source_bias is None:
        if onnx_bias is not None and np.any(onnx_bias != 0):
            raise MpqError(f"int8 layer '{il.name}': ONNX node '{node.name}' adds a bias the compiled model does not")
    elif onnx_bias is None and il.bias_correction is not None and not np.any(source_bias):
        pass  # a bias-free layer that bias correction gave a bias
    elif onnx_bias is None or onnx_bias.size != source_bias.size or not np.allclose(
            onnx_bias.reshape(-1), source_bias, rtol=1e-3, atol=_bias_tolerance(source_bias, il.bias)):
        raise MpqError(f"int8 layer '{il.name}': the bias of ONNX node '{node.name}' differs from the compiled model's")
    if il.bias is None:
        return 0, False  # (a batch-norm fold always brings a bias)
    if il.bias_folded:
        q = g.add_init(f"{il.name}.bias_quantized", il.quantized_bias())
        s = g.add_init(f"{il.name}.bias_scale", il.acc_scale)
        z = g.add_init(f"{il.name}.bias_zero_point", np.zeros(channels, np.int32))
        bias = g.add_node("DequantizeLinear", [q, s, z], f"{il.name}.bias_dequantized", axis=0)
    else:  # the kernel keeps this bias as an fp32 add
        bias = g.add_init(f"{il.name}.bias", il.bias.astype(np.float32))
    output = (bn if fold_bn else add[0] if add is not None else node).output[0]
    if node.op_type == "MatMul" and add is not None:  # no bias input: the Add stays
        add[0].input[1 if add[0].input[0] == node.output[0] else 0] = bias
        output = add[0].output[0]
        if fold_bn:
            g.nodes.remove(bn)
            add[0].output[0] = bn.output[0]
        return int(il.bias_folded), fold_bn
    if node.op_type == "MatMul":  # a bias-free MatMul that bias correction gave a bias: add it
        product = g.fresh(f"{node.output[0]}_product")
        g.nodes.append(helper.make_node("Add", [product, bias], [node.output[0]], name=g.fresh(f"{il.name}.bias_add")))
        node.output[0] = product
        return int(il.bias_folded), False
    for removed in ([add[0]] if add is not None else []) + ([bn] if fold_bn else []):
        g.nodes.remove(removed)
    squeeze = add[2] if add is not None else None
    if squeeze is not None:  # Conv (with the bias) -> Squeeze, read where the Add (and batch-norm) was
        squeeze.output[0] = output
    else:
        node.output[0] = output
    if own_bias:
        node.input[2] = bias
    else:
        node.input.append(bias)
    if node.op_type == "Gemm":
        set_attr(node, "beta", 1.0)
    return int(il.bias_folded), fold_bn


def _onnx_bias(g: OnnxGraph, node: onnx.NodeProto, added: np.ndarray | None,
               bn: onnx.NodeProto | None) -> np.ndarray | None:
    """The ONNX model's effective per-channel bias of ``node`` (its bias input or the constant of
    a following Add, then ``bn`` folded in, if given)."""
    bias = None if added is None else added.astype(np.float64)
    if node.op_type in (*CHANNELS_FIRST_OPS, "Gemm") and len(node.input) > 2 and node.input[2]:
        value = g.const(node.input[2])
        if value is None:
            return None
        bias = value.reshape(-1).astype(np.float64) * (attr(node, "beta", 1.0) if node.op_type == "Gemm" else 1.0)
    if bn is not None:
        gamma, beta, mean, var = (g.const(i) for i in bn.input[1:5])
        if any(v is None for v in (gamma, beta, mean, var)):
            raise MpqError(f"batch-norm '{bn.name}' has non-constant parameters")
        factor = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + float(attr(bn, "epsilon", 1e-5)))
        bias = beta + ((0.0 if bias is None else bias) - mean) * factor
    return bias


def _insert_activation_qdq(g: OnnxGraph, edges: list[tuple[onnx.NodeProto, int, OperandQuantizer]]) -> int:
    """QuantizeLinear/DequantizeLinear pairs on the int8 ops' activation inputs (node, input
    index, where its quantizer sits); returns how many."""
    shared: dict[str, ActQParams] = {}
    for node, index, quant in edges:
        if not quant.shared or quant.shared_act is None:
            continue
        chain = [node.input[index]]
        while (p := g.producer(chain[-1])) is not None and _is_layout(g, p):
            chain.append(p.input[0])
        shared.setdefault(chain[0], quant.shared_act)
        for tensor in chain[1:-1]:
            shared.setdefault(tensor, quant.shared_act)
        if len(chain) > 1 and quant.source_act is not None:
            shared.setdefault(chain[-1], quant.source_act)
    qparams: dict[ActQParams, tuple[str, str]] = {}
    code_bounds: dict[int, tuple[str, str]] = {}  # qmax -> the Clip bounds of per-channel quantizers

    def qdq(tensor: str, qp: ActQParams, out: str | None = None) -> str:
        if qp not in qparams:
            # per channel (a depthwise conv's input, NCHW): float constants shaped to broadcast
            shape, zp_type = ((-1, 1, 1), np.float32) if qp.per_channel else ((), np.uint8)
            qparams[qp] = (g.add_init(f"mpq_act{len(qparams)}_scale", np.array(qp.scale, np.float32).reshape(shape)),
                           g.add_init(f"mpq_act{len(qparams)}_zero_point", np.array(qp.zero_point, zp_type).reshape(shape)))
        s, z = qparams[qp]
        if qp.per_channel:
            if qp.qmax not in code_bounds:
                code_bounds[qp.qmax] = (g.add_init("mpq_act_code_min", np.array(0.0, np.float32)),
                                        g.add_init(f"mpq_act_code_max_{qp.qmax}", np.array(float(qp.qmax), np.float32)))
            return _per_channel_fake_quant(g, tensor, s, z, code_bounds[qp.qmax], out)
        q = g.add_node("QuantizeLinear", [tensor, s, z], f"{out or tensor}_quantized")
        if out is None:
            return g.add_node("DequantizeLinear", [q, s, z], f"{tensor}_dequantized")
        g.nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [out], name=g.fresh(f"{out}_DequantizeLinear")))
        return out

    raw: dict[str, str] = {}
    count = 0
    for tensor, qp in shared.items():
        producer = g.producer(tensor)
        if producer is None:  # a graph input: quantized on the edges instead
            continue
        raw[tensor] = g.fresh(f"{tensor}_fp32")
        producer.output[list(producer.output).index(tensor)] = raw[tensor]
        qdq(raw[tensor], qp, out=tensor)
        count += 1
    quantized: dict[tuple[str, ActQParams], str] = {}
    for node, index, quant in edges:
        tensor = node.input[index]
        if tensor in raw and shared[tensor] == quant.act:
            continue  # reads the shared quantized tensor
        key = (raw.get(tensor, tensor), quant.act)
        if key not in quantized:
            quantized[key] = qdq(key[0], quant.act)
            count += 1
        node.input[index] = quantized[key]
    return count


def _per_channel_fake_quant(g: OnnxGraph, tensor: str, scale: str, zero_point: str, bounds: tuple[str, str],
                            out: str | None) -> str:
    """A per-channel activation quantizer written as the float ops of its definition
    (``Div -> Round -> Add -> Clip -> Sub -> Mul``, the QDQ simulation's own order, so the values
    are the same to the bit) rather than ``QuantizeLinear(axis=1)``: onnxruntime fuses a
    ``Conv`` between Q/DQ into ``QLinearConv``, which takes per-tensor activation scales only and
    fails at run time on a per-channel one ("result zero point must be a scalar"), and TensorRT
    quantizes activations per tensor only. The layers on either side still read and write
    their other quantizers as Q/DQ pairs."""
    steps = [("Div", [scale]), ("Round", []), ("Add", [zero_point]), ("Clip", list(bounds)), ("Sub", [zero_point])]
    value = tensor
    for op, operands in steps:
        value = g.add_node(op, [value, *operands], f"{out or tensor}_{op.lower()}")
    if out is None:
        return g.add_node("Mul", [value, scale], f"{tensor}_dequantized")
    g.nodes.append(helper.make_node("Mul", [value, scale], [out], name=g.fresh(f"{out}_Mul")))
    return out


def _is_layout(g: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type not in LAYOUT_OPS or not node.input:
        return False
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        return False
    if node.op_type == "Pad":
        return is_zero_pad(g, node)
    if node.op_type in ("Resize", "Upsample"):
        return is_nearest_resize(node)
    return True


__all__ = ["QdqExport", "build_qdq_onnx", "export_qdq_onnx"]
