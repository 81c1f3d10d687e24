"""Frontends: turn a model file (ONNX, ``torch.export``) into a stage-A :class:`ModelGraph`.

A zoo name or a file, whichever ``spec`` is: :func:`tvm_mpq.zoo.load_model` (the zoo sits above
the frontends: its models are imported through them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.model_graph import ModelGraph, TensorSpec

__all__ = ["ModelGraph", "TensorSpec", "check_fixed_shapes", "check_no_nan_params", "load_file", "parse_input_shapes"]


def parse_input_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``["x:1x3x224x224", ...]`` -> ``{"x": (1, 3, 224, 224)}``; an item may list several,
    comma-separated (``"ids:1x64,length:1"``: split where every part has its colon, so a name
    with a comma stays whole); MpqError on bad syntax."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in [part for entry in items or [] for part in _shape_items(entry)]:
        name, sep, dims = item.rpartition(":")
        try:
            parsed = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            parsed = ()
        if not sep or not name or not parsed or any(d <= 0 for d in parsed):
            raise MpqError(f"--input-shape '{item}' is not NAME:DIMS with positive dims, e.g. x:1x3x224x224")
        if name in shapes and shapes[name] != parsed:
            raise MpqError(f"--input-shape gives input '{name}' twice ({'x'.join(map(str, shapes[name]))} and "
                           f"{'x'.join(map(str, parsed))}): give it once")
        shapes[name] = parsed
    return shapes


def check_fixed_shapes(graph: ModelGraph, shapes: dict[str, tuple[int, ...]]) -> None:
    """MpqError unless every ``--input-shape`` names an input of ``graph`` and repeats its
    shape: a ``torch.export`` archive fixes its input shapes when it is exported."""
    inputs = {spec.name: spec.shape for spec in graph.inputs}
    for name, dims in shapes.items():
        if name not in inputs:
            raise MpqError(f"--input-shape names '{name}', but the model's inputs are {sorted(inputs)}")
        if tuple(dims) != tuple(inputs[name]):
            fixed = "x".join(map(str, inputs[name]))
            raise MpqError(f"--input-shape {name}:{'x'.join(map(str, dims))}, but the exported model fixes it to "
                           f"{fixed}; export it again with the shape you want")


def _shape_items(entry: str) -> list[str]:
    parts = entry.split(",")
    return parts if len(parts) > 1 and all(":" in part for part in parts) else [entry]


def load_file(spec: str, input_shapes: dict[str, tuple[int, ...]] | None = None) -> ModelGraph:
    """An ``.onnx`` file or a ``torch.export`` ``.pt2`` file -> ModelGraph.

    MpqError for a missing or unreadable file and for a model with NaN in a parameter."""
    graph = _import(spec, input_shapes or {})
    check_no_nan_params(graph)
    return graph


FILL_OPS = frozenset({"relax.where"})
"""Ops whose constant operand may hold NaN on purpose: the value a mask writes (caustic-nmr's
``Where(target_mask, prediction, NaN)`` marks the residues it does not predict)."""


def check_no_nan_params(graph: ModelGraph) -> None:
    """MpqError naming the first parameter (and its layer) that holds NaN: a corrupt or
    mis-exported model, which would otherwise fail deep in calibration or compilation. A
    parameter only :data:`FILL_OPS` read is a fill value, not a weight: NaN there is the model's."""
    readers: dict[str, set[str]] | None = None  # walked only when a parameter holds NaN
    for name, value in graph.params.items():
        if np.issubdtype(value.dtype, np.floating) and np.isnan(value).any():
            readers = _param_readers(graph) if readers is None else readers
            if readers.get(name) and readers[name] <= FILL_OPS:
                continue
            owner = graph.layer_names.get(name)
            raise MpqError(f"model '{graph.name}' has NaN values in parameter '{name}'"
                           f"{f' (layer {owner})' if owner else ''}; re-export the model from a healthy checkpoint")


def _param_readers(graph: ModelGraph) -> dict[str, set[str]]:
    """Parameter name -> the ops of ``main`` that take it as an operand."""
    from tvm import ir, relax

    main = graph.mod["main"]
    names = {param: param.name for param in main.params}
    readers: dict[str, set[str]] = {}

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, ir.Op):
            for arg in expr.args:
                if isinstance(arg, relax.Var) and arg in names:
                    readers.setdefault(names[arg], set()).add(str(expr.op.name))

    relax.analysis.post_order_visit(main.body, visit)
    return readers


def _import(spec: str, shapes: dict[str, tuple[int, ...]]) -> ModelGraph:
    path = Path(spec)
    if not path.exists():
        raise MpqError(f"model file '{spec}' does not exist")
    if path.is_dir():
        raise MpqError(f"model '{spec}' is a directory, expected an .onnx or .pt2 file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from tvm_mpq.frontends.onnx_frontend import load_onnx

        return load_onnx(path, shapes)
    if suffix in (".pt2", ".pt", ".pth"):
        from tvm_mpq.frontends.torch_frontend import load_pt2

        graph = load_pt2(path)
        check_fixed_shapes(graph, shapes)
        return graph
    raise MpqError(f"model file '{spec}' has unknown type '{suffix}' (expected .onnx or .pt2)")
