"""Compile a model under a precision config into a deployable Relax executable.

Interface used by the CLI (``compile``), the sweep harness and the tutorials::

    cm = compile_model(graph, config, target)   # config None or all-fp32: the fp32 model
    cm.executable                               # tvm.relax.VMExecutable; main(*inputs)
    cm.export_library("model.so")               # weights are embedded (params bound)

The weights are bound as constants, so ``main`` takes only the model's inputs and the library
is self-contained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.runtime.executor import host_target


@dataclass
class CompiledModel:
    """A built model: the executable, the final IRModule it came from and its counts."""

    graph: ModelGraph
    config: PrecisionConfig | None
    target: tvm.target.Target
    mod: tvm.IRModule
    executable: relax.VMExecutable
    n_qdq: int = 0
    n_qdq_naive: int = 0
    stats: dict = field(default_factory=dict)

    def export_library(self, path: str, fcompile=None) -> None:
        """Write the executable as a shared library (``fcompile`` for cross compilation)."""
        if fcompile is None:
            self.executable.export_library(str(path))
        else:
            self.executable.export_library(str(path), fcompile=fcompile)


def bind_params(graph: ModelGraph) -> tvm.IRModule:
    """``main`` with every parameter bound as a constant: it then takes only the inputs."""
    params = {name: tvm.runtime.tensor(np.ascontiguousarray(value)) for name, value in graph.params.items()}
    return relax.transform.BindParams("main", params)(graph.mod)


def compile_model(graph: ModelGraph, config: PrecisionConfig | None = None,
                  target: tvm.target.Target | None = None) -> CompiledModel:
    """Build ``graph`` for ``target`` (default: this host's ``llvm``) under ``config``."""
    target = target or host_target()
    mod = bind_params(graph)
    executable = tvm.compile(mod, target=target)
    return CompiledModel(graph, config, target, mod, executable)
