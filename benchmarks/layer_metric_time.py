"""What QuantuneV2's per-layer metrics cost a calibration sample: the product's accumulation
against the one before 2026-12-07 (each metric converting its pair to float64 itself, the KL
histogram binned by explicit edges), on one model's real tensors, in one run.

    python benchmarks/layer_metric_time.py [--model efficientnet-lite0] [--samples 16] [--rounds 3]
        [-o out/bench/layer_metric_time]

Pass 1 (fp32) and pass 2 (every layer int8-simulated) of ``measure_layers`` are run once, on its
one build (the analysis probe with the MAC outputs exposed), to get every MAC output of both
models on ``--samples`` calibration samples; then each round times the two accumulations over
all of them, alternating which goes first, and checks that they give the same metrics to the
bit. Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _per_metric_float64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).ravel()


def metrics_before(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[float, float, float, float]]:
    """The accumulation as it was: every metric converts the pair itself; KL bins by edges."""
    out = []
    for x, x_hat in pairs:
        a, e = _per_metric_float64(x), _per_metric_float64(x) - _per_metric_float64(x_hat)
        signal, noise = float(a @ a), float(e @ e)
        e2 = _per_metric_float64(x) - _per_metric_float64(x_hat)
        total = float(e2 @ e2)
        c, d = _per_metric_float64(x), _per_metric_float64(x_hat)
        xy, xx, yy = float(c @ d), float(c @ c), float(d @ d)
        lo, hi = float(np.min(x)), float(np.max(x))
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 257)
        p = np.histogram(np.clip(x, edges[0], edges[-1]), edges)[0]
        q = np.histogram(np.clip(x_hat, edges[0], edges[-1]), edges)[0]
        out.append((signal / max(noise, 1e-300), total, xy / np.sqrt(max(xx * yy, 1e-300)), float(p @ q)))
    return out


def metrics_now(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[float, float, float, float]]:
    """The product's accumulation (``tvm_mpq.metrics``), one pair at a time."""
    from tvm_mpq.metrics.local_metrics import as_float64, make_metric

    out = []
    for x, x_hat in pairs:
        metrics = {name: make_metric(name) for name in ("sqnr_db", "mse", "cosine", "kl")}
        a, b = as_float64(x), as_float64(x_hat)
        for metric in metrics.values():
            metric.update(a, b)
        sq, kl = metrics["sqnr_db"], metrics["kl"]
        cos = metrics["cosine"]
        out.append((sq.signal / max(sq.noise, 1e-300), metrics["mse"].total,
                    cos.xy / np.sqrt(max(cos.xx * cos.yy, 1e-300)), float(kl.p @ kl.q)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/layer_metric_time"))
    args = parser.parse_args()

    from benchkit.machine import flags_text, machine_info
    from benchkit.two_builds import write_report
    from tvm_mpq.allocation.bops import INT8
    from tvm_mpq.calibration.calibrate import calibrate, run_exposed
    from tvm_mpq.graph.layer_table import build_layer_table
    from tvm_mpq.quantization.quantizers import act_qparams
    from tvm_mpq.runtime.executor import host_target
    from tvm_mpq.sensitivity.probe import PrecisionProbe
    from tvm_mpq.zoo.registry import get

    info = machine_info(1, host_target())
    model = get(args.model)
    graph, feeds = model.build_graph(), model.calibration(args.samples)
    table = build_layer_table(graph)
    outs = [layer.var for layer in table]
    qparams = {v: act_qparams(*r[8], 8) for v, r in calibrate(graph, feeds, table.activation_operands()).items()}
    probe = PrecisionProbe(graph, table, lambda var, _bits: qparams[var], kernels=False, expose=outs)  # the analysis' build
    tensors: dict[str, list[list[np.ndarray]]] = {"fp32": [], "int8": []}
    for kind, precisions in (("fp32", {}), ("int8", {layer.name: INT8 for layer in table})):
        run_exposed(graph, feeds, outs, lambda _i, _o, t, kind=kind: tensors[kind].append(t), desc=f"{kind} outputs",
                    compiled=probe.assignment(precisions))
    pairs = [(x, x_hat) for ref, sim in zip(tensors["fp32"], tensors["int8"]) for x, x_hat in zip(ref, sim)]
    values = sum(x.size for x, _ in pairs)
    seconds: dict[str, list[float]] = {"before": [], "now": []}
    results = {}
    for r in range(args.rounds):
        for how in (("before", "now") if r % 2 == 0 else ("now", "before")):
            start = time.perf_counter()
            results[how] = (metrics_before if how == "before" else metrics_now)(pairs)
            seconds[how].append(time.perf_counter() - start)
    same = results["before"] == results["now"]
    row = {"model": args.model, "samples": args.samples, "layers": len(outs), "values_per_metric": values,
           "seconds_before": round(float(np.median(seconds["before"])), 2),
           "seconds_now": round(float(np.median(seconds["now"])), 2), "same_metrics": same}
    print(row, flush=True)
    lines = ["# QuantuneV2's per-layer metrics: the accumulation before and now", "",
             f"{flags_text(info)}; {args.samples} calibration samples, median of {args.rounds} alternating rounds", "",
             "| model | MAC outputs x samples | values | before s | now s | speed-up | same metrics |",
             "|---|---|---|---|---|---|---|",
             f"| {args.model} | {len(outs)} x {args.samples} | {values / 1e6:.1f} M | {row['seconds_before']:.2f} | "
             f"{row['seconds_now']:.2f} | {row['seconds_before'] / max(row['seconds_now'], 1e-3):.1f}x | "
             f"{'yes' if same else 'NO'} |"]
    write_report(args.out, info, [row], lines)


if __name__ == "__main__":
    main()
