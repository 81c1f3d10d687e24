"""Precision configs of a sweep's points: ONE analysis per method, then one config per point.

Ranking methods go through :func:`~tvm_mpq.api.config_for_rate` (the analysis
report is passed back in for every further rate). Bit-width methods contribute each of their own
assignments that the integer kernels can run (weights and activations at most 8 bits); the
others (e.g. Pandey's W8A16) are skipped with a note.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tvm_mpq.calibration import CalibrationCache
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.sensitivity import EvalData
from tvm_mpq.sweep.plan import PointSpec, SweepOptions, is_bitwidth_method, rate_points
from tvm_mpq.types import Feed, measured_on


@dataclass
class MethodAnalysis:
    """One method's analysis: the report's summary for the sweep report, and what was skipped."""

    method: str
    seconds: float
    n_layers: int
    inference_passes: int
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """``{"method", "seconds", "n_layers", ...}`` (the report's ``analysis`` object)."""
        d = {"method": self.method, "seconds": self.seconds, "n_layers": self.n_layers,
             "inference_passes": self.inference_passes}
        if self.skipped:
            d["skipped_allocations"] = self.skipped
        return d


def analysis_eval_data(model: str) -> tuple[EvalData | None, str]:
    """Labelled samples and task a method's own task metric reads (``top1``), as ``tvm-mpq
    analyze`` passes them: ``(None, "generic")`` for model files."""
    from tvm_mpq import zoo

    if model not in zoo.names():
        return None, "generic"
    entry = zoo.get(model)
    return (EvalData(*entry.labelled(None)) if entry.labelled else None), entry.task


def method_configs(graph: ModelGraph, feeds: list[Feed], method: str, options: SweepOptions,
                   log: Callable[[str], None] = print) -> tuple[MethodAnalysis, Iterator[tuple[PointSpec, PrecisionConfig]]]:
    """Analyze ``graph`` with ``method`` once; return its summary and the (point, config) pairs.

    The configs are built lazily (a config per point, as the sweep reaches it).
    """
    cache = CalibrationCache(options.cache_dir)
    eval_data, task = analysis_eval_data(options.model)
    if is_bitwidth_method(method):
        return _bitwidth_configs(graph, feeds, method, options, cache, eval_data, task, log)
    from tvm_mpq.api import config_for_rate

    specs = rate_points(method, options.rates)
    ptq = options.ptq.at_stage(options.stage)
    config, report = config_for_rate(graph, feeds, options.rates[0], method, observer=options.observer, g=options.g,
                                     cache=cache, stage=options.stage, eval_data=eval_data, task=task,
                                     bias_correction=ptq.bias_correction, channel_act=ptq.channel_act,
                                     measured_bias=ptq.measured_bias, weight_rounding=ptq.weight_rounding)
    summary = MethodAnalysis(method, report.seconds, len(report.table), report.measurement.inference_passes)

    def ranked() -> Iterator[tuple[PointSpec, PrecisionConfig]]:
        yield specs[0], config
        for spec in specs[1:]:
            yield spec, config_for_rate(graph, feeds, spec.requested_rate or 0.0, method, observer=options.observer,
                                        g=options.g, cache=cache, stage=options.stage, report=report,
                                        bias_correction=ptq.bias_correction, channel_act=ptq.channel_act,
                                        measured_bias=ptq.measured_bias, weight_rounding=ptq.weight_rounding)[0]
    return summary, ranked()


def _bitwidth_configs(graph: ModelGraph, feeds: list[Feed], method: str, options: SweepOptions,
                      cache: CalibrationCache, eval_data: EvalData | None, task: str,
                      log: Callable[[str], None]) -> tuple[MethodAnalysis, Iterator[tuple[PointSpec, PrecisionConfig]]]:
    """A bit-width method's analysis and a config for each of its assignments the integer
    kernels can run (weights and activations at most 8 bits)."""
    from tvm_mpq.api import analysis_graph
    from tvm_mpq.calibration import calibrate
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.sensitivity import analyze

    measured = analysis_graph(graph, options.stage)
    table = build_layer_table(measured)
    report = analyze(measured, feeds, method, observer=options.observer, g=options.g, cache=cache, table=table,
                     eval_data=eval_data, task=task)
    summary = MethodAnalysis(method, report.seconds, len(table), report.measurement.inference_passes)
    if not report.allocations:
        raise MpqError(f"method {method} returned no bit-width assignments for {graph.name}")
    ranges = report.measurement.act_ranges
    if not ranges:  # weight-only methods: calibrate the activation quantizers now
        ranges = {v: r[8] for v, r in calibrate(measured, feeds, table.activation_operands(), options.observer,
                                               cache=cache).items()}
    from tvm_mpq.ptq.refine import refine_config

    refinements = options.ptq.at_stage(options.stage)
    pairs = []
    for allocation in report.allocations:
        built = _allocation_config(measured, table, ranges, allocation, method, options, len(feeds))
        if not isinstance(built, str):
            refine_config(built, feeds, refinements, measured=measured, graph=graph, table=table, cache=cache)
        if isinstance(built, str):
            summary.skipped.append(f"{allocation.label}: {built}")
            log(f"{method} {allocation.label}: skipped ({built})")
            continue
        pairs.append((PointSpec(method, built.provenance["bops_reduction_rate"], allocation.label), built))
    if not pairs:
        raise MpqError(f"none of {method}'s assignments runs on the integer kernels: {'; '.join(summary.skipped)}")
    return summary, iter(pairs)


def _allocation_config(measured: ModelGraph, table, ranges: dict, allocation, method: str,
                       options: SweepOptions, calib_size: int) -> PrecisionConfig | str:
    """The precision config of one bit-width assignment, or why the integer kernels cannot run it."""
    from tvm_mpq.compiler.validate import check_integer_config
    from tvm_mpq.config.build import build_config

    try:
        config = build_config(measured, table, allocation.precisions, ranges,
                              {"method": method, "allocation": allocation.label, **allocation.info,
                               "observer": options.observer, "calib_size": calib_size, "bias_correction": False,
                               "analysis_stage": measured_on(options.stage)})
        check_integer_config(config, table)
    except MpqError as err:
        return str(err)
    return config
