"""The paper's experiments on one zoo model, and on a list of them (``tvm-mpq eval``).

Per model, in order:

1. analyses of every compared method, timed (Table 3; :mod:`.analyses`); QuantuneV2's stage-C
   measurement always runs: it calibrates the evaluation module and feeds Tables 8 and the
   local-metric study;
2. one switchable evaluation module at stage C (:mod:`.evaluator`); the fp32 and all-int8 points;
3. Table 2: every method at every rate (:mod:`.rate_table`); MixQuant's own QEM points;
4. Table 8: the ablation rows at every rate (:mod:`.ablation_table`);
5. the local-metric study: eight rankings' accuracy-recovery curves (Fig. 3), and the compared
   methods' curves (Fig. 8) (:mod:`.recovery`, :mod:`.local_metrics_study`);
6. optionally, one point compiled by the integer compiler and compared with the probe.

:func:`run_eval` writes ``report.json``, ``report.md`` (rewritten after every model, so a long run
can be read while it goes on) and the PNGs under the output folder.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import tvm

from tvm_mpq.allocation.allocate import allocate_by_rate
from tvm_mpq.allocation.bops import INT8
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.errors import MpqError
from tvm_mpq.evaluation.ablation_table import ablation_points, ablation_rankings
from tvm_mpq.evaluation.evaluator import EVALUATED_WITH, ConfigEvaluator
from tvm_mpq.evaluation.local_metrics_study import local_metric_rankings, reference_ranking
from tvm_mpq.evaluation.local_run import LocalRun
from tvm_mpq.evaluation.method_runs import METHODS, MethodRun, Stages, run_method
from tvm_mpq.evaluation.model_data import ModelData, counts_for, load_model_data
from tvm_mpq.evaluation.rate_plot import plot_rates
from tvm_mpq.evaluation.rate_table import rate_table_points
from tvm_mpq.evaluation.recovery import curve_counts, plot_recovery, recovery_curve, summary
from tvm_mpq.evaluation.tasks import SHORT
from tvm_mpq.types import FOLDED, SOURCE, Outputs

DEFAULT_MODELS = ("efficientnet-lite0", "mtcnn-rnet", "ppocr-cls")
DEFAULT_RATES = (100.0, 50.0, 40.0, 30.0, 20.0)
Log = Callable[[str], None]


@dataclass
class EvalOptions:
    """What ``tvm-mpq eval`` runs. ``counts`` overrides the per-model sample profile
    (keys of :class:`~tvm_mpq.evaluation.model_data.SampleCounts`; None keeps the profile's)."""

    out: Path
    models: tuple[str, ...] = DEFAULT_MODELS
    methods: tuple[str, ...] = METHODS
    rates: tuple[float, ...] = DEFAULT_RATES
    counts: dict[str, int | None] = field(default_factory=dict)
    baseline_stage: str = SOURCE
    observer: str = "minmax"
    g: float = 2.0
    mixquant_qem: float = 4.0
    ablation: bool = True
    local_metrics: bool = True
    method_curves: bool = True
    check_integer: bool = False

    def validate(self) -> None:
        """MpqError for options no run can use."""
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise MpqError(f"unknown method(s) {', '.join(unknown)} (eval methods: {', '.join(METHODS)})")
        if not self.methods:
            raise MpqError("--methods is empty")
        if not self.models:
            raise MpqError("--models is empty")
        bad = [r for r in self.rates if not 0.0 <= r <= 100.0]
        if bad or not self.rates:
            raise MpqError(f"rates must lie in 0..100 (percent BOPs reduction), got {list(self.rates)}")
        if self.baseline_stage not in (SOURCE, FOLDED):
            raise MpqError(f"--baseline-stage must be source (A) or folded (C), not '{self.baseline_stage}'")
        if self.g <= 1:
            raise MpqError(f"--g must be > 1 (QuantuneV2 weighs the weight delta more), got {self.g}")
        if self.mixquant_qem < 1:
            raise MpqError(f"--mixquant-qem must be >= 1, got {self.mixquant_qem}")
        points = self.counts.get("curve_points")
        if points is not None and points < 2:
            raise MpqError(f"--curve-points must be >= 2, got {points}")


def _metric_panels(evaluator: ConfigEvaluator) -> list[tuple[str, str]]:
    panels = [(evaluator.primary, SHORT.get(evaluator.primary, evaluator.primary))]
    if evaluator.primary != "output_sqnr_db":
        panels.append(("output_sqnr_db", "output SQNR vs fp32 (dB)"))
    return panels


def _save_report(run: MethodRun, folder: Path) -> list[str]:
    path = folder / f"{run.method}.json"
    run.report.save(path)
    return [str(path)] + [str(p) for p in run.report.write_artifacts(path)]


def integer_figures(data: ModelData, config: PrecisionConfig, stage: str = FOLDED,
                    reference: Outputs | None = None) -> tuple[dict[str, float], LocalRun]:
    """What ``--check-integer`` reports for ``config``: compiled by the integer compiler at
    ``stage``, run on the model's named sample set, and scored (:func:`~.fidelity.scores`)
    against the fp32 reference on those samples (computed here when not given)."""
    from tvm_mpq.evaluation.fidelity import fp32_reference, scores
    from tvm_mpq.evaluation.local_run import run_config

    if reference is None:
        reference = fp32_reference(data.graph, data.samples).outputs
    run = run_config(data.graph, config, data.samples, stage=stage)
    return scores(data.task, run.outputs, reference, data.labels), run


def _integer_check(data, stages: Stages, evaluator: ConfigEvaluator, sensitivity: list[str], rate: float) -> dict:
    """Compile QuantuneV2's point at ``rate`` with the integer compiler (folded graph, stage C) and compare its
    metrics with the probe's."""
    from tvm_mpq.config.build import build_config
    from tvm_mpq.evaluation.fidelity import step_agreement

    start = time.perf_counter()
    precisions = allocate_by_rate(data.table, sensitivity, rate)
    config = build_config(stages.graph_c, stages.table_c, precisions, evaluator.ctx.act_ranges(8),
                          {"method": "quantunev2", "requested_rate": rate, "analysis_stage": FOLDED})
    integer, run = integer_figures(data, config, FOLDED, evaluator.reference)
    probe_outputs = evaluator.ctx.run(precisions, data.eval_feeds)
    return {"method": "quantunev2", "requested_rate": rate, "n_qdq": run.compiled.n_qdq,
            "samples": data.samples.name, "integer": integer, "probe": evaluator.metrics_of(precisions),
            "integer_vs_probe": step_agreement(run.outputs, probe_outputs, evaluator.reference),
            "seconds": time.perf_counter() - start}


def evaluate_model(name: str, options: EvalOptions, log: Log) -> dict:
    """Every experiment on zoo model ``name`` (module docstring); returns its JSON section."""
    start = time.perf_counter()
    data = load_model_data(name, counts_for(name, **options.counts))
    folder = options.out / name
    log(f"{name}: {data.describe()}")
    stages = Stages.build(data)
    log(f"{name}: stage-C graph (batch-norm folded) in {stages.seconds_c:.1f} s")

    runs: dict[str, MethodRun] = {}
    artifacts: dict[str, list[str]] = {}
    order = ["quantunev2"] + [m for m in options.methods if m != "quantunev2"]
    for method in order:
        log(f"{name}: analysis {method} ...")
        run = run_method(method, data, stages, list(options.rates), options.baseline_stage, options.observer)
        runs[method] = run
        artifacts[method] = _save_report(run, folder / "sensitivity")
        log(f"{name}: analysis {method} done in {run.seconds:.1f} s (stage {run.stage})")
    base = runs["quantunev2"]

    log(f"{name}: compiling the stage-C evaluation module ...")
    evaluator = ConfigEvaluator(data, stages.graph_c, stages.table_c, base.report.measurement, options.observer)
    fp32, int8 = evaluator.fp32_metrics(), evaluator.int8_metrics()
    log(f"{name}: evaluation module in {evaluator.compile_seconds:.1f} s; fp32 {fp32}; all-int8 {int8}")

    shown = [runs[m] for m in options.methods]
    points = rate_table_points(evaluator, shown, list(options.rates), options.mixquant_qem)
    log(f"{name}: Table 2: {len(points)} points ({evaluator.runs} assignment runs so far)")
    result = {"model": name, "task": data.task, "counts": data.counts.__dict__, "samples": data.samples.to_json(),
              "n_layers": len(data.table), "macs": data.table.total_macs(), "primary_metric": evaluator.primary,
              "evaluated_with": EVALUATED_WITH, "fp32": fp32, "int8": int8,
              "int8_point": evaluator.point({n: INT8 for n in data.table.names()}),
              "fp32_size_mb": evaluator.point({})["model_size_mb"],
              "analyses": [runs[m].summary() for m in options.methods],
              "points": points, "artifacts": artifacts}
    panels = _metric_panels(evaluator)
    plots = {"table2": str(plot_rates(folder / "table2.png", points, panels, fp32,
                                      f"{name}: Table 2, task metric vs BOPs reduction rate per method"))}

    counts = curve_counts(len(data.table), data.counts.curve_points)
    n_curve = data.counts.curve_samples
    curve_fp32 = evaluator.fp32_metrics(n_curve)
    result["curve_fp32"], result["curve_int8"] = curve_fp32, evaluator.int8_metrics(n_curve)
    higher = evaluator.metrics.higher_is_better()

    def curve(ranking: list[str]) -> list[dict]:
        return recovery_curve(evaluator, ranking, counts, n_curve)

    def condense(points: list[dict]) -> dict:
        return summary(points, evaluator.primary, curve_fp32[evaluator.primary], higher)

    if options.ablation:
        rows = ablation_rankings(stages, base.report.measurement, options.g)
        ablation_points(evaluator, rows, list(options.rates))
        for row in rows:
            row["recovery"] = curve(row["sensitivity"])
            row["recovery_summary"] = condense(row["recovery"])
        result["ablation"] = rows
        log(f"{name}: Table 8: {len(rows)} rows ({evaluator.runs} assignment runs so far)")
    if options.local_metrics:
        rankings = {label: rank(stages.table_c, base.report.measurement.metrics)
                    for label, rank in local_metric_rankings(options.g).items()}
        rankings["QuantuneV2"] = reference_ranking(options.g)(stages.table_c, base.report.measurement.metrics)
        curves = {label: curve(ranking) for label, ranking in rankings.items()}
        result["local_metrics"] = {"rankings": rankings, "curves": curves,
                                   "summary": {label: condense(c) for label, c in curves.items()}}
        plots["local_metrics"] = str(plot_recovery(
            folder / "recovery_local_metrics.png", curves, panels, curve_fp32,
            f"{name}: recovery when dequantizing layers one by one, by local metric (Fig. 3)", "QuantuneV2"))
        log(f"{name}: local-metric study: {len(curves)} curves x {len(counts)} points "
            f"({evaluator.runs} assignment runs so far)")
    if options.method_curves:
        rankable = {m: runs[m].report.sensitivity for m in options.methods}
        curves = {m: curve(ranking) for m, ranking in rankable.items()}
        result["method_curves"] = {"curves": curves, "summary": {m: condense(c) for m, c in curves.items()}}
        plots["methods"] = str(plot_recovery(
            folder / "recovery_methods.png", curves, panels, curve_fp32,
            f"{name}: recovery when dequantizing layers one by one, by method's list (Fig. 8)", "quantunev2"))
        log(f"{name}: method curves: {len(curves)} x {len(counts)} points "
            f"({evaluator.runs} assignment runs so far)")
    if options.check_integer:
        rate = next((r for r in options.rates if r < 100), options.rates[0])
        log(f"{name}: integer compile of quantunev2 at {rate:g}% ...")
        result["integer_check"] = _integer_check(data, stages, evaluator, base.report.sensitivity, rate)
        log(f"{name}: integer check: {result['integer_check']['integer']} vs probe {result['integer_check']['probe']}")
    result["plots"] = plots
    result["evaluation"] = {"assignment_runs": evaluator.runs, "samples_run": evaluator.samples_run,
                            "run_seconds": evaluator.run_seconds, "compile_seconds": evaluator.compile_seconds}
    result["seconds"] = time.perf_counter() - start
    log(f"{name}: done in {result['seconds']:.0f} s")
    return result


def run_eval(options: EvalOptions, log: Log = print) -> dict:
    """Every model of ``options``; writes ``report.json`` and ``report.md`` (returned as dict)."""
    from tvm_mpq.evaluation.report_markdown import markdown

    options.validate()
    start = time.perf_counter()
    options.out.mkdir(parents=True, exist_ok=True)
    report = {"tvm_version": tvm.__version__, "target": "llvm (host CPU)",
              "device": f"{platform.machine()}, {os.cpu_count()} cores",
              "rates": list(options.rates), "methods": list(options.methods), "baseline_stage": options.baseline_stage,
              "observer": options.observer, "g": options.g, "mixquant_qem": options.mixquant_qem,
              "models": [], "wall_seconds": 0.0, "complete": False}
    for name in options.models:
        report["models"].append(evaluate_model(name, options, log))
        report["wall_seconds"] = time.perf_counter() - start
        report["complete"] = len(report["models"]) == len(options.models)
        (options.out / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False))
        (options.out / "report.md").write_text(markdown(report))  # rewritten after every model
    log(f"eval: written {options.out / 'report.json'}, {options.out / 'report.md'} "
        f"in {report['wall_seconds']:.0f} s")
    return report
