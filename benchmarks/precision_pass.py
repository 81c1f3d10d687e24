"""Benchmark of the precision pass on x86 (issue: precision pass + fused integer compilation).

For each model and BOPs reduction rate (QuantuneV2 sensitivity, one analysis per model), build
the integer model (stage A->C) and its QDQ simulation, run both on held-out samples and report:
achieved rate, Q/DQ count left vs per-layer QDQ, MAC census (uint8 x int8 -> int32 layers),
fidelity vs fp32, integer-vs-QDQ agreement in int8 output steps and accuracy where labels exist.
Then the IR-stage ablation (A, A->C, C) at 50/100%. (Latency per rate: ``tvm-mpq sweep``.)

Fidelity and accuracy are ``tvm_mpq.evaluation.fidelity.figures`` against the fp32 model run on
this host, on the named held-out sample set (``tvm_mpq.evaluation.sample_set.held_out``): the
figures ``tvm-mpq sweep`` and ``tvm-mpq eval`` give for the same config and sample set.

    python benchmarks/precision_pass.py [--models efficientnet-lite0,mtcnn-rnet] [--rates 0,25,50,75,100]
                                        [--eval-size N]

Writes out/bench/precision_pass/report.json and report.md (and prints the tables).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import tvm

from tvm_mpq.calibration import CalibrationCache
from tvm_mpq.compiler.inspect_ir import fp32_tensors_between_int_kernels, fuse, mac_census
from tvm_mpq.api import config_for_rate
from tvm_mpq.evaluation.fidelity import Reference, figures, fp32_reference, step_agreement
from tvm_mpq.evaluation.local_run import run_config
from tvm_mpq.evaluation.sample_set import held_out
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
        row = point(model.task, graph, config, "A->C", reference)
        points.append(row)
        print(f"{name} rate {rate:g}: {json.dumps(row)}", flush=True)
    result["points"] = points
    ablation, reports = [], {}
    for rate in ablation_rates:
        for stage in ("A", "A->C", "C"):
            key = "C" if stage == "C" else "A"
            config, reports[key] = config_for_rate(graph, calib, rate, cache=cache, stage=stage, report=reports.get(key))
            row = point(model.task, graph, config, stage, reference)
            ablation.append(row)
            print(f"{name} ablation rate {rate:g} stage {stage}: {json.dumps(row)}", flush=True)
    result["ablation"] = ablation
    return result


def _fmt_fid(row: dict) -> str:
    f = row["fidelity"]
    parts = [f"top1 {f['top1_agreement']:.3f}"] if "top1_agreement" in f else []
    parts.append(f"SQNR {f['output_sqnr_db']:.1f} dB")
    if "accuracy" in row:
        parts += [f"{k} {v:.3f}" for k, v in row["accuracy"].items()]
    return ", ".join(parts)


def markdown(results: list[dict]) -> str:
    lines = ["# Precision pass on x86 (untuned llvm, this machine)", ""]
    for r in results:
        lines += [f"## {r['model']} ({r['eval_samples']} eval samples `{r['samples']['name']}`, "
                  f"{r['calib_samples']} calibration)", "",
                  "fp32: " + (", ".join(f"{k} {v:.3f}" for k, v in r["fp32"].get("accuracy", {}).items()) or "reference"),
                  "", "| rate req. | achieved | fp32 layers | n_qdq / per-layer | int8 MACs (u8 x s8 -> s32) | fp32 tensors between int8 kernels | fidelity vs fp32 | int vs QDQ max (steps) | within 1 step |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for p in r["points"]:
            lines.append(f"| {p['requested_rate']:g} | {p['bops_reduction_rate']:.1f} | {p['fp32_layers']} | "
                         f"{p['n_qdq']} / {p['n_qdq_naive']} | {p['mac_census'].get('uint8 x int8 -> int32', 0)} | "
                         f"{p['fp32_between_int8_kernels']} | {_fmt_fid(p)} | {p['int_vs_qdq']['max_steps']:.2f} | "
                         f"{p['int_vs_qdq']['within_one_step']:.4f} |")
        lines += ["", "IR-stage ablation (sensitivity stage -> application stage):", "",
                  "| rate | stage | n_qdq | fidelity vs fp32 |", "|---|---|---|---|"]
        for p in r["ablation"]:
            lines.append(f"| {p['requested_rate']:g} | {p['stage']} | {p['n_qdq']} | {_fmt_fid(p)} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet-lite0,mtcnn-rnet")
    parser.add_argument("--rates", default="0,25,50,75,100")
    parser.add_argument("--ablation-rates", default="50,100")
    parser.add_argument("--eval-size", type=int, default=None,
                        help="held-out samples (default: every labelled one left, or 32 photos)")
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/precision_pass"))
    args = parser.parse_args()
    os.environ.setdefault("TVM_MPQ_NO_PROGRESS", "1")
    rates = [float(r) for r in args.rates.split(",")]
    ablation = [float(r) for r in args.ablation_rates.split(",") if r]
    results = [run_model(m, rates, ablation, args.eval_size) for m in args.models.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps({"tvm_version": tvm.__version__, "results": results}, indent=1))
    md = markdown(results)
    (args.out / "report.md").write_text(md)
    print(md)
    print(f"written: {args.out}/report.json, report.md")


if __name__ == "__main__":
    main()
