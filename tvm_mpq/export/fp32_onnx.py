"""The fp32 ONNX model an export starts from: the ONNX file itself, or a PyTorch model exported.

* ONNX models (files, ONNX zoo models): the file, with the same static shapes and folded shape
  sub-graphs the TVM import used (:func:`tvm_mpq.frontends.onnx_frontend.prepare_static`; a
  long recurrence's loop node as the standard node it computes,
  :func:`tvm_mpq.frontends.onnx_recurrent.standard_recurrences`).
* PyTorch models (``nn.Module`` zoo models, ``.pt2`` archives): ``torch.onnx.export`` with the
  TorchScript exporter (``dynamo=False``; the dynamo exporter needs ``onnxscript``, which is not a
  dependency). Zoo models build their module inside ``build_graph``; :func:`load_with_source`
  records the module handed to :func:`tvm_mpq.frontends.torch_frontend.from_module` so the ONNX
  comes from the very module (and weights) the TVM graph was imported from.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Iterator, Union

import onnx

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.model_graph import ModelGraph

OPSET = 17
"""Opset of ONNX written from PyTorch (per-channel DequantizeLinear needs >= 13)."""

Source = Union[onnx.ModelProto, str, Path, "torch.nn.Module", None]  # noqa: F821


@contextlib.contextmanager
def recording_sources() -> Iterator[dict[str, object]]:
    """Context manager: load models inside it (``load_model``, ``load_model_and_calibration``);
    the yielded dict then maps each PyTorch model's name to the ``nn.Module`` that
    :func:`~tvm_mpq.frontends.torch_frontend.from_module` imported it from (pass it as ``source``
    to the export)."""
    import tvm_mpq.frontends.torch_frontend as torch_frontend

    recorded: dict[str, object] = {}
    original = torch_frontend.from_module

    def recording(module, example, name):
        recorded[name] = module
        return original(module, example, name)

    torch_frontend.from_module = recording
    try:
        yield recorded
    finally:
        torch_frontend.from_module = original


def load_with_source(spec: str, shapes: dict[str, tuple[int, ...]] | None = None) -> tuple[ModelGraph, onnx.ModelProto]:
    """A model spec (zoo name, ``.onnx``, ``.pt2``) -> its stage-A graph and fp32 ONNX model."""
    from tvm_mpq.zoo import load_model

    with recording_sources() as recorded:
        graph = load_model(spec, shapes)
    return graph, fp32_onnx(graph, recorded.get(graph.name))


def fp32_onnx(graph: ModelGraph, source: Source = None) -> onnx.ModelProto:
    """The fp32 ONNX model of ``graph``: from ``source`` (an ONNX model or file, or the
    ``torch.nn.Module`` the graph was imported from), else from ``graph.source`` (an ``.onnx``
    or ``.pt2`` file). MpqError when there is none or the PyTorch export fails."""
    if source is None:
        origin = graph.source
        if origin and Path(origin).suffix.lower() == ".onnx" and Path(origin).is_file():
            source = Path(origin)
        elif origin and Path(origin).suffix.lower() in (".pt2", ".pt", ".pth") and Path(origin).is_file():
            source = _load_pt2_module(Path(origin))
        else:
            raise MpqError(f"model '{graph.name}' ({origin or 'no source'}): no fp32 ONNX or PyTorch module to "
                           "export from; pass the zoo name or the model file, or give the source module")
    if isinstance(source, (str, Path)):
        from tvm_mpq.frontends.onnx_frontend import read_onnx

        source = read_onnx(Path(source))
    if isinstance(source, onnx.ModelProto):
        from tvm_mpq.frontends.onnx_frontend import prepare_static
        from tvm_mpq.frontends.onnx_recurrent import standard_recurrences

        try:  # a recurrence TVM runs as one loop kernel is written back as the standard ONNX node
            return standard_recurrences(prepare_static(source, graph.inputs))
        except MpqError:
            raise
        except Exception as err:
            raise MpqError(f"cannot prepare the ONNX model of '{graph.name}': {str(err).splitlines()[0][:200]}") from None
    return torch_to_onnx(source, graph)


def _load_pt2_module(path: Path):
    import torch

    class Traced(torch.nn.Module):
        """torch.export's unlifted module, with train()/eval() as no-ops (it refuses them and
        the TorchScript exporter calls them; the program is already traced for inference)."""

        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def train(self, mode: bool = True) -> "Traced":
            return self

        def forward(self, *args):
            return self.inner(*args)

    try:
        return Traced(torch.export.load(str(path)).module())
    except Exception as err:
        raise MpqError(f"'{path}' is not a readable torch.export (.pt2) archive: {str(err).splitlines()[0]}") from None


def torch_to_onnx(module, graph: ModelGraph) -> onnx.ModelProto:
    """``torch.onnx.export`` (TorchScript exporter, eval mode, constant folding, opset
    :data:`OPSET`) with zero inputs of ``graph``'s input shapes and names."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise MpqError(f"model '{graph.name}': the export source must be an ONNX model or a torch.nn.Module, "
                       f"not {type(module).__name__}")
    args = tuple(torch.zeros(spec.shape, dtype=getattr(torch, spec.dtype)) for spec in graph.inputs)
    module.eval()
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, buffer, dynamo=False, opset_version=OPSET,
                              input_names=[spec.name for spec in graph.inputs], do_constant_folding=True)
    except TypeError as err:
        raise MpqError(f"cannot export '{graph.name}' to ONNX: torch {torch.__version__} has no TorchScript ONNX "
                       f"exporter (torch.onnx.export(dynamo=False): {err}); the dynamo exporter needs onnxscript") from None
    except Exception as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise MpqError(f"cannot export '{graph.name}' to ONNX with torch {torch.__version__}'s TorchScript "
                       f"exporter: {first}") from None
    return onnx.load_from_string(buffer.getvalue())


def input_feed_names(model: onnx.ModelProto) -> list[str]:
    """The graph inputs of ``model`` that are not initializers (what a runtime feeds)."""
    initializers = {init.name for init in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


__all__ = ["OPSET", "fp32_onnx", "input_feed_names", "load_with_source", "recording_sources", "torch_to_onnx"]
