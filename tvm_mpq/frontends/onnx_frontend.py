"""ONNX files -> stage-A ModelGraph, with dynamic dims fixed by ``--input-shape``."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.shape_inference

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.model_graph import ModelGraph, TensorSpec
from tvm_mpq.frontends.onnx_attention import ATTENTION_OPS, attention_as_products
from tvm_mpq.frontends.onnx_dft import SPECTRAL_OPS, spectral_as_products
from tvm_mpq.frontends.onnx_float16 import as_float32, has_float16
from tvm_mpq.frontends.onnx_layer_names import layer_name
from tvm_mpq.frontends.onnx_qoperator import dequantized_operators
from tvm_mpq.frontends.onnx_recurrent import (LOOP_DOMAIN, RECURRENT_OPS, UNROLL_STEPS, dequantized_recurrences,
                                              expand_recurrent)

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.BOOL: "bool",
}


def read_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file; MpqError if it is missing or not ONNX."""
    if not path.is_file():
        raise MpqError(f"model file '{path}' does not exist")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:
        raise MpqError(f"'{path}' is not a valid ONNX model: {str(err).splitlines()[0][:200]}") from None
    if not model.graph.node:
        raise MpqError(f"'{path}' is not a valid ONNX model: it has no nodes")
    return model


def resolve_input_specs(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> list[TensorSpec]:
    """Static input specs: the file's dims, with every dynamic dim taken from ``shapes``."""
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    known = {i.name for i in graph_inputs}
    for name in shapes:
        if name not in known:
            raise MpqError(f"--input-shape names '{name}', but the model's inputs are {sorted(known)}")
    specs = []
    for inp in graph_inputs:
        ttype = inp.type.tensor_type
        dtype = _ONNX_DTYPES.get(ttype.elem_type)
        if dtype is None:
            kind = onnx.TensorProto.DataType.Name(ttype.elem_type).lower() if ttype.elem_type else "undefined"
            raise MpqError(f"input '{inp.name}' is {kind} (ONNX element type {ttype.elem_type}); the inputs tvm-mpq "
                           f"takes are {', '.join(sorted(set(_ONNX_DTYPES.values())))}")
        if any(d.HasField("dim_value") and d.dim_value == 0 for d in ttype.shape.dim):  # (-1: an exporter's dynamic)
            dims = "x".join(str(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else "?"
                            for d in ttype.shape.dim)
            raise MpqError(f"input '{inp.name}' has a dimension of size 0 ({dims}): an empty tensor, "
                           "nothing to quantize or run")
        file_dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in ttype.shape.dim]
        if inp.name in shapes:
            given = shapes[inp.name]
            if len(given) != len(file_dims):
                raise MpqError(
                    f"--input-shape {inp.name}: {len(given)} dims given, the model's input has "
                    f"{len(file_dims)} ({_fmt(file_dims)})"
                )
            for axis, (want, have) in enumerate(zip(given, file_dims)):
                if have is not None and want != have:
                    raise MpqError(
                        f"--input-shape {inp.name}: dim {axis} is {want}, but the model fixes it to "
                        f"{have} ({_fmt(file_dims)})"
                    )
            dims = tuple(given)
        elif any(d is None for d in file_dims):
            raise MpqError(
                f"input '{inp.name}' has dynamic dims ({_fmt(file_dims)}); give them with "
                f"--input-shape {inp.name}:" + "x".join(str(d or "N") for d in file_dims)
            )
        else:
            dims = tuple(file_dims)
        specs.append(TensorSpec(inp.name, tuple(int(d) for d in dims), dtype))
    return specs


def _imported_or_reason(model: onnx.ModelProto, specs: list[TensorSpec]):
    """``(module, None)``, or ``(None, the error's last line)`` with the error (and the
    half-built module its traceback holds) already released."""
    from tvm_mpq.frontends.onnx_importer import import_onnx

    try:
        return import_onnx(model, {s.name: list(s.shape) for s in specs}, {s.name: s.dtype for s in specs}), None
    except Exception as err:  # noqa: BLE001 - any importer failure becomes the one line
        return None, str(err).strip().splitlines()[-1][:300] if str(err).strip() else type(err).__name__


NATIVE_NOISE = ("BlockBuilder destroyed with remaining blocks",)
"""Lines TVM's C++ side writes to stderr when an import fails half-way (the builder of the
abandoned module is destroyed): the failure itself is the error line the user gets."""


@contextlib.contextmanager
def _importer_chatter_dropped():
    """TVM's ONNX importer prints ``Error converting operator ...`` to stdout before it raises,
    and its C++ side leaves :data:`NATIVE_NOISE` on stderr: both are dropped (the raised error
    becomes the one line), other stderr lines are passed on."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured, contextlib.redirect_stdout(io.StringIO()):
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            gc.collect()  # the abandoned builder is destroyed (and says so) while stderr is captured
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in NATIVE_NOISE):
                    sys.stderr.write(line)


def _fmt(dims: list[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def _weight_owners(model: onnx.ModelProto) -> dict[str, str]:
    """Initializer name (as the Relax param is named) -> the layer name of the node that consumes
    it (:func:`~tvm_mpq.frontends.onnx_layer_names.layer_name`: the node name, or the PyTorch
    module path the dynamo exporter recorded)."""
    owners: dict[str, str] = {}
    initializers = {init.name for init in model.graph.initializer}
    for index, node in enumerate(model.graph.node):
        for inp in node.input[1:]:
            if inp in initializers:
                owners.setdefault(inp.removeprefix("onnx::"), layer_name(node, index, inp))
    return owners


def from_onnx_model(model: onnx.ModelProto, name: str, shapes: dict[str, tuple[int, ...]], source: str = "",
                    unroll_steps: int = UNROLL_STEPS) -> ModelGraph:
    """Import with static shapes; shape sub-graphs are folded by onnx shape inference + TVM
    (recurrences over at most ``unroll_steps`` steps unrolled, a float16 model computed in
    float32: :func:`prepare_static`)."""
    from tvm_mpq.frontends.onnx_importer import unsupported_ops

    specs = resolve_input_specs(model, shapes)
    try:
        model = prepare_static(model, specs, unroll_steps)
    except MpqError:
        raise
    except Exception as err:
        raise MpqError(f"cannot import ONNX model '{name}': folding its shape sub-graphs failed: "
                       f"{str(err).strip().splitlines()[-1][:300] if str(err).strip() else type(err).__name__}") from None
    branches = [node for node in model.graph.node if node.op_type == "If"]
    if branches:  # those left after prepare_static branch on values only the input decides
        raise MpqError(f"model '{name}' branches on its input's values (ONNX If '{branches[0].name}' on "
                       f"'{branches[0].input[0]}'): data-dependent control flow is not supported")
    unsupported = unsupported_ops(model)
    if unsupported:
        raise MpqError(f"model '{name}' uses ONNX ops TVM cannot import: {', '.join(sorted(unsupported))}")
    with warnings.catch_warnings(), _importer_chatter_dropped():
        warnings.simplefilter("ignore")
        mod, failure = _imported_or_reason(model, specs)
    if failure is not None:
        raise MpqError(f"cannot import ONNX model '{name}': {failure}")
    main = mod["main"]
    num_input = int(main.attrs["num_input"])
    param_vars = list(main.params)[num_input:]
    values = [np.asarray(p.numpy()) for p in main.attrs["params"]] if "params" in main.attrs else []
    params = {v.name: value for v, value in zip(param_vars, values)}
    return ModelGraph(name, mod, specs, params, _weight_owners(model), source)


# Input positions that TVM's importer needs as compile-time constants (shapes, axes, bounds).
_CONST_POSITIONS: dict[str, set[int] | None] = {
    "Reshape": {1}, "Expand": {1}, "Tile": {1}, "ConstantOfShape": {0}, "Range": None,
    "Slice": {1, 2, 3, 4}, "Squeeze": {1}, "Unsqueeze": {1}, "Split": {1}, "Pad": {1, 2, 3},
    "Resize": {1, 2, 3}, "Upsample": {1}, "Clip": {1, 2}, "TopK": {1}, "OneHot": {1, 2},
    "ReduceSum": {1}, "ReduceMean": {1}, "ReduceMax": {1}, "ReduceMin": {1}, "ReduceProd": {1},
    "ReduceL2": {1}, "CumSum": {1}, "Gather": {1}, "GatherElements": {1}, "ScatterND": {1},
}
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
            "Bernoulli", "If", "Loop", "Scan", "SequenceConstruct"}
_MAX_FOLD_ELEMENTS = 1 << 24
_MAX_INFER_CONST = 4096  # larger constants enter shape inference as typed inputs only
_FOLD_ROUNDS = 8


def prepare_static(model: onnx.ModelProto, specs: list[TensorSpec], unroll_steps: int = UNROLL_STEPS) -> onnx.ModelProto:
    """A copy of ``model`` that TVM's importer takes: static shapes, no shape sub-graphs.

    0. A float16 model is computed in float32, its inputs and outputs still float16
       (:func:`~tvm_mpq.frontends.onnx_float16.as_float32`: the quantizers and kernels take
       float32 real values).
    1. The graph inputs get the static ``specs`` shapes (an initializer also listed as an input,
       as IR < 4 writes every weight, is a weight, not an input) and onnx shape inference runs.
    2. Constant sub-graphs are evaluated with ``onnx.reference`` (``Shape``/``Size`` of tensors
       whose shape is now static count as constants), repeated until nothing changes, so
       exporter-made ``Shape -> Slice -> Concat -> Reshape`` chains become constants.
    3. Float tensors of rank >= 1 that are not consumed as shapes/axes/bounds (initializers, and
       weights of more than one element written as ``Constant`` nodes, as paddle2onnx does)
       become initializers, so they are detached, named parameters; every other constant,
       scalars included, becomes a ``Constant`` node with its own rank (TVM then sees shapes and
       axes as compile-time values).
    4. An ``If`` whose condition is now a constant (a branch on an input's static length, as
       pyannote's segmentation export has) is replaced by the branch it takes
       (:func:`_inline_if`); TVM's importer takes no ``If``.
    5. LSTM / GRU / RNN nodes, which TVM's importer lacks, are unrolled over their now static
       sequence length, or over more than ``unroll_steps`` steps become their input projections
       and one ``Recurrence`` loop node (:mod:`tvm_mpq.frontends.onnx_recurrent`); onnxruntime's
       ``DynamicQuantizeLSTM`` (contrib) is first made the float ``LSTM`` it quantizes
       (:func:`~tvm_mpq.frontends.onnx_recurrent.dequantized_recurrences`); operator-format
       quantized nodes (``QLinearConv``, ``QGemm``, ...) become their QDQ form
       (:func:`~tvm_mpq.frontends.onnx_qoperator.dequantized_operators`).
    6. Standard ``Attention`` nodes (opset 23), which TVM's importer takes for onnxruntime's
       contrib op of that name, become their products and softmax
       (:func:`~tvm_mpq.frontends.onnx_attention.attention_as_products`).
    7. ``DFT`` / ``STFT`` nodes, which TVM's importer lacks, become one ``MatMul`` by their
       cosine / sine table / one strided ``Conv`` by the windowed table
       (:func:`~tvm_mpq.frontends.onnx_dft.spectral_as_products`; a layer of the table each).
    """
    if has_float16(model):
        model_copy = as_float32(model)
    else:
        model_copy = onnx.ModelProto()
        model_copy.CopyFrom(model)
    graph = model_copy.graph
    constants = {init.name for init in graph.initializer}
    listed = [i for i in graph.input if i.name not in constants]  # (IR < 4 lists initializers as inputs too)
    del graph.input[:]
    graph.input.extend(listed)
    static = {s.name: s.shape for s in specs}
    for inp in graph.input:
        if inp.name in static:
            dims = inp.type.tensor_type.shape.dim
            for dim, value in zip(dims, static[inp.name]):
                dim.Clear()
                dim.dim_value = int(value)
    opset = next((o.version for o in model_copy.opset_import if o.domain in ("", "ai.onnx")), 13)
    from_initializers = {init.name for init in graph.initializer}
    values = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    nodes = dequantized_recurrences(list(graph.node), values)  # onnxruntime's int8 LSTMs as float ones
    nodes = dequantized_operators(nodes, values)  # QLinearConv, QGemm, ...: their QDQ form
    del graph.node[:]  # nodes and values live outside the proto until _rebuild
    del graph.initializer[:]
    for _ in range(_FOLD_ROUNDS):
        shapes = _static_shapes(model_copy, nodes, values)
        remaining, folded = _fold_pass(nodes, values, shapes, opset)
        nodes = remaining
        if not folded:
            break
    if any(node.op_type in ATTENTION_OPS and node.domain in ("", "ai.onnx") for node in nodes):  # (TVM: contrib only)
        types: dict[str, int] = {}
        shapes = _static_shapes(model_copy, nodes, values, types)
        nodes = attention_as_products(nodes, values, shapes, types)
    if any(node.op_type in SPECTRAL_OPS for node in nodes):  # TVM imports no DFT / STFT
        nodes = spectral_as_products(nodes, values, _static_shapes(model_copy, nodes, values), opset)
    if any(node.op_type in RECURRENT_OPS for node in nodes):  # TVM imports no LSTM / GRU / RNN
        nodes = expand_recurrent(nodes, values, _static_shapes(model_copy, nodes, values), unroll_steps)
    rebuilt = _rebuild(model_copy, nodes, values, from_initializers)
    if any(node.domain == LOOP_DOMAIN for node in nodes):
        rebuilt.opset_import.append(onnx.helper.make_opsetid(LOOP_DOMAIN, 1))
    return rebuilt


def _static_shapes(model: onnx.ModelProto, nodes: list, values: dict[str, np.ndarray],
                   types: dict[str, int] | None = None) -> dict[str, tuple[int, ...]]:
    """Static shapes of every tensor onnx shape inference can resolve for the current nodes
    (and, into ``types`` when given, the element type of every tensor it typed)."""
    trial = onnx.ModelProto()
    trial.CopyFrom(model)
    del trial.graph.node[:]
    trial.graph.node.extend(nodes)
    del trial.graph.initializer[:]
    del trial.graph.value_info[:]
    graph_inputs = {i.name for i in trial.graph.input}
    for name, value in values.items():
        value = np.asarray(value)
        if value.size <= _MAX_INFER_CONST:  # shape inference may need the value itself
            trial.graph.initializer.append(onnx.numpy_helper.from_array(value, name))
        elif name not in graph_inputs:  # only the shape matters; keeps the proto small
            elem = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
            trial.graph.input.append(onnx.helper.make_tensor_value_info(name, elem, value.shape))
    for out in trial.graph.output:
        out.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(trial, data_prop=True)
    except Exception:  # e.g. custom-domain ops: fold what is foldable without inferred shapes
        inferred = trial
    shapes: dict[str, tuple[int, ...]] = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        ttype = info.type.tensor_type
        if types is not None and ttype.elem_type:
            types[info.name] = ttype.elem_type
        if not ttype.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
        if all(d >= 0 for d in dims):
            shapes[info.name] = tuple(dims)
    return shapes


def _fold_pass(nodes: list, values: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
               opset: int) -> tuple[list, bool]:
    """Evaluate every node whose inputs are known; returns the nodes left and whether any folded."""
    from onnx.reference import ReferenceEvaluator

    remaining, folded = [], False
    names = {o for n in nodes for o in n.output} | set(values) | set(shapes)
    for node in nodes:
        value = None
        if node.op_type == "If" and node.domain in ("", "ai.onnx") and node.input[0] in values:
            inlined = _inline_if(node, values, taken=names)
            names |= {o for n in inlined for o in n.output}
            remaining.extend(inlined)
            folded = True
            continue
        if node.domain not in ("", "ai.onnx") or node.op_type in _NO_FOLD:
            remaining.append(node)
            continue
        if node.op_type in ("Shape", "Size") and node.input[0] in shapes:
            shape = np.array(shapes[node.input[0]], dtype=np.int64)
            if node.op_type == "Size":
                value = [np.array(int(np.prod(shape)), dtype=np.int64)]
            else:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                value = [shape[attrs.get("start", 0):attrs.get("end", len(shape))]]
        elif all(not i or i in values for i in node.input):
            if any(np.asarray(values[i]).size > _MAX_FOLD_ELEMENTS for i in node.input if i):
                remaining.append(node)
                continue
            feeds = {i: values[i] for i in node.input if i}
            try:
                value = ReferenceEvaluator(node, opsets={"": opset}).run(None, feeds)
            except Exception:  # an op onnx.reference lacks: leave it to TVM
                value = _fold_axes_attribute(node, feeds)
        if value is None or any(np.asarray(v).size > _MAX_FOLD_ELEMENTS for v in value):
            remaining.append(node)
            continue
        for out, v in zip(node.output, value):
            if out:
                values[out] = np.asarray(v)
        folded = True
    return remaining, folded


def _inline_if(node: onnx.NodeProto, values: dict[str, np.ndarray], taken: set[str]) -> list[onnx.NodeProto]:
    """The nodes of the branch a constant-condition ``If`` takes, wired to the ``If``'s outputs.

    The branch's initializers join ``values``; names it defines inside are prefixed with the
    ``If``'s name where they would clash with a name of the outer graph (``taken``); it reads
    outer tensors by their own names. Each branch output reaches the ``If``'s output through an
    ``Identity`` (TVM imports it as no op)."""
    branch_name = "then_branch" if bool(np.asarray(values[node.input[0]]).reshape(-1)[0]) else "else_branch"
    branch = next(onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == branch_name)
    defined = {init.name for init in branch.initializer} | {o for n in branch.node for o in n.output if o}
    prefix = f"{node.name or 'If'}/{branch_name}/"
    renamed = {name: (prefix + name if name in taken else name) for name in defined}
    for init in branch.initializer:
        values[renamed[init.name]] = onnx.numpy_helper.to_array(init)
    inlined = []
    for inner in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(inner)
        copy.input[:] = [renamed.get(i, i) for i in inner.input]
        copy.output[:] = [renamed.get(o, o) for o in inner.output]
        if copy.name:
            copy.name = prefix + copy.name
        inlined.append(copy)
    for branch_out, out in zip(branch.output, node.output):
        if out:
            inlined.append(onnx.helper.make_node("Identity", [renamed.get(branch_out.name, branch_out.name)], [out],
                                                 name=f"{prefix}{out}"))
    return inlined


def _fold_axes_attribute(node: onnx.NodeProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    """``Unsqueeze`` / ``Squeeze`` with the ``axes`` attribute (opset < 13), which
    ``onnx.reference`` evaluates with its opset-13 kernels and rejects (ddddocr's CRNN builds
    its LSTM input's shape from them)."""
    axes = next((list(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name == "axes"), None)
    if node.op_type not in ("Unsqueeze", "Squeeze") or axes is None or len(feeds) != 1:
        return None
    value = np.asarray(next(iter(feeds.values())))
    if node.op_type == "Squeeze":
        return [np.squeeze(value, axis=tuple(axes))]
    rank = value.ndim + len(axes)
    return [np.expand_dims(value, axis=tuple(a % rank for a in axes))]


def _rebuild(model: onnx.ModelProto, nodes: list, values: dict[str, np.ndarray], from_initializers: set[str]) -> onnx.ModelProto:
    """Put the known values back: weights as initializers, shapes/axes as Constant nodes."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    const_use: set[str] = set()
    used: set[str] = set()
    for node in nodes:
        positions = _CONST_POSITIONS.get(node.op_type, set())
        for index, name in enumerate(node.input):
            used.add(name)
            if positions is None or index in positions:
                const_use.add(name)
    initializers, constants = [], []
    for name, value in values.items():
        if name not in used and name not in outputs:
            continue
        value = np.asarray(value)
        is_float = value.dtype.kind == "f"
        # A 0-d value is never a weight: it stays a scalar constant (a parameter of rank 0 would
        # reach the runtime through numpy helpers that promote it to rank 1).
        as_param = (is_float and name not in const_use and value.ndim > 0
                    and (name in from_initializers or value.size > 1))
        tensor = onnx.numpy_helper.from_array(value, name)
        if as_param:
            initializers.append(tensor)
        else:
            constants.append(onnx.helper.make_node("Constant", [], [name], value=tensor, name=f"const_{name}"))
    for name in outputs & values.keys():  # a constant graph output still needs a node
        if not any(c.output[0] == name for c in constants):
            initializers = [i for i in initializers if i.name != name]
            constants.append(onnx.helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(values[name], name)))
    del graph.node[:]
    graph.node.extend(constants + nodes)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    kept_inputs = [i for i in graph.input if i.name not in values or i.name in {t.name for t in initializers}]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    del graph.value_info[:]
    return model


def load_onnx(path: Path, shapes: dict[str, tuple[int, ...]]) -> ModelGraph:
    return from_onnx_model(read_onnx(path), path.stem, shapes, source=str(path))
