"""The stage-A model every later step works on: a Relax IRModule plus its detached parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm


@dataclass(frozen=True)
class TensorSpec:
    """Name, static shape and dtype of one model input."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass
class ModelGraph:
    """A model at stage A (conv, batch-norm, relu still separate; nothing fused).

    ``mod["main"]`` takes the inputs (``inputs``) followed by the parameters in the order of
    ``params``; parameters are detached so passes can read and rewrite weights by name.
    ``layer_names`` maps a weight parameter's Relax name to the stable layer name the user sees
    (ONNX node name, or torch module path).
    """

    name: str
    mod: tvm.IRModule
    inputs: list[TensorSpec]
    params: dict[str, np.ndarray]
    layer_names: dict[str, str] = field(default_factory=dict)
    source: str = ""
    transforms: dict[str, Any] = field(default_factory=dict)
    """Function-preserving rewrites already applied to the imported model, in order: name (e.g.
    ``"cross_layer_equalization"``) -> what it did, as JSON data (e.g. the equalization scales).
    A precision config records them (``provenance["graph_transforms"]``); it is compiled and
    exported on a graph with the same ones (``tvm_mpq.ptq.graph_for_config``)."""

    def with_module(self, mod: tvm.IRModule) -> "ModelGraph":
        """The same model with ``main`` replaced (e.g. after a pass); parameters are shared."""
        return ModelGraph(self.name, mod, self.inputs, self.params, self.layer_names, self.source, self.transforms)

    def check_inputs(self, feed: dict[str, np.ndarray]) -> None:
        """Raise MpqError unless ``feed`` has every input with the exact shape."""
        from tvm_mpq.errors import MpqError

        for spec in self.inputs:
            if spec.name not in feed:
                raise MpqError(f"input '{spec.name}' missing from the data (have {sorted(feed)})")
            got = tuple(np.shape(feed[spec.name]))
            if got != spec.shape:
                raise MpqError(
                    f"input '{spec.name}' has shape {got}, the model expects {spec.shape}"
                )
