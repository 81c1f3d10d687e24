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
from pathlib import Path

import tvm

from benchkit.precision_rows import run_model


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
