"""ONNX files -> stage-A ModelGraph, with dynamic dims fixed by ``--input-shape``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.model_graph import ModelGraph, TensorSpec

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
            raise MpqError(f"input '{inp.name}' has an unsupported element type {ttype.elem_type}")
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


def _fmt(dims: list[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def _weight_owners(model: onnx.ModelProto) -> dict[str, str]:
    """Initializer name (as the Relax param is named) -> name of the node that consumes it."""
    owners: dict[str, str] = {}
    initializers = {init.name for init in model.graph.initializer}
    for index, node in enumerate(model.graph.node):
        node_name = node.name or f"{node.op_type}_{index}"
        for inp in node.input[1:]:
            if inp in initializers:
                owners.setdefault(inp.removeprefix("onnx::"), node_name)
    return owners


def from_onnx_model(model: onnx.ModelProto, name: str, shapes: dict[str, tuple[int, ...]], source: str = "") -> ModelGraph:
    """Import with static shapes; shape sub-graphs are folded by onnx shape inference + TVM."""
    from tvm.relax.frontend.onnx import from_onnx

    specs = resolve_input_specs(model, shapes)
    unsupported = _unsupported_ops(model)
    if unsupported:
        raise MpqError(f"model '{name}' uses ONNX ops TVM cannot import: {', '.join(sorted(unsupported))}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mod = from_onnx(
                model,
                shape_dict={s.name: list(s.shape) for s in specs},
                dtype_dict={s.name: s.dtype for s in specs},
                keep_params_in_input=True,
            )
        except Exception as err:
            raise MpqError(f"cannot import ONNX model '{name}': {str(err).strip().splitlines()[-1][:300]}") from None
    main = mod["main"]
    num_input = int(main.attrs["num_input"])
    param_vars = list(main.params)[num_input:]
    values = [np.asarray(p.numpy()) for p in main.attrs["params"]] if "params" in main.attrs else []
    params = {v.name: value for v, value in zip(param_vars, values)}
    return ModelGraph(name, mod, specs, params, _weight_owners(model), source)


def _unsupported_ops(model: onnx.ModelProto) -> set[str]:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    convert_map = _get_convert_map()
    return {node.op_type for node in model.graph.node if node.op_type not in convert_map}


def load_onnx(path: Path, shapes: dict[str, tuple[int, ...]]) -> ModelGraph:
    return from_onnx_model(read_onnx(path), path.stem, shapes, source=str(path))
