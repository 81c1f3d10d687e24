"""Run every compared method's analysis once per model and time it (the paper's Table 3).

Methods and the graph they analyse (the names used in the tables):

* ``quantunev2``: QuantuneV2 at stage C (the IR after batch-norm folding, the paper's IR-opt);
  its time includes building the stage-C graph;
* ``quantunev2-e2e``: QuantuneV2's list with its top re-ordered by end-to-end output SQNR
  (:mod:`tvm_mpq.sensitivity.quantunev2_e2e`, default budget and samples), also at stage C;
* the baselines at ``baseline_stage`` (default A, the framework graph the original methods
  work on): ``inorder``, ``weight-sqnr``, ``top1`` (Top-1 order, ``counts.top1`` samples; with
  labels the model's labelled evaluation set as the paper's Top-1 uses validation data, else
  fp32 pseudo-labels on the calibration samples), ``mixquant`` (QEMs ``1,4,16,64,256``),
  ``pandey`` (the registered ``pandey-fp32``: Pandey et al. with fp32 as the highest candidate,
  BOPs budgets at the requested rates, ``counts.pandey`` samples).

A method's seconds are the wall time of its :func:`~tvm_mpq.sensitivity.analyze` call (each
method compiles its own modules; no calibration cache is used).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tvm_mpq.allocation.bops import INT8, bops_ratio
from tvm_mpq.errors import MpqError
from tvm_mpq.evaluation.model_data import ModelData
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable, build_layer_table
from tvm_mpq.sensitivity import EvalData, SensitivityReport, analyze
from tvm_mpq.types import FOLDED, SOURCE, parse_stage

METHODS = ("quantunev2", "quantunev2-e2e", "inorder", "weight-sqnr", "top1", "mixquant", "pandey")
"""Methods of the paper's Table 2 / 3 and QuantuneV2's refinement, in table order."""

OURS = ("quantunev2", "quantunev2-e2e")
"""The methods of this package (analyse stage C; the report tallies each against the baselines)."""

REGISTERED = {"pandey": "pandey-fp32"}
"""Table name -> registered method, where they differ."""

MIXQUANT_QEMS = (1.0, 4.0, 16.0, 64.0, 256.0)


def rate_bops_ratio(table: LayerTable, rate: float) -> float:
    """The ``bops_ratio`` (BOPs / BOPs_fp32) of a BOPs reduction rate in percent (docs/design.md)."""
    int8 = bops_ratio(table, {n: INT8 for n in table.names()})
    return 1.0 - rate / 100.0 * (1.0 - int8)


@dataclass
class Stages:
    """The source graph (stage A) and the folded graph (stage C), with their layer tables (same layer names)."""

    graph_a: ModelGraph
    table_a: LayerTable
    graph_c: ModelGraph
    table_c: LayerTable
    seconds_c: float

    @classmethod
    def build(cls, data: ModelData) -> "Stages":
        """Stage A from ``data``, stage C by folding batch-norm (timed)."""
        from tvm_mpq.compiler.stages import folded_graph

        start = time.perf_counter()
        graph_c = folded_graph(data.graph)
        table_c = build_layer_table(graph_c)
        seconds = time.perf_counter() - start
        if table_c.names() != data.table.names():
            raise MpqError(f"{data.name}: the stage-C graph's layers differ from stage A's")
        return cls(data.graph, data.table, graph_c, table_c, seconds)

    def at(self, stage: str) -> tuple[ModelGraph, LayerTable]:
        """Graph and table of the source graph (``"A"``) or the folded graph (``"C"``)."""
        stage = parse_stage(stage)
        if stage not in (SOURCE, FOLDED):
            raise MpqError(f"analysis stage must be source (A) or folded (C), not '{stage}'")
        return (self.graph_a, self.table_a) if stage == SOURCE else (self.graph_c, self.table_c)


@dataclass
class MethodRun:
    """One method's analysis of one model."""

    method: str
    registered: str
    stage: str
    report: SensitivityReport
    seconds: float
    options: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Table 3 row: time, inference passes / runs, samples, stage, options."""
        info = self.report.method_info
        runs = info.get("runs") or info.get("phase1_runs")
        if runs is not None and "phase2_measured_points" in info:
            runs += info["phase2_measured_points"]
        samples = info.get("samples") if isinstance(info.get("samples"), int) else None
        extra = {}
        if self.report.measurement.inference_passes:
            if "measured_layers" in info:  # quantunev2-e2e: its end-to-end runs on top of QuantuneV2's
                extra = {"e2e_runs": info["runs"], "e2e_samples": info["samples"]}
            runs, samples = self.report.measurement.inference_passes, self.report.calib_size
        return {"method": self.method, "registered": self.registered, "stage": self.stage,
                "seconds": self.seconds, "inference_runs": runs or 0, "samples": samples, **extra,
                "options": {k: v for k, v in self.options.items() if k != "bops_budgets"}}


def method_options(method: str, data: ModelData, rates: list[float]) -> dict:
    """Constructor options of ``method`` for this experiment (sample counts, budgets)."""
    if method == "top1":
        return {"samples": data.counts.top1}
    if method == "mixquant":
        return {"qems": MIXQUANT_QEMS}
    if method == "pandey":
        budgets = sorted({round(rate_bops_ratio(data.table, r), 9) for r in rates if r > 0})
        return {"samples": data.counts.pandey, "bops_budgets": budgets, "curve_points": 8}
    return {}


def run_method(method: str, data: ModelData, stages: Stages, rates: list[float], baseline_stage: str = SOURCE,
               observer: str = "minmax") -> MethodRun:
    """Analyse ``data``'s model with ``method`` (see module docstring) and time it."""
    if method not in METHODS:
        raise MpqError(f"unknown method '{method}' for eval (methods: {', '.join(METHODS)})")
    stage = FOLDED if method in OURS else baseline_stage
    graph, table = stages.at(stage)
    options = method_options(method, data, rates)
    eval_data = None
    if method == "top1" and data.labels is not None:
        eval_data = EvalData(data.eval_feeds, data.labels)
    registered = REGISTERED.get(method, method)
    report = analyze(graph, data.calib, registered, observer=observer, table=table, options=options,
                     eval_data=eval_data, task=data.task)
    seconds = report.seconds + (stages.seconds_c if stage == FOLDED else 0.0)
    return MethodRun(method, registered, stage, report, seconds, options)
