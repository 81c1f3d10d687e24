"""The precision pass's rows: per config, the integer model and its QDQ simulation built, run on
held-out samples and scored (``benchmarks/precision_pass.py``; ``benchmarks/fidelity_paths.py``
compares its figures with the sweep's and the evaluation's)."""

from __future__ import annotations

import json
import time

from tvm_mpq.api import config_for_rate
from tvm_mpq.calibration import CalibrationCache
from tvm_mpq.compiler.inspect_ir import fp32_tensors_between_int_kernels, fuse, mac_census
from tvm_mpq.evaluation.fidelity import Reference, figures, fp32_reference, step_agreement
from tvm_mpq.evaluation.local_run import run_config
from tvm_mpq.evaluation.sample_set import held_out
from tvm_mpq.types import SOURCE_TO_FOLDED, STAGES, measured_on
from tvm_mpq.zoo import get

CALIB = 16


def point(task: str, graph, config, stage: str, reference: Reference) -> dict:
    """One config's row: built as integer model and as QDQ simulation, both scored."""
    start = time.perf_counter()
    run = run_config(graph, config, reference.samples, stage=stage)
    sim = run_config(graph, config, reference.samples, stage=stage, simulate=True)
    build_s = time.perf_counter() - start
    integer, outs, sims = run.compiled, run.outputs, sim.outputs
    scored = figures(task, outs, reference)
    row = {"stage": stage, "requested_rate": config.provenance["requested_rate"],
           "bops_reduction_rate": round(config.provenance["bops_reduction_rate"], 2),
           "bops_ratio": round(config.provenance["bops_ratio"], 4), "fp32_layers": len(config.fp32_layers()),
           "n_qdq": integer.n_qdq, "n_qdq_naive": integer.n_qdq_naive, "n_requantize": integer.stats["n_requantize"],
           "mac_census": dict(mac_census(integer.mod)),
           "fp32_between_int8_kernels": fp32_tensors_between_int_kernels(fuse(integer.mod)),
           "fidelity": scored["fidelity"], "qdq_fidelity": figures(task, sims, reference)["fidelity"],
           "int_vs_qdq": step_agreement(outs, sims, reference.outputs),
           "build_and_run_seconds": round(build_s, 1)}
    if scored["accuracy"]:
        row["accuracy"] = scored["accuracy"]
    return row


def run_model(name: str, rates: list[float], ablation_rates: list[float], eval_size: int | None = None) -> dict:
    """Every rate's row and the ablation rows of zoo model ``name`` (``eval_size`` held-out
    samples; None: every labelled one left, or 32 photos)."""
    model = get(name)
    graph = model.build_graph()
    calib = model.calibration(CALIB)
    reference = fp32_reference(graph, held_out(name, CALIB, eval_size))
    result = {"model": name, "task": model.task, "eval_samples": len(reference.samples.feeds),
              "samples": reference.samples.to_json(), "calib_samples": CALIB}
    result["fp32"] = {}
    if reference.samples.labels is not None:
        result["fp32"]["accuracy"] = figures(model.task, reference.outputs, reference)["accuracy"]
    cache = CalibrationCache()
    points, report = [], None
    for rate in rates:
        config, report = config_for_rate(graph, calib, rate, cache=cache, report=report)
        row = point(model.task, graph, config, SOURCE_TO_FOLDED, reference)
        points.append(row)
        print(f"{name} rate {rate:g}: {json.dumps(row)}", flush=True)
    result["points"] = points
    ablation, reports = [], {}
    for rate in ablation_rates:
        for stage in STAGES:
            key = measured_on(stage)
            config, reports[key] = config_for_rate(graph, calib, rate, cache=cache, stage=stage, report=reports.get(key))
            row = point(model.task, graph, config, stage, reference)
            ablation.append(row)
            print(f"{name} ablation rate {rate:g} stage {stage}: {json.dumps(row)}", flush=True)
    result["ablation"] = ablation
    return result
