"""Integer model vs its QDQ simulation (same scales) on every zoo model, fully int8.

For each model: the config at 100% BOPs reduction (weight-sqnr order; layers without an integer
kernel, i.e. activation x activation matmuls, stay fp32), then

* teacher-forced, per quantized tensor (``tvm_mpq.compiler.agreement``): the largest code
  difference between the integer tensor and the QDQ model's tensor computed from the same inputs,
  and the fraction of codes that differ;
* end to end: ``|integer - QDQ|`` of the model outputs in int8 steps of the fp32 output range,
  and both models' fidelity to fp32.

    python benchmarks/integer_agreement.py [--models a,b] [--samples 2]

Writes out/bench/integer_agreement/report.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from tvm_mpq import zoo
from tvm_mpq.api import config_for_rate
from tvm_mpq.calibration import CalibrationCache
from tvm_mpq.compiler import compile_model
from tvm_mpq.compiler.agreement import layerwise_agreement
from tvm_mpq.compiler.validate import keep_unsupported_fp32
from tvm_mpq.evaluation.fidelity import fidelity, step_agreement
from tvm_mpq.graph import build_layer_table
from tvm_mpq.runtime.executor import compile_graph


def run(name: str, samples: int) -> dict:
    start = time.perf_counter()
    model = zoo.get(name)
    graph = model.build_graph()
    table = build_layer_table(graph)
    calib = model.calibration(8)
    config, _ = config_for_rate(graph, calib, 100, "weight-sqnr", cache=CalibrationCache())
    kept = keep_unsupported_fp32(config, table)
    feeds = model.calibration(8 + samples)[8:]
    agreement = layerwise_agreement(graph, config, feeds)
    integer, simulated = compile_model(graph, config), compile_model(graph, config, simulate=True)
    fp32 = compile_graph(graph)
    ref = [fp32.run(f) for f in feeds]
    outs, sims = [integer.run(f) for f in feeds], [simulated.run(f) for f in feeds]
    row = {"model": name, "int8_layers": integer.stats["int8_layers"], "layers": len(table), "fp32_no_kernel": len(kept),
           "n_qdq": integer.n_qdq, "n_qdq_naive": integer.n_qdq_naive, "quantized_tensors": len(agreement.tensors),
           "teacher_forced_max_code_diff": agreement.max_code_diff,
           "teacher_forced_differing_fraction": agreement.differing_fraction,
           "end_to_end": step_agreement(outs, sims, ref), "fidelity_int": fidelity(model.task, outs, ref),
           "fidelity_qdq": fidelity(model.task, sims, ref), "samples": len(feeds),
           "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["# Integer model vs QDQ simulation (same scales), fully int8", "",
             "| model | int8 layers | n_qdq / per-layer | quantized tensors | teacher-forced max code diff | codes differing | "
             "end-to-end max (int8 output steps) | within 1 step | output SQNR int / QDQ (dB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e = r["end_to_end"]
        lines.append(f"| {r['model']} | {r['int8_layers']}/{r['layers']} | {r['n_qdq']} / {r['n_qdq_naive']} | "
                     f"{r['quantized_tensors']} | {r['teacher_forced_max_code_diff']:.0f} | "
                     f"{r['teacher_forced_differing_fraction']:.1e} | {e['max_steps']:.2f} | {e['within_one_step']:.4f} | "
                     f"{r['fidelity_int']['output_sqnr_db']:.1f} / {r['fidelity_qdq']['output_sqnr_db']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(zoo.names()))
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/integer_agreement"))
    args = parser.parse_args()
    os.environ.setdefault("TVM_MPQ_NO_PROGRESS", "1")
    rows = [run(m, args.samples) for m in args.models.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(rows, indent=1))
    md = markdown(rows)
    (args.out / "report.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
