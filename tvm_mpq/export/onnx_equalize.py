"""Replay a graph's cross-layer equalization on its fp32 ONNX model (before the QDQ export).

The compiled model runs the equalized graph (:mod:`tvm_mpq.ptq.equalization`); the ONNX export
must start from the same function with the same weights, so each recorded pair
``(first, second, scales)`` is applied to the ONNX nodes of the two layers:

* ``first``'s output channel ``c`` divided by ``scales[c]``: the ``BatchNormalization`` after it
  (``scale``, ``B``) when the ONNX model keeps one, else the ``Conv``'s weight rows and bias;
* a ``Clip(x, 0, hi)`` between them becomes ``Min(Max(x, 0), hi / scales)`` (per channel);
  ``Relu``, zero ``Pad`` and ``Mul`` by a constant are left as they are; an ``Add`` of a
  constant (paddle2onnx's bias add, PP-LCNetV3's affine) adds ``c / scales`` instead;
* ``second``'s input channel ``c`` (its channel ``c`` for a depthwise conv) multiplied by it.

The nodes are found by weight content like the QDQ export's layers: ``first`` by the equalized
weight's output-channel directions (a row scale keeps them), ``second`` by the weight with the
scales divided out again (the imported model's).
"""

from __future__ import annotations

import numpy as np
import onnx

from tvm_mpq.errors import MpqError
from tvm_mpq.export.onnx_graph import OnnxGraph, attr, is_zero_pad, onnx_weight, same_directions
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import build_layer_table
from tvm_mpq.ptq.equalization import equalized_pairs


def equalize_onnx(model: onnx.ModelProto, graph: ModelGraph) -> onnx.ModelProto:
    """A copy of ``model`` with ``graph``'s equalization pairs applied (``model`` itself when
    ``graph`` is not equalized). MpqError when a pair's nodes or chain cannot be found."""
    pairs = equalized_pairs(graph)
    if not pairs:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    g = OnnxGraph(copy)
    table = build_layer_table(graph)
    found: dict[str, onnx.NodeProto] = {}  # layer name -> its node (a conv can be in two pairs)
    for pair in pairs:
        scales = np.asarray(pair["scales"], np.float64)
        first, second = table.by_name[pair["first"]], table.by_name[pair["second"]]
        w1 = first.weight_operand(graph.params)
        w2 = second.weight_operand(graph.params).astype(np.float64)
        depthwise = second.kind == "depthwise_conv2d"
        original_w2 = w2 / scales.reshape((-1, 1, 1, 1) if depthwise else (1, -1, 1, 1))
        node1 = _find_conv(g, w1, found, pair["first"])
        node2 = _find_conv(g, original_w2, found, pair["second"])
        _apply(g, node1, node2, scales, depthwise, pair)
    g.write_back()
    return copy


def _find_conv(g: OnnxGraph, weight: np.ndarray, found: dict[str, onnx.NodeProto], name: str) -> onnx.NodeProto:
    """The first Conv node (graph order) not taken by another layer whose weight has ``weight``'s
    shape and output-channel directions."""
    if name in found:
        return found[name]
    taken = {node.name for node in found.values()}
    for node in g.nodes:
        if node.op_type != "Conv" or node.name in taken:
            continue
        w = onnx_weight(g, node)
        if w is not None and w.operand.shape == weight.shape and same_directions(w.operand, weight, 0):
            found[name] = node
            return node
    raise MpqError(f"equalized layer '{name}' (weight {list(weight.shape)}) matches no Conv node of the ONNX model")


def _only_user(g: OnnxGraph, tensor: str) -> onnx.NodeProto | None:
    users = g.consumers(tensor)
    return users[0] if len(users) == 1 and not g.is_output(tensor) else None


def _scaled_init(g: OnnxGraph, tensor: str, factor: np.ndarray, base: str) -> str:
    value = g.const(tensor)
    if value is None:
        raise MpqError(f"ONNX tensor '{tensor}' is not a constant")
    return g.add_init(base, (value.astype(np.float64) * factor).astype(value.dtype))


def _apply(g: OnnxGraph, node1: onnx.NodeProto, node2: onnx.NodeProto, scales: np.ndarray, depthwise: bool,
           pair: dict) -> None:
    label = f"{pair['first']} -> {pair['second']}"
    channels = scales.size
    bn = clip = None
    adds: list[tuple[onnx.NodeProto, int]] = []  # Add nodes of a constant, and its input index
    affine = False
    cur = node1.output[0]
    while True:
        user = _only_user(g, cur)
        if user is None:
            raise MpqError(f"equalized pair {label}: ONNX tensor '{cur}' does not lead to one node only")
        if user is node2:
            break
        constant = _constant_operand(g, user, cur)
        if user.op_type == "BatchNormalization" and bn is None and clip is None and not affine:
            bn = user
        elif user.op_type == "Clip" and clip is None:
            clip = user
        elif user.op_type == "Relu" or (user.op_type == "Pad" and is_zero_pad(g, user)):
            pass
        elif user.op_type in ("Add", "Mul") and constant is not None:
            affine = True
            if user.op_type == "Add":
                adds.append((user, constant))
        else:
            raise MpqError(f"equalized pair {label}: ONNX {user.op_type} '{user.name}' between the two layers")
        cur = user.output[0]
    inverse = 1.0 / scales
    if bn is not None:  # BN(y) / s: scale and shift divided
        bn.input[1] = _scaled_init(g, bn.input[1], inverse, f"{pair['first']}.bn_scale_equalized")
        bn.input[2] = _scaled_init(g, bn.input[2], inverse, f"{pair['first']}.bn_bias_equalized")
    else:
        node1.input[1] = _scaled_init(g, node1.input[1], inverse.reshape(-1, 1, 1, 1), f"{pair['first']}.weight_equalized")
        if len(node1.input) > 2 and node1.input[2]:
            node1.input[2] = _scaled_init(g, node1.input[2], inverse, f"{pair['first']}.bias_equalized")
    node2.input[1] = _scaled_init(g, node2.input[1], scales.reshape((-1, 1, 1, 1) if depthwise else (1, -1, 1, 1)),
                                  f"{pair['second']}.weight_equalized")
    for add, index in adds:  # y / s + c / s
        value = g.const(add.input[index]).astype(np.float64)
        if value.size not in (1, channels):
            raise MpqError(f"equalized pair {label}: ONNX Add '{add.name}' adds a constant of shape "
                           f"{list(value.shape)}, neither a scalar nor one value per channel")
        quotient = (value.reshape(-1) * inverse).reshape(1, channels, 1, 1)  # (a scalar broadcasts)
        add.input[index] = g.add_init(f"{add.name or add.output[0]}_equalized", quotient.astype(np.float32))
    if clip is not None:
        _per_channel_clip(g, clip, scales, channels, label)


def _constant_operand(g: OnnxGraph, node: onnx.NodeProto, data: str) -> int | None:
    """The input index of the constant operand of a two-input ``node`` whose other input is
    ``data`` (None when it has no such constant)."""
    if len(node.input) != 2 or data not in node.input:
        return None
    index = 1 - list(node.input).index(data)
    return index if g.const(node.input[index]) is not None else None


def _per_channel_clip(g: OnnxGraph, clip: onnx.NodeProto, scales: np.ndarray, channels: int, label: str) -> None:
    """``Clip(x, 0, hi)`` -> ``Min(Max(x, 0), hi / scales)`` (broadcast over NCHW)."""
    lo = attr(clip, "min", None)
    hi = attr(clip, "max", None)
    if len(clip.input) > 1 and clip.input[1]:
        lo = g.const(clip.input[1])
    if len(clip.input) > 2 and clip.input[2]:
        hi = g.const(clip.input[2])
    if lo is None or hi is None or float(np.asarray(lo).reshape(-1)[0]) != 0.0:
        raise MpqError(f"equalized pair {label}: ONNX Clip '{clip.name}' is not a Clip(x, 0, hi) with constant bounds")
    hi_value = float(np.asarray(hi).reshape(-1)[0])
    zero = g.add_init(f"{clip.name}_zero", np.array(0.0, np.float32))
    bound = g.add_init(f"{clip.name}_upper", (np.float32(hi_value) / scales.astype(np.float32)).reshape(1, channels, 1, 1))
    relu = g.add_node("Max", [clip.input[0], zero], f"{clip.output[0]}_relu")
    g.nodes[g.nodes.index(clip)] = onnx.helper.make_node("Min", [relu, bound], [clip.output[0]],
                                                         name=g.fresh(f"{clip.name}_per_channel"))
