"""A mutable view of an ONNX graph (nodes, constants, producers, consumers) and the lookup of a
MAC node (Conv / Gemm / MatMul) by its weight: what the ONNX exports of :mod:`tvm_mpq.export`
rewrite the fp32 model with.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tvm_mpq.errors import MpqError

MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
CHANNELS_FIRST_OPS = ("Conv", "ConvTranspose")
"""MAC ops whose output channels are axis 1 and whose bias is their third input."""
CONST_OPS = ("Reshape", "Unsqueeze", "Squeeze", "Identity", "Flatten", "Cast", "Transpose")
"""Ops whose output is constant when their inputs are (folded by :meth:`OnnxGraph.const`)."""
DIRECTION_MATCH = 0.999
"""Minimum |cosine| between corresponding output channels of our weight and an ONNX weight."""


class OnnxGraph:
    """Mutable view of an ONNX graph: nodes, constants, producers and consumers."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.nodes: list[onnx.NodeProto] = list(model.graph.node)
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in model.graph.initializer}
        self.names: set[str] = set(self.initializers) | {i.name for i in model.graph.input}
        for k, node in enumerate(self.nodes):
            if not node.name:
                node.name = f"{node.op_type}_{k}"
        self.names |= {o for n in self.nodes for o in n.output} | {n.name for n in self.nodes}
        self.shapes = inferred_shapes(model)

    def drop_identities(self) -> int:
        """Remove every ``Identity`` whose output is not a graph output, its consumers reading its
        input (paddle2onnx writes ``ConvTranspose -> Identity -> Add(bias)``: the bias add is then
        the node's own user, as the rewrites look for it). Graphs with subgraphs (``If``,
        ``Loop``), which may read any outer tensor by name, are left as they are. Returns how many."""
        subgraphs = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        if any(a.type in subgraphs for n in self.nodes for a in n.attribute):
            return 0
        dropped = [n for n in self.nodes if n.op_type == "Identity" and n.domain in ("", "ai.onnx")
                   and len(n.input) == 1 and not self.is_output(n.output[0])]
        for identity in dropped:
            source, alias = identity.input[0], identity.output[0]
            for node in self.nodes:
                for k, name in enumerate(node.input):
                    if name == alias:
                        node.input[k] = source
            self.nodes.remove(identity)
        return len(dropped)

    def producer(self, tensor: str) -> onnx.NodeProto | None:
        return next((n for n in self.nodes if tensor in n.output), None)

    def consumers(self, tensor: str) -> list[onnx.NodeProto]:
        return [n for n in self.nodes if tensor in n.input]

    def is_output(self, tensor: str) -> bool:
        return any(o.name == tensor for o in self.model.graph.output)

    def const(self, tensor: str, depth: int = 4) -> np.ndarray | None:
        """The value of ``tensor`` if it is constant: an initializer, a ``Constant``, or a small
        op over constants (e.g. paddle2onnx's ``Reshape(bias, shape)``)."""
        if tensor in self.initializers:
            return numpy_helper.to_array(self.initializers[tensor])
        node = self.producer(tensor)
        if node is None:
            return None
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            return None if attr is None else numpy_helper.to_array(attr.t)
        if depth == 0 or node.domain not in ("", "ai.onnx") or node.op_type not in CONST_OPS:
            return None
        values = {i: self.const(i, depth - 1) for i in node.input if i}
        if any(v is None for v in values.values()):
            return None
        from onnx.reference import ReferenceEvaluator

        outputs = ReferenceEvaluator(node).run(None, values)
        return np.asarray(outputs[list(node.output).index(tensor)])

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def add_init(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def add_node(self, op: str, inputs: list[str], output_base: str, **attrs) -> str:
        out = self.fresh(output_base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh(f"{output_base}_{op}"), **attrs))
        return out

    def write_back(self) -> None:
        """Drop dead nodes and unused initializers, sort topologically, store in the model."""
        graph = self.model.graph
        outputs = {o.name for o in graph.output}
        nodes = self.nodes
        while True:  # dead nodes (e.g. Constant weights that were replaced)
            used = {i for n in nodes for i in n.input} | outputs
            alive = [n for n in nodes if any(o in used for o in n.output)]
            if len(alive) == len(nodes):
                break
            nodes = alive
        used = {i for n in nodes for i in n.input} | outputs
        inits = [t for name, t in self.initializers.items() if name in used]
        del graph.node[:]
        graph.node.extend(topological(nodes, {i.name for i in graph.input} | set(self.initializers)))
        del graph.initializer[:]
        graph.initializer.extend(inits)
        init_names = set(self.initializers)
        kept_inputs = [i for i in graph.input if i.name not in init_names or i.name in used]
        del graph.input[:]
        graph.input.extend(kept_inputs)
        del graph.value_info[:]


def topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Nodes in dependency order, otherwise in their given order."""
    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    waiting = [sum(1 for i in set(n.input) if i and i not in available and i in producer) for n in nodes]
    users: dict[int, list[int]] = {}
    for k, node in enumerate(nodes):
        for i in set(node.input):
            if i and i not in available and i in producer:
                users.setdefault(producer[i], []).append(k)
    ready = [k for k, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(nodes[k])
        for u in users.get(k, []):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise RuntimeError("the exported graph has a cycle")
    return order


def inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return {}
    shapes = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def with_opset(model: onnx.ModelProto, minimum: int) -> onnx.ModelProto:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    if version >= minimum:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    try:
        return onnx.version_converter.convert_version(model, minimum)
    except Exception as err:
        raise MpqError(f"the model's ONNX opset {version} cannot be converted to opset {minimum} (needed for "
                       f"per-channel DequantizeLinear): {str(err).splitlines()[0][:200]}") from None


def attr(node: onnx.NodeProto, name: str, default):
    attr = next((a for a in node.attribute if a.name == name), None)
    return default if attr is None else helper.get_attribute_value(attr)


def is_zero_pad(g: OnnxGraph, node: onnx.NodeProto) -> bool:
    """Whether the ``Pad`` ``node`` pads with a constant 0 (its ``value`` attribute, or its
    constant third input from opset 11 on)."""
    if attr(node, "mode", b"constant") not in (b"constant", "constant"):
        return False
    value = attr(node, "value", 0.0)
    if len(node.input) > 2 and node.input[2]:
        const = g.const(node.input[2])
        value = None if const is None else float(const.reshape(-1)[0])
    return value == 0.0


def is_nearest_resize(node: onnx.NodeProto) -> bool:
    """Whether the ``Resize`` / ``Upsample`` ``node`` picks the nearest input value (a gather:
    it commutes with quantization), not ``tf_crop_and_resize`` (writes an extrapolation value)."""
    mode = attr(node, "mode", b"nearest")
    transform = attr(node, "coordinate_transformation_mode", b"half_pixel")
    return mode in (b"nearest", "nearest") and transform not in (b"tf_crop_and_resize", "tf_crop_and_resize")


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for k, attr in enumerate(node.attribute):
        if attr.name == name:
            del node.attribute[k]
            break
    node.attribute.append(helper.make_attribute(name, value))


# -- MAC nodes by weight ------------------------------------------------------------------------

@dataclass
class OnnxWeight:
    """An ONNX MAC node's weight in our operand layout, and how to write it back."""

    operand: np.ndarray
    onnx_axis: int
    transposed: bool


def onnx_weight(g: OnnxGraph, node: onnx.NodeProto) -> OnnxWeight | None:
    if node.op_type not in MAC_OPS or len(node.input) < 2:
        return None
    value = g.const(node.input[1])
    if value is None or value.dtype != np.float32:
        return None
    if node.op_type == "Conv":
        return OnnxWeight(value, 0, False) if value.ndim in (3, 4) else None  # Conv 1-D or 2-D
    if node.op_type == "ConvTranspose":  # [C_in, C_out / groups, k...]: output channels on axis 1
        return OnnxWeight(value, 1, False) if value.ndim == 4 else None
    if value.ndim != 2:
        return None
    if node.op_type == "Gemm" and attr(node, "transB", 0):
        return OnnxWeight(value.T, 0, True)
    return OnnxWeight(value, 1, False)


def same_directions(a: np.ndarray, b: np.ndarray, axis: int) -> bool:
    """Every output channel of ``a`` is parallel (|cos| >= DIRECTION_MATCH) to ``b``'s: true
    for one weight before and after a batch-norm fold, false for different weights."""
    a2 = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1).astype(np.float64)
    b2 = np.moveaxis(b, axis, 0).reshape(b.shape[axis], -1).astype(np.float64)
    na, nb = np.linalg.norm(a2, axis=1), np.linalg.norm(b2, axis=1)
    live = (na > 0) & (nb > 0)  # a dead channel (zero filter, batch-norm gamma 0) says nothing
    cos = np.abs((a2[live] * b2[live]).sum(axis=1)) / (na[live] * nb[live])
    return bool(np.all(cos >= DIRECTION_MATCH))


__all__ = ["CHANNELS_FIRST_OPS", "CONST_OPS", "DIRECTION_MATCH", "MAC_OPS", "OnnxGraph", "OnnxWeight", "attr", "inferred_shapes", "is_zero_pad",
           "onnx_weight", "same_directions", "set_attr", "topological", "with_opset"]
