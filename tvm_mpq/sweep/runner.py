"""Run a sweep: analyze once per method, build every point, then run and time them interleaved.

::

    report = run_sweep(SweepOptions("mtcnn-rnet", "x86", rates=[0, 50, 100]), Path("out/report.json"))

1. every point is compiled here (``compile_model`` in the target's build context) and exported
   with the target's compiler (:mod:`~tvm_mpq.sweep.builds`);
2. on each device (:mod:`~tvm_mpq.sweep.measure`), every point runs the evaluation samples once
   (their outputs give the fidelity, and the accuracy where labels exist) and then all points,
   the fp32 baseline included, are timed round-robin for several rounds
   (:mod:`~tvm_mpq.sweep.interleave`): each point's latency is the median over rounds, and its
   ratio to fp32 is taken within each round (:mod:`~tvm_mpq.sweep.rounds`).

Fidelity is :func:`tvm_mpq.evaluation.fidelity.figures` against the fp32 model compiled for and
run on this host, on the model's named held-out sample set
(:mod:`tvm_mpq.evaluation.sample_set`): the figures ``tvm-mpq eval`` and
``benchmarks/precision_pass.py`` give for the same config and samples. The rate-0 point is the
same fp32 model through the remote path, so its fidelity also shows how far the device's fp32
differs from the host's. The JSON report is rewritten after every step (a partial sweep is not
lost); the Markdown table and the PNG plot are written at the end.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tvm_mpq.evaluation.fidelity import fp32_reference
from tvm_mpq.evaluation.sample_set import SampleSet, first_samples, held_out
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.sweep.builds import BuiltPoint, build_fp32_baseline, build_point
from tvm_mpq.sweep.plan import EMULATED_EVAL_SIZE, NATIVE_EVAL_SIZE, SweepOptions, resolve_timing
from tvm_mpq.sweep.remote import open_execution

Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


def run_sweep(options: SweepOptions, output: Path, log: Log = _print) -> dict:
    """Measure every point of ``options`` and write ``output`` (JSON), its ``.md`` and ``.png``.

    Returns the report (docs/design.md "Report contract" contract). MpqError for anything the user can fix;
    a server or tracker problem is found before the analysis starts.
    """
    from targets import get_target
    from tvm_mpq.sweep.measure import Measurement, measure_points
    from tvm_mpq.sweep.report import new_report, tuning_summary, write_json, write_outputs

    target = get_target(options.target)
    local_setup = target.server_arch == "aarch64" and options.setup and not (options.rpc or options.tracker)
    if not local_setup:
        target.check_toolchain()  # before any server or analysis (the local aarch64 set-up installs it)
    with open_execution(target, options.rpc, options.tracker, options.key, options.setup, log) as execution:
        target.check_toolchain()
        options = _tune_on_execution(options, execution)
        timing = resolve_timing(options, execution.emulated)
        eval_size = options.eval_size or (EMULATED_EVAL_SIZE if execution.emulated else NATIVE_EVAL_SIZE)
        graph, calib = _load(options)
        samples = _samples(options, calib, eval_size)
        task = _task(options.model)
        log(f"{graph.name} on {options.target}: {execution.device}")
        start = time.perf_counter()
        reference = fp32_reference(graph, samples)
        log(f"fp32 reference on this host: {len(samples.feeds)} samples ({samples.name}) in "
            f"{time.perf_counter() - start:.1f} s")
        report = new_report(graph.name, options, execution, task, reference, timing)

        def save() -> None:
            write_json(report, output)

        with tempfile.TemporaryDirectory(prefix="tvm-mpq-sweep-") as tmp:
            libs = options.keep_libs or Path(tmp)
            built: list[BuiltPoint] = []
            for method in options.methods:
                built += _build_method(graph, calib, method, options, target, report, libs, save, log)
            own = next((b.library for b in built if b.all_fp32), None)
            baseline, baseline_tuning = (own, None) if own else build_fp32_baseline(graph, options, target, libs, log)
            report["baseline"] = _baseline_json(built) | ({"tuning": baseline_tuning} if baseline_tuning else {})
            if execution.skip_reason is not None:
                for row in report["points"]:
                    row["run_skipped"] = execution.skip_reason
                log(f"runs skipped: {execution.skip_reason.split(';')[0]}")
            else:
                setup = Measurement(task, reference, target, [s.name for s in graph.inputs], timing,
                                    options.request_timeout)
                measure_points(execution, built, baseline, report["baseline"]["source"], setup, report, save, log)
                _log_summary(report, log)
        report["rpc"] = execution.to_json()
        report["tuning"] = tuning_summary(report["points"], report["baseline"].get("tuning"))
        paths = write_outputs(report, output)
    log("report: " + ", ".join(str(p) for p in paths))
    return report


def _tune_on_execution(options: SweepOptions, execution: Any) -> SweepOptions:
    """``options`` with the tuning database (and, with ``--tune-trials``, the measurements) on the
    device the sweep runs on (:meth:`~tvm_mpq.sweep.remote.Execution.tuning_device`); a local
    server is waited for when it will measure candidates."""
    from dataclasses import replace

    from tvm_mpq.compiler.tuning import TuningOptions

    tuning = options.tuning or TuningOptions()
    device = tuning.device or execution.tuning_device()
    if device is None:
        return options
    if tuning.trials > 0:
        execution.ready()
    return replace(options, tuning=replace(tuning, device=device))


def _build_method(graph: ModelGraph, calib: list, method: str, options: SweepOptions, target: Any, report: dict,
                  libs: Path, save: Callable[[], None], log: Log) -> list[BuiltPoint]:
    from tvm_mpq.sweep.configs import method_configs

    log(f"{method}: analyzing {graph.name} on {len(calib)} calibration samples ...")
    analysis, points = method_configs(graph, calib, method, options, log)
    log(f"{method}: analysis {analysis.seconds:.1f} s, {analysis.n_layers} layers")
    report["analyses"].append(analysis.to_json())
    if report["analysis"] is None:
        report["analysis"] = analysis.to_json()
    built = []
    for spec, config in points:
        index = len(report["points"])
        row, library = build_point(graph, spec, config, options, target, libs, log, f"[{index + 1}]")
        report["points"].append(row)
        built.append(BuiltPoint(index, spec.label, library, row["n_fp32_layers"] == row["n_layers"]))
        save()
    return built


def _baseline_json(built: list[BuiltPoint]) -> dict:
    own = next((b for b in built if b.all_fp32), None)
    if own is None:
        return {"point": None, "source": "an fp32 build of the model (no point has every layer fp32)"}
    return {"point": own.row, "source": f"point {own.row + 1} ({own.label}): every layer fp32"}


def _log_summary(report: dict, log: Log) -> None:
    emulated = " [QEMU emulation]" if report["emulated"] else ""
    for i, p in enumerate(report["points"]):
        lat, ratio = p.get("latency_ms"), p.get("ratio_to_fp32")
        if lat and ratio:
            label = p.get("allocation") or f"rate {p['requested_rate']:g}%"
            log(f"[{i + 1}] {p['method']} {label}: median {lat['median']:.3f} ms over {lat['rounds']} round(s) "
                f"({lat['min']:.3f}-{lat['max']:.3f}); x fp32 {ratio['median']:.3f} "
                f"({ratio['min']:.3f}-{ratio['max']:.3f} per round){emulated}")
    log(f"fp32 baseline moved {report['stability']['fp32_spread_pct']:.1f}% between rounds; "
        + "; ".join(f"{m}: {v['verdict']}" for m, v in report["monotonicity"].items()))


def _load(options: SweepOptions) -> tuple[ModelGraph, list]:
    from tvm_mpq.calibration import load_calibration
    from tvm_mpq.frontends import parse_input_shapes
    from tvm_mpq.ptq.equalization import graph_for_options
    from tvm_mpq.zoo import load_model

    graph = graph_for_options(load_model(options.model, parse_input_shapes(options.input_shape)), options.ptq)
    mean = options.mean[0] if len(options.mean) == 1 else tuple(options.mean)
    std = options.std[0] if len(options.std) == 1 else tuple(options.std)
    return graph, load_calibration(graph, options.calib, options.calib_size, mean, std)


def _samples(options: SweepOptions, calib: list, eval_size: int) -> SampleSet:
    """The named held-out set of a zoo model (all of its samples when ``--calib`` gave the
    calibration), a model file's first calibration samples."""
    from tvm_mpq import zoo

    if options.model not in zoo.names():
        return first_samples(options.model, calib, eval_size)
    return held_out(options.model, 0 if options.calib is not None else len(calib), eval_size)


def _task(model: str) -> str:
    from tvm_mpq import zoo

    return zoo.get(model).task if model in zoo.names() else "generic"

