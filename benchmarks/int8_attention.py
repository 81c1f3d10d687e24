"""Attention's products of two activations run int8 (``--int8-attention``) against the same fully
int8 config with them fp32 (the default), and the fp32 build, in one process, interleaved.

    python benchmarks/int8_attention.py [--models sudachi-tagger] [--rounds 5] [--runs 20]
        [--threads 2] [-o out/bench/int8_attention]

Per corpus (or zoo) model: the QuantuneV2 config at rate 100 (default quantizers), its matmuls of
two activations made fp32 ("attention fp32", what ``compile --rate 100`` builds) or left int8
("attention int8", ``compile --rate 100 --int8-attention``), each compiled for this host. The
three builds take turns in every round (each runner's minimum of ``--runs`` runs per round;
medians over rounds, the ratio taken within rounds). Output SQNR of both int8 builds against the
fp32 one on 4 held-out samples. Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit.machine import flags_text, machine_info  # noqa: E402
from benchkit.models import corpus_or_zoo  # noqa: E402

BUILDS = ("fp32", "attention fp32", "attention int8")


def measure(name: str, rounds: int, runs: int) -> dict:
    import numpy as np
    from benchkit.timing import interleaved_min

    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.metrics.task_metrics import output_sqnr_db
    from tvm_mpq.runtime.executor import host_tensor

    graph, samples = corpus_or_zoo(name, 20)
    calib, held_out = samples[:16], samples[16:]
    config, report = config_for_rate(graph, calib, 100, "quantunev2")
    int8_attention = copy.deepcopy(config)
    products = keep_unsupported_fp32(config, report.table)
    keep_unsupported_fp32(int8_attention, report.table, int8_attention=True)
    print(f"{name}: {len(products)} products of two activations among {len(report.table)} layers")
    builds = {"fp32": compile_model(graph, None), "attention fp32": compile_model(graph, config),
              "attention int8": compile_model(graph, int8_attention)}
    reference = [builds["fp32"].run(f) for f in held_out]
    sqnr = {key: round(float(output_sqnr_db([builds[key].run(f) for f in held_out], reference)), 2)
            for key in BUILDS[1:]}
    runners = {}
    for key, built in builds.items():
        vm = built.vm()
        inputs = [host_tensor(held_out[0][s.name]) for s in graph.inputs]
        runners[key] = (lambda vm=vm, inputs=inputs: vm["main"](*inputs))
    times = interleaved_min(runners, rounds, runs)
    median = {key: round(float(np.median(ms)), 3) for key, ms in times.items()}
    ratio = round(float(np.median([a / b for a, b in zip(times["attention int8"], times["attention fp32"])])), 3)
    result = {"model": name, "products": len(products), "layers": len(report.table), "ms": median,
              "int8_over_fp32_attention": ratio, "output_sqnr_db": sqnr,
              "n_qdq": {key: builds[key].n_qdq for key in BUILDS[1:]}}
    print(f"  ms {median}; attention int8 / fp32: {ratio}; output SQNR dB {sqnr}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="sudachi-tagger")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/int8_attention"))
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    from tvm_mpq.runtime.executor import host_target

    machine = machine_info(args.threads, host_target())
    print(f"machine: {machine['cpu']} ({flags_text(machine)}), {args.threads} threads")
    results = [measure(name, args.rounds, args.runs) for name in args.models.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    lines = [f"# int8 attention, {machine['cpu']} ({flags_text(machine)}), {args.threads} threads", "",
             "| model | products / layers | fp32 ms | attention fp32 ms | attention int8 ms | int8 / fp32 attention | "
             "SQNR dB (fp32 attn / int8 attn) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        ms, db = r["ms"], r["output_sqnr_db"]
        lines.append(f"| {r['model']} | {r['products']} / {r['layers']} | {ms['fp32']} | {ms['attention fp32']} | "
                     f"{ms['attention int8']} | {r['int8_over_fp32_attention']} | {db['attention fp32']} / "
                     f"{db['attention int8']} |")
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"written: {args.out}/report.json, report.md")


if __name__ == "__main__":
    main()
