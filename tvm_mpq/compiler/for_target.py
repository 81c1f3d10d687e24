"""Compile for a deployment target: its toolchain checked, its build context around ``compile_model``.

A :class:`targets.base.DeployTarget` knows its TVM target, its toolchain and the context its
build needs (the CUDA target's options); the compiler sits above the targets, so the one call
that puts them together is here, not on the target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tvm_mpq.compiler.build import TuningOptions
from tvm_mpq.compiler.pipeline import CompiledModel, compile_model
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.types import SOURCE_TO_FOLDED

if TYPE_CHECKING:
    from targets.base import DeployTarget


def compile_for_target(deploy: DeployTarget, graph: ModelGraph, config: PrecisionConfig | None = None,
                       stage: str = SOURCE_TO_FOLDED, tuning: TuningOptions | None = None) -> CompiledModel:
    """``compile_model`` for ``deploy``: MpqError naming the fix when its toolchain is missing,
    then the build in ``deploy.build_context()`` for ``deploy.tvm_target``."""
    deploy.check_toolchain()
    with deploy.build_context():
        return compile_model(graph, config, deploy.tvm_target, stage=stage, tuning=tuning)
