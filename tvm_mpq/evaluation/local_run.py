"""A precision config compiled by the integer compiler and run on this host, on a sample set.

The precision-pass benchmark and ``tvm-mpq eval --check-integer`` run configs this way;
``tvm-mpq sweep`` builds the same config for its target and runs it over RPC. All three score
the outputs with :func:`tvm_mpq.evaluation.fidelity.figures` against the same
:func:`~tvm_mpq.evaluation.fidelity.fp32_reference` on the same named sample set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.evaluation.sample_set import SampleSet
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.types import Outputs


@dataclass
class LocalRun:
    """The compiled model (``CompiledModel``: ``n_qdq``, ``stats``, ``mod``) and its outputs per sample."""

    compiled: Any
    outputs: Outputs


def run_config(graph: ModelGraph, config: PrecisionConfig | None, samples: SampleSet, stage: str = "A->C",
               simulate: bool = False) -> LocalRun:
    """Compile ``graph`` under ``config`` for this host (``simulate``: its QDQ simulation) and run
    every sample of ``samples``."""
    from tvm_mpq.compiler import compile_model

    compiled = compile_model(graph, config, stage=stage, simulate=simulate)
    return LocalRun(compiled, [compiled.run(feed) for feed in samples.feeds])
