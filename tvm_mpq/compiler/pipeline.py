"""Compile a model under a precision config into a deployable Relax executable.

Interface used by the CLI (``compile``), the sweep harness and the tutorials::

    cm = compile_model(graph, config, target)   # config None or all-fp32: the fp32 model
    cm.executable                               # tvm.relax.VMExecutable; main(*inputs)
    cm.export_library("model.so")               # weights are embedded (params bound)
    cm.n_qdq, cm.n_qdq_naive                    # quantize/dequantize borders left / per-layer

The pipeline (``stage="A->C"``, the default; QuantuneV2's sensitivity from stage A applied at
stage C) is a ``tvm.transform.Sequential``::

    BindParams -> FoldConstant -> FoldBatchNorm(int8 layers) -> FoldConstant -> CanonicalizeBindings
    -> DeadCodeElimination -> CorrectBias(the config's bias corrections, if any) -> LowerToInteger(plans)
    -> build_module (LegalizeOps, FuseOps, FuseTIR, tuning database, kernel schedules, weight
    prepacking, codegen: compiler/build.py)

``stage="A"`` applies the config per layer on the unfused graph (batch-norm left in fp32,
quantize/dequantize around every int8 layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from relay_passes.correct_bias import CorrectBias
from relay_passes.fold_batch_norm import FoldBatchNorm
from relay_passes.layer_keys import LayerKeys
from relay_passes.lower_to_integer import IntLayerPlan, LoweringStats, LowerToInteger
from tvm_mpq.compiler.build import TuningOptions, build_module
from tvm_mpq.compiler.validate import check_integer_config
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.errors import MpqError
from tvm_mpq.graph.layer_table import MAC_OPS, LayerTable, build_layer_table, iter_bindings
from tvm_mpq.runtime.executor import host_target

STAGES = ("A", "A->C", "C")


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

    def vm(self, device: tvm.runtime.Device | None = None) -> relax.VirtualMachine:
        """A VM on ``device`` (default: the host CPU)."""
        return relax.VirtualMachine(self.executable, device or tvm.cpu())

    def run(self, feed: dict[str, np.ndarray], vm: relax.VirtualMachine | None = None) -> list[np.ndarray]:
        """Run on the host with numpy inputs; flattened numpy outputs."""
        from tvm_mpq.runtime.executor import flatten_outputs

        self.graph.check_inputs(feed)
        vm = vm or self.vm()
        args = [tvm.runtime.tensor(np.ascontiguousarray(feed[s.name])) for s in self.graph.inputs]
        return flatten_outputs(vm["main"](*args))


def bind_params(graph: ModelGraph) -> tvm.IRModule:
    """``main`` with every parameter bound as a constant: it then takes only the inputs."""
    params = {name: tvm.runtime.tensor(np.ascontiguousarray(value)) for name, value in graph.params.items()}
    return relax.transform.BindParams("main", params)(graph.mod)


def integer_plans(table: LayerTable, config: PrecisionConfig) -> dict[int, IntLayerPlan]:
    """The precision pass's input: layer index -> plan, for every quantized layer."""
    plans = {}
    for layer in table:
        lp = config.layers[layer.name]
        if not lp.is_fp32:
            plans[layer.index] = IntLayerPlan(lp.act, lp.w_bits, layer.channel_axis)
    return plans


def preparation_passes(fold_layers: list[str], stage: str = "A->C") -> list[tvm.transform.Pass]:
    """The graph-level passes after ``BindParams`` that bring the model to its lowering stage:
    batch-norm folded into the int8 layers (stage C only), constants folded, aliases removed."""
    if stage not in STAGES:
        raise MpqError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
    passes: list[tvm.transform.Pass] = [relax.transform.FoldConstant()]
    if stage != "A" and fold_layers:
        passes += [FoldBatchNorm(fold_layers), relax.transform.FoldConstant()]
    return passes + [relax.transform.CanonicalizeBindings(), relax.transform.DeadCodeElimination()]


def mac_bindings(mod: tvm.IRModule) -> list[relax.Var]:
    """The MAC-op bindings of ``main`` in program order (the layer table's order)."""
    return [b.var for b in iter_bindings(mod["main"])
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op) and b.value.op.name in MAC_OPS]


def check_layer_order(table: LayerTable, mod: tvm.IRModule) -> None:
    """The precision pass finds layers by position; make sure preparation kept them in place
    (folding never adds, removes or reorders a MAC op)."""
    macs = mac_bindings(mod)
    if len(macs) != len(table):
        raise RuntimeError(f"{len(macs)} MAC ops after preparation, {len(table)} in the layer table")
    for layer, var in zip(table, macs):
        if tuple(int(d) for d in var.ty.shape) != layer.output_shape:
            raise RuntimeError(f"layer {layer.name}: MAC op order changed during preparation")


def bias_corrections(table: LayerTable, config: PrecisionConfig) -> dict[str, np.ndarray]:
    """The config's bias corrections of its quantized layers (layer name -> vector)."""
    return {layer.name: np.asarray(config.layers[layer.name].bias_correction, np.float32) for layer in table
            if not config.layers[layer.name].is_fp32 and config.layers[layer.name].bias_correction is not None}


def check_transforms(graph: ModelGraph, config: PrecisionConfig) -> None:
    """MpqError unless ``graph`` carries exactly the graph rewrites the config was made on
    (``provenance["graph_transforms"]``, e.g. cross-layer equalization)."""
    wanted = config.provenance.get("graph_transforms", {})
    if list(graph.transforms) != list(wanted):
        raise MpqError(f"the config was made on the model with graph rewrites {list(wanted) or 'none'}, this graph has "
                       f"{list(graph.transforms) or 'none'} (apply them with tvm_mpq.ptq.graph_for_config)")
    if dict(graph.transforms) != dict(wanted):
        raise MpqError("the graph's rewrites (e.g. equalization scales) differ from the ones the config was made with")


def prepared_module(graph: ModelGraph, table: LayerTable, config: PrecisionConfig | None,
                    stage: str = "A->C") -> tvm.IRModule:
    """``main`` as the precision pass receives it: parameters bound, batch-norm folded into the
    int8 layers (fused stages), constants folded, then the config's bias corrections added
    (:class:`~relay_passes.correct_bias.CorrectBias`). Call inside a ``PassContext``."""
    plans = integer_plans(table, config) if config is not None else {}
    fold = [layer.var for layer in table if layer.index in plans]
    prepared = tvm.transform.Sequential(preparation_passes(fold, stage), name="tvm_mpq.prepare")(bind_params(graph))
    check_layer_order(table, prepared)
    corrections = bias_corrections(table, config) if config is not None else {}
    if corrections:
        if stage == "A":
            raise MpqError("the config carries bias corrections, which are made for batch-norm folded layers: "
                           "compile it at stage A->C or C")
        prepared = CorrectBias(corrections, LayerKeys.for_main(table.names()))(prepared)
    return prepared


def lower_model(graph: ModelGraph, config: PrecisionConfig | None, stage: str = "A->C",
                simulate: bool = False, table: LayerTable | None = None) -> tuple[tvm.IRModule, dict]:
    """Bind, fold and apply ``config``: the IRModule handed to ``tvm.compile``, and counts."""
    mod, stats, _ = lower_with_stats(graph, config, stage, simulate, table)
    return mod, stats


def lower_with_stats(graph: ModelGraph, config: PrecisionConfig | None, stage: str = "A->C",
                     simulate: bool = False,
                     table: LayerTable | None = None) -> tuple[tvm.IRModule, dict, LoweringStats]:
    """:func:`lower_model` plus the precision pass's own :class:`LoweringStats`."""
    table = table or build_layer_table(graph)
    plans: dict[int, IntLayerPlan] = {}
    if config is not None:
        check_integer_config(config, table)
        check_transforms(graph, config)
        plans = integer_plans(table, config)
    with tvm.transform.PassContext(opt_level=3):
        prepared = prepared_module(graph, table, config, stage)
        lower = LowerToInteger(plans, fuse=stage != "A", simulate=simulate)
        mod = lower(prepared)
    s = lower.stats
    stats = {"stage": stage, "simulated": simulate, "int8_layers": s.n_layers, "n_quantize": s.n_quantize,
             "n_dequantize": s.n_dequantize, "n_requantize": s.n_requantize, "n_qdq": s.n_qdq,
             "n_qdq_naive": 2 * len(plans), "bias_folded": s.n_bias_folded, "layout_ops_on_int8": s.n_layout_on_int,
             "bias_corrected": len(bias_corrections(table, config)) if config is not None else 0}
    return mod, stats, s


def compile_model(graph: ModelGraph, config: PrecisionConfig | None = None,
                  target: tvm.target.Target | None = None, stage: str = "A->C",
                  simulate: bool = False, tuning: TuningOptions | None = None) -> CompiledModel:
    """Build ``graph`` for ``target`` (default: this host's ``llvm``) under ``config``.

    The config is checked against the model before anything is compiled (MpqError on unknown
    layers, missing quantizers, bit-widths the integer kernels cannot run). ``tuning``: the
    MetaSchedule options of :func:`tvm_mpq.compiler.build.build_module` (default: apply the
    target's tuning database and the kernel rules, tune nothing).
    """
    target = target or host_target()
    mod, stats = lower_model(graph, config, stage, simulate)
    executable, stats["build"] = build_module(mod, target, tuning)
    return CompiledModel(graph, config, target, mod, executable, stats["n_qdq"], stats["n_qdq_naive"], stats)
