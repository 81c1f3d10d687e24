"""A model by name: a zoo model, or else a model file through the frontends."""

from __future__ import annotations

from pathlib import Path

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends import check_no_nan_params, load_file
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.weight_checks import check_layer_weights
from tvm_mpq.zoo.registry import get, names


def load_model(spec: str, input_shapes: dict[str, tuple[int, ...]] | None = None) -> ModelGraph:
    """A zoo name, an ``.onnx`` file or a ``torch.export`` ``.pt2`` file -> ModelGraph.

    MpqError for a missing or unreadable file, for a model with NaN in a parameter and for one
    whose layer weights hold Inf or are float16 (:func:`check_layer_weights`). Its gathers clamp
    their indices (:class:`relay_passes.take_in_bounds.TakeInBounds`: every build of it, the
    analysis's included, reads within its tables)."""
    if spec in names():
        graph = get(spec).load_graph(input_shapes) if input_shapes else get(spec).load_graph()
        check_no_nan_params(graph)
        return _in_bounds(graph)
    if not Path(spec).exists():
        raise MpqError(f"model '{spec}' is neither a file nor a zoo model (zoo: {', '.join(names())})")
    graph = load_file(spec, input_shapes)
    check_layer_weights(graph)
    return _in_bounds(graph)


def _in_bounds(graph: ModelGraph) -> ModelGraph:
    from relay_passes.take_in_bounds import TakeInBounds

    return graph.with_module(TakeInBounds()(graph.mod))
