"""PyTorch models (``nn.Module`` or a ``torch.export`` ``.pt2`` file) -> stage-A ModelGraph."""

from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from tvm.relax.frontend.torch import from_exported_program

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.model_graph import ModelGraph, TensorSpec


def _layer_name_from_target(target: str) -> str:
    """``features.0.weight`` -> ``features.0`` (the module path is the stable layer name)."""
    return target.rsplit(".", 1)[0] if "." in target else target


def from_exported(ep: "torch.export.ExportedProgram", name: str, source: str = "") -> ModelGraph:
    """Import an ExportedProgram; batch-norm stays a separate op (stage A)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mod = from_exported_program(ep, keep_params_as_input=True)
        except Exception as err:  # the frontend raises bare errors for unsupported ops
            raise MpqError(f"cannot import PyTorch model '{name}': {str(err).splitlines()[0]}") from None
    main = mod["main"]
    values = [np.asarray(p.numpy()) for p in main.attrs["params"]] if "params" in main.attrs else []
    num_input = int(main.attrs["num_input"])
    relax_params = list(main.params)
    input_vars, param_vars = relax_params[:num_input], relax_params[num_input:]
    params = {v.name: value for v, value in zip(param_vars, values)}
    # torch.export names a parameter "p_<path with _>"; recover the dotted module path.
    targets = {
        spec.arg.name: spec.target
        for spec in ep.graph_signature.input_specs
        if spec.target is not None and hasattr(spec.arg, "name")
    }
    layer_names = {
        v.name: _layer_name_from_target(targets[v.name])
        for v in param_vars
        if v.name in targets
    }
    inputs = [
        TensorSpec(v.name, tuple(int(d) for d in v.ty.shape), str(v.ty.dtype))
        for v in input_vars
    ]
    return ModelGraph(name, mod, inputs, params, layer_names, source)


def from_module(module: torch.nn.Module, example: dict[str, np.ndarray], name: str) -> ModelGraph:
    """Export ``module`` (eval mode) with ``example`` inputs (keyword order = forward order)."""
    module = module.eval()
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in example.values())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(module, args)
    graph = from_exported(ep, name, source=f"torch:{type(module).__name__}")
    # Name the Relax inputs after the caller's keys, so feeds use the same names.
    renamed = [TensorSpec(k, s.shape, s.dtype) for k, s in zip(example, graph.inputs)]
    graph.inputs = renamed
    return graph


def _is_torch_save(path: Path) -> bool:
    """Whether the zip archive at ``path`` is what ``torch.save`` writes (``<name>/data.pkl``, a
    pickle: a state_dict or a whole module), with none of an export archive's program files."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    pickled = any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names)
    return pickled and not any("/models/" in n or n.endswith("archive_format") for n in names)


def load_pt2(path: Path) -> ModelGraph:
    """Load a ``torch.export.save`` archive (MpqError if it is not one)."""
    if not zipfile.is_zipfile(path):
        raise MpqError(f"'{path}' is not a readable torch.export (.pt2) archive: not a zip file")
    if _is_torch_save(path):
        raise MpqError(f"'{path}' is a torch.save file (weights or a pickled module), not a model graph: save the "
                       "model with torch.export.save(torch.export.export(model, example_inputs), 'model.pt2'), "
                       "or export it to ONNX")
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.ERROR)  # torch logs a traceback before it raises for a bad archive
    try:
        ep = torch.export.load(str(path))
    except Exception as err:
        raise MpqError(f"'{path}' is not a readable torch.export (.pt2) archive: {str(err).splitlines()[0]}") from None
    finally:
        export_log.setLevel(level)
    return from_exported(ep, path.stem, source=str(path))
