"""Compile a model under a precision config into a deployable Relax executable.

Interface used by the CLI (``compile``), the sweep harness and the tutorials::

    cm = compile_model(graph, config, target)   # config None or all-fp32: the fp32 model
    cm.executable                               # tvm.relax.VMExecutable; main(*inputs)
    cm.export_library("model.so")               # weights are embedded (params bound)
    cm.n_qdq, cm.n_qdq_naive                    # quantize/dequantize borders left / per-layer

The whole compile is one ``tvm.transform.Sequential`` (:func:`compile_pipeline`) that a user can
print, extend and reorder (:func:`insert_after`), then codegen. ``stage`` names the IR stage the
config is applied on (docs/design.md, "The IR stages, by name"; :mod:`tvm_mpq.types`): for
``stage="A->C"`` / ``"source->folded"`` (the default; QuantuneV2's sensitivity from the source
graph applied on the folded graph)::

    BindParams -> FoldConstant -> AnnotatePrecision(config)        (the decision, in the IR)
    -> FoldBatchNorm -> DecomposeOpsForInference -> FoldConstant      (a batch norm no conv
       is right before, e.g. after a ReLU, as a per-channel multiply and add: the int8 conv's
       epilogue computes it, no Q/DQ border)
    -> CanonicalizeBindings -> DeadCodeElimination
    -> CorrectBias                                   (the config's bias corrections, if it has any)
    -> RoundWeights                                  (the config's weight roundings, if it has any)
    -> LowerToInteger                                              (reads the annotations)
    -> build passes: graph passes, LegalizeOps, FuseOps, FuseTIR, ScheduleKernels, prepacking
       (:func:`tvm_mpq.compiler.build.build_passes`)

``stage="A"`` / ``"source"`` applies the config per layer on the source graph (batch-norm left in
fp32, quantize/dequantize around every int8 layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from relay_passes.annotate_precision import AnnotatePrecision
from relay_passes.correct_bias import CorrectBias, bias_corrected_layers
from relay_passes.fold_batch_norm import FoldBatchNorm
from relay_passes.lower_to_integer import LoweringTrace, LowerToInteger, lowering_borders, lowering_stats
from relay_passes.round_weights import RoundWeights
from relay_passes.sink_unit_squeezes import SinkUnitSqueezes
from relay_passes.te_elementwise import RecoverMinMax
from relay_passes.repeat_from_tile import RepeatFromTile
from relay_passes.te_layout import RecoverPad, RecoverTile
from tvm_mpq.compiler.build import TuningOptions, build_info, build_passes, codegen
from tvm_mpq.config.precision_config import LayerPrecision, PrecisionConfig
from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable, build_layer_table
from tvm_mpq.runtime.executor import host_target, host_tensor
from tvm_mpq.target_build.passes import cuda_graph_captures
from tvm_mpq.types import SOURCE, SOURCE_TO_FOLDED, parse_stage
LOWERING_PASS = "LowerToInteger"


@dataclass
class CompiledModel:
    """A built model: the executable, the lowered IRModule it came from and its counts."""

    graph: ModelGraph
    config: PrecisionConfig | None
    target: tvm.target.Target
    mod: tvm.IRModule
    """The module right after :class:`LowerToInteger` (integer ops, before legalization)."""
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
        args = [host_tensor(feed[s.name]) for s in self.graph.inputs]
        return flatten_outputs(vm["main"](*args))


def bind_params_pass(graph: ModelGraph) -> tvm.transform.Pass:
    """``BindParams`` of every parameter of ``graph``: ``main`` then takes only the inputs."""
    params = {name: host_tensor(value) for name, value in graph.params.items()}
    return relax.transform.BindParams("main", params)


def bind_params(graph: ModelGraph) -> tvm.IRModule:
    """``main`` with every parameter bound as a constant: it then takes only the inputs."""
    return bind_params_pass(graph)(graph.mod)


def fp32_config(graph: ModelGraph, table: LayerTable | None = None) -> PrecisionConfig:
    """Every layer of ``graph`` in fp32 (the fp32 model)."""
    table = table or build_layer_table(graph)
    return PrecisionConfig(graph.name, {layer.name: LayerPrecision(None, None) for layer in table})


def config_bias_corrections(config: PrecisionConfig) -> dict[str, np.ndarray]:
    """The config's bias corrections of its quantized layers (layer name -> vector)."""
    return {name: np.asarray(lp.bias_correction, np.float32) for name, lp in config.layers.items()
            if not lp.is_fp32 and lp.bias_correction is not None}


def config_weight_roundings(config: PrecisionConfig) -> dict[str, str]:
    """The config's weight roundings of its quantized layers (layer name -> encoded flip mask)."""
    return {name: lp.weight_rounding for name, lp in config.layers.items()
            if not lp.is_fp32 and lp.weight_rounding is not None}


def check_transforms(graph: ModelGraph, config: PrecisionConfig) -> None:
    """MpqError unless ``graph`` carries exactly the graph rewrites the config was made on
    (``provenance["graph_transforms"]``, e.g. cross-layer equalization)."""
    wanted = config.provenance.get("graph_transforms", {})
    if list(graph.transforms) != list(wanted):
        raise MpqError(f"the config was made on the model with graph rewrites {list(wanted) or 'none'}, this graph has "
                       f"{list(graph.transforms) or 'none'} (apply them with tvm_mpq.ptq.graph_for_config)")
    if dict(graph.transforms) != dict(wanted):
        raise MpqError("the graph's rewrites (e.g. equalization scales) differ from the ones the config was made with")


def frontend_recovery_passes() -> list[tvm.transform.Pass]:
    """What TVM's ONNX importer writes as opaque TE-built ``call_tir``, read back as the Relax ops
    every later pass understands: clips (:class:`RecoverMinMax`), ``auto_pad`` pads
    (:class:`~relay_passes.te_layout.RecoverPad`), tiles (:class:`~relay_passes.te_layout.RecoverTile`),
    and tf2onnx's unsqueeze-tile-reshape upsampling as one repeat
    (:class:`~relay_passes.repeat_from_tile.RepeatFromTile`)."""
    return [RecoverMinMax(), RecoverPad(), RecoverTile(), RepeatFromTile()]


def annotation_passes(graph: ModelGraph, config: PrecisionConfig | None, stage: str = SOURCE_TO_FOLDED,
                      table: LayerTable | None = None) -> list[tvm.transform.Pass]:
    """From the stage-A module to the annotated module the lowering reads: parameters bound,
    a frontend's TE-built ops back to Relax ops (:func:`frontend_recovery_passes`), the config's
    decision written into the IR, batch-norm folded into every conv (stage C: an int8 layer's
    weight is quantized after folding, an fp32 layer computes one conv + bias), constants
    folded, aliases and dead bindings removed, the config's bias corrections added
    (:class:`~relay_passes.correct_bias.CorrectBias`) and its weight roundings applied
    (:class:`~relay_passes.round_weights.RoundWeights`). MpqError (before any pass runs) when the
    config does not fit the model (its layers, or the graph rewrites it was made on)."""
    stage = parse_stage(stage)
    table = table or build_layer_table(graph)
    corrections: dict[str, np.ndarray] = {}
    roundings: dict[str, str] = {}
    if config is not None:
        check_transforms(graph, config)
        corrections = config_bias_corrections(config)
        roundings = config_weight_roundings(config)
        if (corrections or roundings) and stage == SOURCE:
            what = "bias corrections" if corrections else "weight roundings"
            raise MpqError(f"the config carries {what}, which are made for batch-norm folded layers: "
                           "compile it at stage source->folded (A->C) or folded (C)")
    passes: list[tvm.transform.Pass] = [bind_params_pass(graph), relax.transform.FoldConstant(),
                                        *frontend_recovery_passes(), AnnotatePrecision(config or fp32_config(graph, table), table)]
    if stage != SOURCE:
        passes += [SinkUnitSqueezes(),  # tf2onnx's conv1d: squeeze -> bias add -> relu, the squeeze moved last
                   FoldBatchNorm(), relax.transform.DecomposeOpsForInference(), relax.transform.FoldConstant()]
    passes += [relax.transform.CanonicalizeBindings(), relax.transform.DeadCodeElimination()]
    return passes + ([CorrectBias(corrections)] if corrections else []) + ([RoundWeights(roundings)] if roundings else [])


def precision_passes(graph: ModelGraph, config: PrecisionConfig | None, stage: str = SOURCE_TO_FOLDED,
                     simulate: bool = False, table: LayerTable | None = None,
                     trace: LoweringTrace | None = None) -> list[tvm.transform.Pass]:
    """:func:`annotation_passes`, then :class:`LowerToInteger` (``simulate``: QDQ in float32)."""
    return [*annotation_passes(graph, config, stage, table),
            LowerToInteger(fuse=parse_stage(stage) != SOURCE, simulate=simulate, trace=trace)]


def compile_pipeline(graph: ModelGraph, config: PrecisionConfig | None, target: tvm.target.Target | None = None,
                     stage: str = SOURCE_TO_FOLDED, simulate: bool = False, tuning: TuningOptions | None = None,
                     table: LayerTable | None = None) -> tvm.transform.Sequential:
    """The whole compile of ``graph`` under ``config`` for ``target`` as one Sequential, to be
    run on ``graph.mod`` (then :func:`~tvm_mpq.compiler.build.codegen`): the
    :func:`precision_passes`, then :func:`~tvm_mpq.compiler.build.build_passes`."""
    target = target or host_target()
    return tvm.transform.Sequential([*precision_passes(graph, config, stage, simulate, table),
                                     *build_passes(target, tuning)], name="tvm_mpq.compile")


def insert_after(pipeline: tvm.transform.Sequential, name: str, *passes: tvm.transform.Pass) -> tvm.transform.Sequential:
    """``pipeline`` with ``passes`` inserted after its (first) pass named ``name``."""
    names = [p.info.name for p in pipeline.passes]
    if name not in names:
        raise ValueError(f"no pass named {name!r} in {pipeline.info.name}: {', '.join(names)}")
    at = names.index(name) + 1
    new = [*pipeline.passes[:at], *passes, *pipeline.passes[at:]]
    return tvm.transform.Sequential(new, opt_level=pipeline.info.opt_level, name=pipeline.info.name)


@tvm.instrument.pass_instrument
class _KeepAfter:
    """Keeps the module after the last run of the pass named ``name``."""

    def __init__(self, pass_name: str):
        self.pass_name = pass_name
        self.mod: tvm.IRModule | None = None

    def run_after_pass(self, mod: tvm.IRModule, info: tvm.transform.PassInfo) -> None:
        if info.name == self.pass_name:
            self.mod = mod


def lowering_summary(mod: tvm.IRModule, stage: str, simulate: bool) -> dict:
    """The counts of the lowering written on ``mod`` (:func:`~relay_passes.lowering_stats`) as
    the ``stats`` dict of a compile, with every Q/DQ border left and the op that forced it
    (``borders``: ``{"kind", "tensor", "op"}``; ``borders_by_op``: ``"<kind> <op>"`` -> count)."""
    s = lowering_stats(mod)
    borders = [b.to_attr() for b in lowering_borders(mod)]
    by_op: dict[str, int] = {}
    for border in borders:
        key = f"{border['kind']} {border['op']}"
        by_op[key] = by_op.get(key, 0) + 1
    return {"stage": stage, "simulated": simulate, "int8_layers": s.n_layers, "n_quantize": s.n_quantize,
            "n_dequantize": s.n_dequantize, "n_requantize": s.n_requantize, "n_qdq": s.n_qdq,
            "n_qdq_naive": 2 * s.n_layers, "bias_folded": s.n_bias_folded, "layout_ops_on_int8": s.n_layout_on_int,
            "bias_corrected": len(bias_corrected_layers(mod)), "borders": borders, "borders_by_op": by_op}


def lower_model(graph: ModelGraph, config: PrecisionConfig | None, stage: str = SOURCE_TO_FOLDED,
                simulate: bool = False, table: LayerTable | None = None,
                trace: LoweringTrace | None = None) -> tuple[tvm.IRModule, dict]:
    """Run the :func:`precision_passes` on ``graph``: the lowered module handed to the build,
    and its counts (:func:`lowering_summary`)."""
    passes = precision_passes(graph, config, stage, simulate, table, trace)
    with tvm.transform.PassContext(opt_level=3, instruments=_outer_instruments()):
        mod = tvm.transform.Sequential(passes, name="tvm_mpq.precision")(graph.mod)
    return mod, lowering_summary(mod, stage, simulate)


def _outer_instruments() -> list:
    return list(tvm.transform.PassContext.current().instruments)


def compile_model(graph: ModelGraph, config: PrecisionConfig | None = None,
                  target: tvm.target.Target | None = None, stage: str = SOURCE_TO_FOLDED,
                  simulate: bool = False, tuning: TuningOptions | None = None,
                  pipeline: tvm.transform.Pass | None = None) -> CompiledModel:
    """Build ``graph`` for ``target`` (default: this host's ``llvm``) under ``config``.

    The config is checked against the model before anything is compiled (MpqError on unknown or
    missing layers); the lowering raises MpqError, naming the layer, for a precision the integer
    kernels cannot run. ``tuning``: the MetaSchedule options of
    :func:`tvm_mpq.compiler.build.build_passes` (default: apply the target's tuning database and
    the kernel rules, tune nothing). ``pipeline``: run this (e.g. :func:`compile_pipeline` with
    a pass of one's own inserted) instead of the default :func:`compile_pipeline`.
    """
    target = target or host_target()
    pipeline = pipeline or compile_pipeline(graph, config, target, stage, simulate, tuning)
    lowered = _KeepAfter(LOWERING_PASS)
    with target, tvm.transform.PassContext(opt_level=3, instruments=[*_outer_instruments(), lowered]):
        built = pipeline(graph.mod)
    mod = lowered.mod if lowered.mod is not None else built
    stats = lowering_summary(mod, stage, simulate)
    executable = codegen(built, target)
    stats["build"] = build_info(built, target)
    if str(target.kind.name) == "cuda":
        stats["build"]["cuda_graph_captures"] = cuda_graph_captures(executable)
    return CompiledModel(graph, config, target, mod, executable, stats["n_qdq"], stats["n_qdq_naive"], stats)
