"""A float16 ONNX model computed in float32, its inputs and outputs still float16.

Keras' ``mixed_float16`` policy exported by tf2onnx, or a model halved to save space
(onnxconverter-common's ``convert_float_to_float16``), stores its weights and computes its
activations in float16: slovorez 0.1.0's Russian morpheme tagger (``slovorez-test.onnx``)
casts its embedding to float16 and runs five float16 conv1d layers. tvm-mpq's quantizers and
integer kernels take float32 real values (a scale is a float32; the kernels' epilogues are
float32), and x86 CPUs without AVX-512 FP16 compute float16 by converting each element anyway
(onnxruntime's CPU provider runs every node it has no float16 kernel for between inserted
``Cast`` nodes). So the import computes the model in float32:

* float16 initializers, ``Constant`` / ``ConstantOfShape`` values and sparse initializers become
  float32 (exact: every float16 is a float32);
* ``Cast(to=FLOAT16)`` becomes ``Cast(to=FLOAT)``, and a float16 ``dtype`` attribute (random or
  ``EyeLike`` generators) float32;
* a float16 graph input keeps its type and name and is cast to float32 first; a float16 graph
  output is cast back to float16 last, so the compiled model takes and returns what the file
  does;
* every other float16 tensor type (value infos, subgraph inputs and outputs) becomes float32.

The float32 model rounds less than the float16 one (it is the float16 model's arithmetic
without its intermediate roundings); the int8 layers the precision pass chooses are quantized
from it, and its fp32 layers run in float32. Node names are unchanged, so the layer table's
names are the file's.
"""

from __future__ import annotations

import onnx
import onnx.helper
import onnx.numpy_helper

FLOAT16, FLOAT = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
_DTYPE_ATTRS = ("dtype",)
"""Attributes naming an output element type (RandomNormal, RandomUniform, EyeLike, ...)."""


def has_float16(model: onnx.ModelProto) -> bool:
    """Whether any tensor of ``model`` (its subgraphs included) is float16."""
    return any(_graph_has_float16(graph) for graph in _graphs(model.graph))


def as_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computed in float32, with its float16 inputs and outputs kept."""
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    graph = converted.graph
    for sub in _graphs(graph):
        _tensors_as_float32(sub, top=sub is graph)
    _cast_inputs(graph)
    _cast_outputs(graph)
    return converted


def _graphs(graph: onnx.GraphProto):
    """``graph`` and every subgraph of its nodes' attributes, depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                yield from _graphs(sub)


def _graph_has_float16(graph: onnx.GraphProto) -> bool:
    infos = list(graph.input) + list(graph.output) + list(graph.value_info)
    return (any(t.data_type == FLOAT16 for t in graph.initializer)
            or any(i.type.tensor_type.elem_type == FLOAT16 for i in infos)
            or any(attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT16
                   or attr.name == "to" and attr.i == FLOAT16
                   for node in graph.node for attr in node.attribute))


def _float32_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    if tensor.data_type != FLOAT16:
        return tensor
    return onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor).astype("float32"), tensor.name)


def _tensors_as_float32(graph: onnx.GraphProto, top: bool) -> None:
    """Initializers, node attributes and value infos of one graph; the top graph's own inputs
    and outputs are left to :func:`_cast_inputs` / :func:`_cast_outputs`."""
    for index, tensor in enumerate(graph.initializer):
        graph.initializer[index].CopyFrom(_float32_tensor(tensor))
    for sparse in graph.sparse_initializer:
        sparse.values.CopyFrom(_float32_tensor(sparse.values))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                attr.t.CopyFrom(_float32_tensor(attr.t))
            elif attr.type == onnx.AttributeProto.INT and attr.i == FLOAT16 and (
                    attr.name == "to" and node.op_type == "Cast" or attr.name in _DTYPE_ATTRS):
                attr.i = FLOAT
    infos = list(graph.value_info) + ([] if top else list(graph.input) + list(graph.output))
    for info in infos:
        if info.type.tensor_type.elem_type == FLOAT16:
            info.type.tensor_type.elem_type = FLOAT


def _renamed_reads(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every node input of ``graph`` and its subgraphs that reads ``old`` reads ``new``."""
    for sub in _graphs(graph):
        for node in sub.node:
            for index, name in enumerate(node.input):
                if name == old:
                    node.input[index] = new


def _cast_inputs(graph: onnx.GraphProto) -> None:
    """A float16 graph input ``x`` (not an initializer) is read through ``Cast(x) -> x_float32``."""
    initializers = {t.name for t in graph.initializer}
    casts = []
    for inp in graph.input:
        if inp.type.tensor_type.elem_type == FLOAT16 and inp.name not in initializers:
            wide = f"{inp.name}_float32"
            _renamed_reads(graph, inp.name, wide)
            casts.append(onnx.helper.make_node("Cast", [inp.name], [wide], to=FLOAT, name=f"{inp.name}_as_float32"))
    for cast in reversed(casts):
        graph.node.insert(0, cast)


def _cast_outputs(graph: onnx.GraphProto) -> None:
    """A float16 graph output ``y``: its producer writes ``y_float32``, a last ``Cast`` writes ``y``."""
    for out in graph.output:
        if out.type.tensor_type.elem_type != FLOAT16:
            continue
        wide = f"{out.name}_float32"
        for node in graph.node:
            for index, name in enumerate(node.output):
                if name == out.name:
                    node.output[index] = wide
        _renamed_reads(graph, out.name, wide)
        graph.node.append(onnx.helper.make_node("Cast", [wide], [out.name], to=FLOAT16, name=f"{out.name}_as_float16"))


__all__ = ["as_float32", "has_float16"]
