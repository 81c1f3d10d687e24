"""Output SQNR of corpus models per sensitivity method and BOPs reduction rate, on held-out inputs.

For each model (:mod:`tvm_mpq.corpus`) and method: the config at each rate from the same
calibration inputs, compiled for this host, its outputs on held-out inputs against the fp32
build's, and which layers the method kept fp32. Shows where a ranking from local metrics keeps
the wrong layer fp32 (openWakeWord's log-mel front end: QuantuneV2 keeps an STFT conv, the error
comes from the mel ``MatMul`` before the log)::

    python benchmarks/corpus_methods.py --models openwakeword-melspec --rates 50,100
    python benchmarks/corpus_methods.py --models magika,khmersm --methods quantunev2,quantunev2-e2e,inorder

Prints a table and writes ``report.json`` under ``-o``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchkit.machine import flags_text, machine_info
from benchkit.progress import log


def run(model_name: str, methods: list[str], rates: list[float], calib_size: int, eval_size: int) -> list[dict]:
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.corpus.catalog import by_name
    from tvm_mpq.corpus.fetch import fetch
    from tvm_mpq.corpus.inputs import feeds
    from tvm_mpq.metrics.task_metrics import output_sqnr_db
    from tvm_mpq.zoo import load_model

    model = by_name(model_name)
    graph = load_model(str(fetch(model)), model.shapes)
    calib, held_out = feeds(model, graph, calib_size), feeds(model, graph, eval_size, offset=calib_size)
    fp32 = compile_model(graph, config_for_rate(graph, calib, 0, "inorder")[0])
    reference = [fp32.run(feed) for feed in held_out]
    rows = []
    for method in methods:
        report = None
        for rate in rates:
            config, report = config_for_rate(graph, calib, rate, method, report=report)
            built = compile_model(graph, config)
            sqnr = output_sqnr_db([built.run(feed) for feed in held_out], reference)
            kept = [name for name, layer in config.layers.items() if layer.w_bits is None]
            rows.append({"model": model_name, "method": method, "rate": rate, "output_sqnr_db": round(float(sqnr), 1),
                         "fp32_layers": kept, "int8_layers": len(config.layers) - len(kept)})
            log(f"{model_name} {method} {rate:g}%: {sqnr:.1f} dB, fp32 {kept if len(kept) <= 4 else len(kept)}")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="corpus model names, comma-separated")
    p.add_argument("--methods", default="quantunev2,quantunev2-e2e")
    p.add_argument("--rates", default="50,100")
    p.add_argument("--calib-size", type=int, default=8)
    p.add_argument("--eval-size", type=int, default=16)
    p.add_argument("-o", "--out", type=Path, default=Path("out/bench/corpus_methods"))
    args = p.parse_args(argv)
    from tvm_mpq.runtime.executor import host_target

    machine = machine_info(int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1)), host_target())
    rows = [row for name in args.models.split(",") if name
            for row in run(name, args.methods.split(","), [float(r) for r in args.rates.split(",")],
                           args.calib_size, args.eval_size)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(f"CPU flags {flags_text(machine)}; calibration {args.calib_size} / held-out {args.eval_size} inputs\n")
    print("| model | method | rate | output SQNR | fp32 layers |\n|---|---|---|---|---|")
    for r in rows:
        kept = ", ".join(r["fp32_layers"]) if len(r["fp32_layers"]) <= 4 else f"{len(r['fp32_layers'])} layers"
        print(f"| {r['model']} | {r['method']} | {r['rate']:g} | {r['output_sqnr_db']} dB | {kept or '-'} |")


if __name__ == "__main__":
    main()
