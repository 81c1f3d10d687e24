"""End-to-end layer orders against Top-1 order, photo by photo (issue 14's tally)::

    python benchmarks/e2e_orders.py [--model efficientnet-lite0] [--eval-size 94] [--rates 50,40,30,20]
        [--measures sqnr,kl,margin] [--samples 4,16] [-o out/bench/e2e_orders]

QuantuneV2, ``quantunev2-e2e`` (its defaults) and Top-1 order are analysed as ``tvm-mpq eval``
analyses them (stage C for ours, stage A for the baseline, min/max, no bias correction). Then every
layer is run int8 alone on every calibration sample in the switchable probe (the measurement
``quantunev2-e2e`` makes), and the measured layers are ordered by each noise measure computed on
the first N of those samples, lowest first or per BOP saved:

* ``sqnr``: the output's noise power over its signal power (``10^(-SQNR/10)``, ``quantunev2-e2e``'s);
* ``kl``: mean ``KL(softmax(fp32) || softmax(int8))`` over the samples (a classifier's logits);
* ``margin``: the relative change of fp32's top-1 logit's lead over its next four classes.

Each order is allocated at each rate (the allocation's prefix rule) and scored in the eval's
probe on the held-out samples: top-1 agreement with fp32 on all of them and on the first 32
(issue 14's set), output SQNR, and against Top-1 order's point at the same request the photos
only one of the two gets right (``+b/-c``) with the exact two-sided sign test on them (McNemar):
how far apart two orders are beyond which photos happen to be near-ties. Prints and saves
``report.json`` / ``report.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from math import comb
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _noise(outputs: list, reference: list, kind: str) -> float:
    from tvm_mpq.metrics.task_metrics import output_sqnr_db

    if kind == "sqnr":  # quantunev2-e2e's own measure, as a noise power ratio
        return 10.0 ** (-output_sqnr_db(outputs, reference) / 10.0)
    out = np.stack([np.asarray(o[0], np.float64).ravel() for o in outputs])
    ref = np.stack([np.asarray(r[0], np.float64).ravel() for r in reference])
    if kind == "kl":
        def log_softmax(x):
            x = x - x.max(1, keepdims=True)
            return x - np.log(np.exp(x).sum(1, keepdims=True))
        lp, lq = log_softmax(ref), log_softmax(out)
        return float((np.exp(lp) * (lp - lq)).sum(1).mean())
    if kind == "margin":
        top = np.argsort(-ref, 1)[:, :5]
        rows = np.arange(len(ref))[:, None]
        lead = ref[rows, top[:, :1]] - ref[rows, top[:, 1:]]
        moved = (out[rows, top[:, :1]] - out[rows, top[:, 1:]]) - lead
        return float(np.mean((moved / np.maximum(lead, 1e-12)) ** 2))
    raise ValueError(f"unknown noise measure '{kind}'")


def sign_test_p(better: int, worse: int) -> float:
    """Exact two-sided sign test on the discordant samples (McNemar's exact test)."""
    n = better + worse
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(min(better, worse) + 1)) / 2 ** n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--eval-size", type=int, default=94)
    p.add_argument("--rates", default="50,40,30,20")
    p.add_argument("--measures", default="sqnr,kl,margin")
    p.add_argument("--samples", default="4,16", help="calibration samples each measure is computed on")
    p.add_argument("-o", "--out", default="out/bench/e2e_orders")
    args = p.parse_args()

    from benchkit.machine import flags_text, machine_info
    from benchkit.progress import log
    from tvm_mpq.allocation.allocate import allocate_by_rate
    from tvm_mpq.allocation.bops import INT8, bops_reduction_rate
    from tvm_mpq.evaluation.evaluator import ConfigEvaluator
    from tvm_mpq.evaluation.fidelity import scores
    from tvm_mpq.evaluation.method_runs import Stages, run_method
    from tvm_mpq.evaluation.model_data import counts_for, load_model_data
    from tvm_mpq.runtime.executor import host_target

    rates = [float(r) for r in args.rates.split(",")]
    measures = args.measures.split(",")
    sample_counts = [int(n) for n in args.samples.split(",")]
    machine = machine_info(1, host_target())
    data = load_model_data(args.model, counts_for(args.model, eval=args.eval_size))
    stages = Stages.build(data)
    log(f"{args.model}: {data.describe()}")
    runs = {m: run_method(m, data, stages, rates + [100.0]) for m in ("quantunev2", "quantunev2-e2e", "top1")}
    evaluator = ConfigEvaluator(data, stages.graph_c, stages.table_c, runs["quantunev2"].report.measurement)
    ctx = evaluator.ctx
    reference = ctx.reference(data.calib)
    alone = {layer.name: ctx.run({layer.name: INT8}, data.calib) for layer in data.table}
    log(f"every layer int8 alone on {len(data.calib)} calibration samples")

    macs = {layer.name: max(layer.macs, 1) for layer in data.table}
    base = runs["quantunev2"].report.sensitivity
    position = {name: k for k, name in enumerate(base)}
    orders = {"top1": runs["top1"].report.sensitivity,
              f"quantunev2-e2e ({runs['quantunev2-e2e'].report.method_info['order']}, "
              f"{runs['quantunev2-e2e'].report.method_info['samples']} samples)": runs["quantunev2-e2e"].report.sensitivity,
              "quantunev2": base}
    for kind in measures:
        for n in sample_counts:
            noise = {name: _noise(alone[name][:n], reference[:n], kind) for name in macs}
            orders[f"{kind}, lowest first, {n} samples"] = sorted(macs, key=lambda x: (-noise[x], position[x]))
            orders[f"{kind} per BOP, {n} samples"] = sorted(macs, key=lambda x: (-noise[x] / macs[x], position[x]))

    truth = np.array([np.argmax(r[0]) for r in evaluator.reference])
    first = min(32, len(truth))
    right, points = {}, {}
    for label, order in orders.items():
        for rate in rates:
            precisions = allocate_by_rate(data.table, order, rate)
            outputs = ctx.run(precisions, data.eval_feeds)  # run once: its answers and its metrics
            right[label, rate] = np.array([np.argmax(o[0]) for o in outputs]) == truth
            points[label, rate] = {"bops_reduction_rate": bops_reduction_rate(data.table, precisions),
                                   "metrics": scores(data.task, outputs, evaluator.reference, data.labels)}
        log(f"{label}: scored")

    rows = []
    for label in orders:
        cells = []
        for rate in rates:
            mine, top1 = right[label, rate], right["top1", rate]
            better, worse = int((mine & ~top1).sum()), int((~mine & top1).sum())
            point = points[label, rate]
            cells.append({"rate": rate, "achieved": point["bops_reduction_rate"],
                          "top1_agreement": float(mine.mean()), f"top1_agreement_first_{first}": float(mine[:first].mean()),
                          "output_sqnr_db": point["metrics"]["output_sqnr_db"], "vs_top1_better": better,
                          "vs_top1_worse": worse, "sign_test_p": sign_test_p(better, worse)})
        rows.append({"order": label, "points": cells,
                     "mean_top1_agreement": float(np.mean([c["top1_agreement"] for c in cells]))})

    head = (f"{args.model}, {len(truth)} held-out samples (first {first} in brackets), {len(data.calib)} calibration; "
            f"CPU {machine['cpu']} ({flags_text(machine)})")
    lines = [f"# End-to-end orders against Top-1 order\n\n{head}\n",
             "| order | " + " | ".join(f"{r:g}%: agr. (first {first}) / SQNR / vs Top-1, p" for r in rates) + " | mean agr. |",
             "|---" * (len(rates) + 2) + "|"]
    for row in rows:
        cells = [f"{c['top1_agreement']:.3f} ({c[f'top1_agreement_first_{first}']:.3f}) / {c['output_sqnr_db']:.1f} dB / "
                 f"+{c['vs_top1_better']}/-{c['vs_top1_worse']}, {c['sign_test_p']:.2f}" for c in row["points"]]
        lines.append(f"| {row['order']} | " + " | ".join(cells) + f" | {row['mean_top1_agreement']:.4f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(json.dumps({"machine": machine, "model": args.model, "rows": rows,
                                                 "orders": orders}, indent=1))
    log(f"written {out / 'report.md'}, {out / 'report.json'}")


if __name__ == "__main__":
    main()
