"""Run a sweep: analyze once per method, then per point build, export, upload, run, time, score.

::

    report = run_sweep(SweepOptions("mtcnn-rnet", "x86", rates=[0, 50, 100]), Path("out/report.json"))

Every point is compiled here (``compile_model`` in the target's build context), exported with
the target's compiler, and run over RPC (:mod:`tvm_mpq.sweep.remote`): its outputs on the
evaluation samples give the fidelity (and accuracy where labels exist), ``time_evaluator``
the latency. The fp32 reference outputs come from the fp32 model compiled and run on this
host (``llvm``), on the same samples; the rate-0 point is the same fp32 model through the
remote path, so its fidelity also shows how far the device's fp32 differs from the host's.
The JSON report is rewritten after every point (a partial sweep is not lost); the Markdown
table and the PNG plot are written at the end.
"""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.sweep.data import EvalSet, eval_set
from tvm_mpq.sweep.plan import (EMULATED_EVAL_SIZE, NATIVE_EVAL_SIZE, PointSpec, SweepOptions, TimingOptions,
                                resolve_timing)
from tvm_mpq.sweep.remote import Execution, open_execution

Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


def run_sweep(options: SweepOptions, output: Path, log: Log = _print) -> dict:
    """Measure every point of ``options`` and write ``output`` (JSON), its ``.md`` and ``.png``.

    Returns the report (DESIGN "Report" contract). MpqError for anything the user can fix;
    a server or tracker problem is found before the analysis starts.
    """
    from targets import get_target
    from tvm_mpq.sweep.report import new_report, write_outputs

    target = get_target(options.target)
    local_setup = target.server_arch == "aarch64" and options.setup and not (options.rpc or options.tracker)
    if not local_setup:
        target.check_toolchain()  # before any server or analysis (the local aarch64 set-up installs it)
    with open_execution(target, options.rpc, options.tracker, options.key, options.setup, log) as execution:
        target.check_toolchain()
        timing = resolve_timing(options, execution.emulated)
        eval_size = options.eval_size or (EMULATED_EVAL_SIZE if execution.emulated else NATIVE_EVAL_SIZE)
        graph, calib = _load(options)
        data = eval_set(options.model, calib, eval_size, options.calib is not None)
        task = _task(options.model)
        log(f"{graph.name} on {options.target}: {execution.device}")
        reference = _reference(graph, data, task, log)
        report = new_report(graph.name, options, execution, task, data, reference, timing)
        with tempfile.TemporaryDirectory(prefix="tvm-mpq-sweep-") as tmp:
            libs = options.keep_libs or Path(tmp)
            for method in options.methods:
                _sweep_method(graph, calib, method, options, target, execution, data, task, timing, reference,
                              report, libs, output, log)
        report["rpc"] = execution.to_json()
        paths = write_outputs(report, output)
    log("report: " + ", ".join(str(p) for p in paths))
    return report


def _sweep_method(graph: ModelGraph, calib: list, method: str, options: SweepOptions, target: Any,
                  execution: Execution, data: EvalSet, task: str, timing: TimingOptions, reference: dict,
                  report: dict, libs: Path, output: Path, log: Log) -> None:
    from tvm_mpq.sweep.configs import method_configs
    from tvm_mpq.sweep.report import write_json

    log(f"{method}: analyzing {graph.name} on {len(calib)} calibration samples ...")
    analysis, points = method_configs(graph, calib, method, options, log)
    log(f"{method}: analysis {analysis.seconds:.1f} s, {analysis.n_layers} layers")
    report["analyses"].append(analysis.to_json())
    if report["analysis"] is None:
        report["analysis"] = analysis.to_json()
    for spec, config in points:
        index = len(report["points"]) + 1
        point = measure_point(graph, spec, config, options, target, execution, data, task, timing,
                              reference["outputs"], libs, log, f"[{index}]")
        report["points"].append(point)
        report["rpc"] = execution.to_json()
        write_json(report, output)


def measure_point(graph: ModelGraph, spec: PointSpec, config: Any, options: SweepOptions, target: Any,
                  execution: Execution, data: EvalSet, task: str, timing: TimingOptions, reference: list,
                  libs: Path, log: Log = _print, prefix: str = "") -> dict:
    """Build, export, run and score one point; its report row (``points[i]`` of the contract)."""
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.evaluation.fidelity import accuracy, fidelity

    prov = config.provenance
    fp32 = config.fp32_layers()
    rate = prov["bops_reduction_rate"]
    log(f"{prefix} {spec.label}: achieved BOPs reduction {rate:.1f}% (bops_ratio {prov['bops_ratio']:.4f}), "
        f"{len(fp32)} fp32 layer(s); compiling for {options.target} ...")
    start = time.perf_counter()
    try:
        with target.build_context():
            compiled = compile_model(graph, config, target.tvm_target, stage=options.stage,
                                     tuning=options.tuning)
    except MpqError:
        raise
    except Exception as err:  # a TVM failure: one line naming the point, not a traceback
        raise MpqError(f"{spec.label}: compiling for {options.target} failed: {_last_line(err)}") from None
    compile_s = time.perf_counter() - start
    stem = f"{graph.name}-{options.target}-{spec.method}-" + (spec.allocation or f"rate{spec.requested_rate:g}")
    try:
        library = target.export(compiled, libs / (_safe(stem) + ".so"))
    except MpqError:
        raise
    except Exception as err:  # the (cross) compiler failed
        raise MpqError(f"{spec.label}: exporting the {options.target} library failed: {_last_line(err)}") from None
    export_s = time.perf_counter() - start - compile_s
    size_mb = library.stat().st_size / 1e6
    point: dict[str, Any] = {
        "method": spec.method,
        "requested_rate": float(spec.requested_rate if spec.requested_rate is not None else rate),
        "bops_reduction_rate": float(rate), "bops_ratio": float(prov["bops_ratio"]),
        "raw_reduction_rate": float(prov.get("raw_reduction_rate", float("nan"))),
        "fp32_layers": fp32, "n_fp32_layers": len(fp32), "n_layers": len(config.layers),
        "n_qdq": int(compiled.n_qdq), "n_qdq_naive": int(compiled.n_qdq_naive),
        "model_size_mb": size_mb, "library": str(library) if options.keep_libs else None,
        "compile_seconds": compile_s, "export_seconds": export_s,
        "build": compiled.stats.get("build", {}),
    }
    if spec.allocation:
        point["allocation"] = spec.allocation
    start = time.perf_counter()
    run = execution.run(library, data.feeds, target, [s.name for s in graph.inputs], timing, options.request_timeout)
    if run is None:
        point.update(latency_ms=None, fidelity=None, accuracy=None, server=None, run_skipped=execution.skip_reason)
        log(f"{prefix} {spec.label}: compiled in {compile_s:.1f} s, {size_mb:.2f} MB, n_qdq {compiled.n_qdq}; "
            f"run skipped (no GPU reachable)")
        return point
    point["run_seconds"] = time.perf_counter() - start
    point["server"] = run.server
    point["latency_ms"] = run.latency.to_json() if run.latency is not None else None
    point["fidelity"] = fidelity(task, run.outputs, reference)
    point["accuracy"] = accuracy(task, run.outputs, data.labels) if data.labels is not None else {}
    lat = run.latency
    tuning = point["build"].get("tuning")
    if tuning:
        log(f"{prefix} {spec.label}: tuning database: {tuning['reused']} of {tuning['tasks']} kernel(s) reused, "
            f"{tuning['tuned']} tuned in {tuning['seconds']:.0f} s")
    log(f"{prefix} {spec.label}: compiled {compile_s:.1f} s + export {export_s:.1f} s, {size_mb:.2f} MB, "
        f"n_qdq {compiled.n_qdq}; {run.server}: median {lat.median_ms:.3f} ms (p10 {lat.p10_ms:.3f}, "
        f"p90 {lat.p90_ms:.3f}, {lat.repeat}x{lat.number})" + (" [QEMU emulation]" if execution.emulated else "")
        + "; " + ", ".join(f"{k} {v:.4g}" for k, v in {**point["fidelity"], **point["accuracy"]}.items()))
    return point


def _load(options: SweepOptions) -> tuple[ModelGraph, list]:
    from tvm_mpq.calibration import load_calibration
    from tvm_mpq.frontends import load_model, parse_input_shapes

    from tvm_mpq.ptq.equalization import graph_for_options

    graph = graph_for_options(load_model(options.model, parse_input_shapes(options.input_shape)), options.ptq)
    mean = options.mean[0] if len(options.mean) == 1 else tuple(options.mean)
    std = options.std[0] if len(options.std) == 1 else tuple(options.std)
    return graph, load_calibration(graph, options.calib, options.calib_size, mean, std)


def _task(model: str) -> str:
    from tvm_mpq import zoo

    return zoo.get(model).task if model in zoo.names() else "generic"


def _reference(graph: ModelGraph, data: EvalSet, task: str, log: Log) -> dict:
    """The fp32 model compiled for and run on this host: outputs on the evaluation samples."""
    from tvm_mpq.evaluation.fidelity import accuracy
    from tvm_mpq.runtime.executor import compile_graph

    start = time.perf_counter()
    model = compile_graph(graph)
    outputs = [model.run(feed) for feed in data.feeds]
    ref: dict[str, Any] = {"outputs": outputs, "runs_on": f"this host ({platform.machine()}, fp32 llvm build, "
                                                          "run locally, not over RPC)"}
    if data.labels is not None:
        ref["accuracy"] = accuracy(task, outputs, data.labels)
    log(f"fp32 reference on this host: {len(outputs)} samples in {time.perf_counter() - start:.1f} s"
        + "".join(f", {k} {v:.4g}" for k, v in ref.get("accuracy", {}).items()))
    return ref


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _last_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__
