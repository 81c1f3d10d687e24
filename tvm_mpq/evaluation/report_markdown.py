"""``report.md`` of ``tvm-mpq eval``: the paper's tables from ``report.json``'s content."""

from __future__ import annotations

from tvm_mpq.evaluation.method_runs import OURS
from tvm_mpq.evaluation.tasks import SHORT

_LOWER_IS_BETTER = {"kl_softmax"}
TIE = 1e-9


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric == "kl_softmax":
        return f"{value:.4f}"
    if metric == "output_sqnr_db":
        return f"{value:.1f}"
    return f"{value:.3f}"


def _better(metric: str, a: float, b: float) -> bool:
    """``a`` strictly better than ``b``."""
    return a < b - TIE if metric in _LOWER_IS_BETTER else a > b + TIE


def _rate_points(model: dict) -> list[dict]:
    return [p for p in model["points"] if p["requested_rate"] is not None]


RATE_TOL = 0.05
"""Achieved rates closer than this (percentage points) count as equal cost."""
VERDICT_MARK = {"win": "W", "tie": "=", "loss": "L", "trade-off": "~"}


def pareto_verdict(qv2: dict, other: dict, metric: str) -> str:
    """QuantuneV2's point against another at the same requested rate, on (metric, achieved BOPs
    reduction rate): ``win`` if QuantuneV2 is at least as good on both and better on one,
    ``loss`` if the other point is, ``tie`` if equal on both, else ``trade-off``."""
    q, o = qv2["metrics"][metric], other["metrics"][metric]
    dq, do = qv2["bops_reduction_rate"], other["bops_reduction_rate"]
    m = 1 if _better(metric, q, o) else (-1 if _better(metric, o, q) else 0)
    r = 1 if dq > do + RATE_TOL else (-1 if do > dq + RATE_TOL else 0)
    if m >= 0 and r >= 0:
        return "tie" if m == r == 0 else "win"
    if m <= 0 and r <= 0:
        return "loss"
    return "trade-off"


def metric_verdict(qv2: dict, other: dict, metric: str) -> str:
    """QuantuneV2's point against another at the same requested rate on ``metric`` alone (what the
    user asked for is the requested rate; both points meet it): ``better``, ``equal`` or ``worse``."""
    q, o = qv2["metrics"][metric], other["metrics"][metric]
    return "better" if _better(metric, q, o) else ("worse" if _better(metric, o, q) else "equal")


def _behind(metric: str, qv2: dict, other: dict) -> float:
    """How far QuantuneV2's point trails the other on ``metric`` (0 where it does not)."""
    q, o = qv2["metrics"][metric], other["metrics"][metric]
    return max(0.0, q - o if metric in _LOWER_IS_BETTER else o - q)


def qv2_comparison(model: dict, metric: str | None = None, ours: str = "quantunev2") -> list[dict]:
    """Per requested rate: the point of ``ours`` (QuantuneV2 or its refinement) and, per baseline
    (every method not in ``OURS``), its point, the Pareto verdict (:func:`pareto_verdict`), the
    verdict at the request on the metric alone (:func:`metric_verdict`) and how far ours trails it
    (``behind``), on ``metric`` (default: the primary one)."""
    metric = metric or model["primary_metric"]
    rows = []
    points = _rate_points(model)
    for rate in dict.fromkeys(p["requested_rate"] for p in points):
        at = {p["method"]: p for p in points
              if p["requested_rate"] == rate and (p["method"] == ours or p["method"] not in OURS)}
        qv2 = at.pop(ours, None)
        if qv2 is None or not at:
            continue
        rows.append({"rate": rate, "qv2_point": qv2,
                     "baselines": {m: {"point": p, "verdict": pareto_verdict(qv2, p, metric),
                                       "at_request": metric_verdict(qv2, p, metric),
                                       "behind": _behind(metric, qv2, p)}
                                   for m, p in at.items()}})
    return rows


def _summary_section(report: dict) -> list[str]:
    lines = ["## QuantuneV2 vs the baselines", "",
             "Per model and requested rate: each method's value and achieved BOPs reduction rate (every method "
             "meets the request or exceeds it: the allocation stops at the first layer that would break it, so "
             "achieved rates differ). The mark compares QuantuneV2 (in the second table per model: its "
             "end-to-end refinement, quantunev2-e2e) with that baseline on both: W = ours "
             "at least as good on the metric and the rate and better on one, L = the baseline is, ~ = trade-off "
             "(better on one, worse on the other), = = equal. 'sim.': the baseline's point uses bit-widths "
             "without an integer kernel (simulated). The output SQNR vs fp32 is the continuous companion where "
             "the task metric saturates.", ""]
    tally: dict[tuple[str, str, str, str], dict[str, int]] = {}
    for model, ours in ((m, o) for m in report["models"] for o in OURS):
        for metric in dict.fromkeys([model["primary_metric"], "output_sqnr_db"]):
            rows = qv2_comparison(model, metric, ours)
            if not rows:
                continue
            baselines = list(rows[0]["baselines"])
            lines += [f"**{model['model']}, {SHORT.get(metric, metric)}, {ours}**", "",
                      f"| rate | {ours} | " + " | ".join(baselines) + " |", "|---|---|" + "---|" * len(baselines)]
            for row in rows:
                q = row["qv2_point"]
                cells = []
                for b in baselines:
                    entry = row["baselines"][b]
                    p, verdict = entry["point"], entry["verdict"]
                    sim = " sim." if p["n_simulated"] else ""
                    cells.append(f"{_fmt(metric, p['metrics'][metric])} @{p['bops_reduction_rate']:.0f}%{sim} "
                                 f"{VERDICT_MARK[verdict]}")
                    counts = tally.setdefault((model["model"], SHORT.get(metric, metric), ours, b), {"behind": 0.0})
                    counts[verdict] = counts.get(verdict, 0) + 1
                    counts[entry["at_request"]] = counts.get(entry["at_request"], 0) + 1
                    counts["behind"] = max(counts["behind"], entry["behind"])
                lines.append(f"| {row['rate']:g}% | {_fmt(metric, q['metrics'][metric])} "
                             f"@{q['bops_reduction_rate']:.0f}% | " + " | ".join(cells) + " |")
            lines.append("")
    if tally:
        lines += ["Tally over the rates of QuantuneV2, and of its refinement, against each baseline: W / = / ~ / L "
                  "on the metric and the achieved rate together (as marked above), and on the metric alone at "
                  "the requested rate (better / equal / worse, and the most ours trails the baseline at any rate):",
                  "", "| model | metric | method | baseline | W | = | ~ | L | at the request: better | equal | worse "
                  "| most behind |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for (model, metric, ours, baseline), c in tally.items():
            lines.append(f"| {model} | {metric} | {ours} | {baseline} | {c.get('win', 0)} | {c.get('tie', 0)} | "
                         f"{c.get('trade-off', 0)} | {c.get('loss', 0)} | {c.get('better', 0)} | {c.get('equal', 0)} "
                         f"| {c.get('worse', 0)} | {_fmt(metric, c['behind'])} |")
        lines.append("")
    return lines


def _table3(report: dict) -> list[str]:
    models = report["models"]
    lines = ["## Table 3: sensitivity-list generation time (s)", "",
             "| method | " + " | ".join(m["model"] for m in models) + " |",
             "|---|" + "---|" * len(models)]
    methods = list(dict.fromkeys(a["method"] for m in models for a in m["analyses"]))
    for method in methods:
        cells = []
        for m in models:
            a = next((a for a in m["analyses"] if a["method"] == method), None)
            e2e = f" + {a['e2e_runs']} runs x {a['e2e_samples']} samples" if a is not None and "e2e_runs" in a else ""
            cells.append("-" if a is None else f"{a['seconds']:.1f} ({a['inference_runs']} runs"
                         + (f" x {a['samples']} samples" if a["samples"] else "") + f"{e2e}, stage {a['stage']})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Runs: inference passes over the samples (QuantuneV2: 2, fp32 + all-int8; quantunev2-e2e: those 2 "
              "+ one per measured layer and one fp32, on its few samples); Top-1: one per layer "
              "+ fp32; Pandey: phase-1 runs per (quantizer group, candidate) + measured phase-2 points. "
              "Weight-only methods run no inference. Each method compiles its own modules.", ""]
    return lines


def _pivot(model: dict, points: list[dict], metric: str, key: str = "method") -> list[str]:
    rates = list(dict.fromkeys(p["requested_rate"] for p in points))
    rows = list(dict.fromkeys(p[key] for p in points))
    best = {}
    for rate in rates:
        values = [p["metrics"][metric] for p in points if p["requested_rate"] == rate]
        best[rate] = (min if metric in _LOWER_IS_BETTER else max)(values)
    lines = [f"| {key} | " + " | ".join(f"{r:g}%" for r in rates) + " |", "|---|" + "---|" * len(rates)]
    for row in rows:
        cells = []
        for rate in rates:
            p = next((p for p in points if p[key] == row and p["requested_rate"] == rate), None)
            if p is None:
                cells.append("-")
                continue
            v = _fmt(metric, p["metrics"][metric])
            v = f"**{v}**" if abs(p["metrics"][metric] - best[rate]) <= TIE else v
            sim = f", {p['n_simulated']} sim." if p["n_simulated"] else ""
            cells.append(f"{v} ({p['bops_reduction_rate']:.0f}%, {p['model_size_mb']:.2f} MB{sim})")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def _detail(points: list[dict], metrics: list[str]) -> list[str]:
    head = ("| method | rate req. | achieved | bops_ratio | fp32 | int8 | sim. | size MB | "
            + " | ".join(SHORT.get(m, m) for m in metrics) + " |")
    lines = [head, "|---" * (8 + len(metrics)) + "|"]
    for p in points:
        req = "-" if p["requested_rate"] is None else f"{p['requested_rate']:g}"
        label = "" if p["requested_rate"] is not None else " " + p["label"]
        if p.get("avg_w_bits") is not None:
            label += f" (avg W {p['avg_w_bits']:.2f} b)"
        lines.append(f"| {p['method']}{label} | {req} | "
                     f"{p['bops_reduction_rate']:.1f} | {p['bops_ratio']:.4f} | {p['n_fp32']} | {p['n_int8']} | "
                     f"{p['n_simulated']} | {p['model_size_mb']:.3f} | "
                     + " | ".join(_fmt(m, p["metrics"].get(m)) for m in metrics) + " |")
    return lines


def _model_section(model: dict) -> list[str]:
    metric = model["primary_metric"]
    metrics = list(model["fp32"])
    c = model["counts"]
    lines = [f"## {model['model']} ({model['task']})", "",
             f"{model['n_layers']} MAC layers, {model['macs'] / 1e6:.1f} M MACs. Samples: {c['calib']} calibration, "
             f"{c['eval']} evaluation" + (f" (`{model['samples']['name']}`)" if model.get("samples") else "")
             + f", Top-1 {c['top1'] if c['top1'] is not None else 'all'}, Pandey {c['pandey']}; "
             f"recovery curves at {c['curve_points'] or 'every'} point(s) on "
             f"{c.get('curve_samples') or c['eval']} samples. Primary metric: **{SHORT.get(metric, metric)}**. "
             f"Evaluated with: {model['evaluated_with']}. Model wall time {model['seconds']:.0f} s.", "",
             "fp32: " + ", ".join(f"{SHORT.get(k, k)} {_fmt(k, v)}" for k, v in model["fp32"].items())
             + f" ({model['fp32_size_mb']:.3f} MB); all W8A8: "
             + ", ".join(f"{SHORT.get(k, k)} {_fmt(k, v)}" for k, v in model["int8"].items())
             + f" ({model['int8_point']['model_size_mb']:.3f} MB).", "",
             f"### Table 2: {SHORT.get(metric, metric)} (model size) per method and BOPs reduction rate", "",
             "Cells: value (achieved BOPs reduction rate, model size). Bold: best at that rate. 'sim.': layers at "
             "bit-widths without an integer kernel (simulated); the others are W8A8 (integer kernel) or fp32.", ""]
    lines += _pivot(model, _rate_points(model), metric)
    if metric != "output_sqnr_db":
        lines += ["", "Output SQNR vs fp32 (dB) of the same points:", ""]
        lines += _pivot(model, _rate_points(model), "output_sqnr_db")
    lines += ["", f"![Table 2 plot]({model['model']}/table2.png)", "", "All metrics (MixQuant's own QEM "
              "assignments at the end: rate >= 100%, weights below 8 bits simulated):", ""]
    lines += _detail(model["points"], metrics)
    if "ablation" in model:
        lines += ["", "### Table 8: ablation (QuantuneV2's ingredients added one at a time)", "",
                  "| step | stage | " + " | ".join(f"{p['requested_rate']:g}%" for p in model["ablation"][0]["points"])
                  + " | recovery mean | recovery mean out SQNR dB | fp32 layers to recover |",
                  "|---|---|" + "---|" * (len(model["ablation"][0]["points"]) + 3)]
        for row in model["ablation"]:
            rs = row["recovery_summary"]
            lines.append(f"| {row['label']} | {row['stage']} | "
                         + " | ".join(_fmt(metric, p["metrics"][metric]) for p in row["points"])
                         + f" | {_fmt(metric, rs['mean'])} | {_fmt('output_sqnr_db', rs.get('mean_output_sqnr_db'))} | "
                         f"{rs['fp32_layers_to_recover']} |")
        same = [(a["label"], b["label"]) for a, b in zip(model["ablation"], model["ablation"][1:])
                if a["sensitivity"] == b["sensitivity"]]
        if same:
            lines += ["", "Identical sensitivity lists: " + "; ".join(f"'{a}' = '{b}'" for a, b in same) + "."]
    if "local_metrics" in model:
        lines += ["", "### Local-metric study: accuracy recovery, dequantizing layers one by one (Fig. 3)", "",
                  "Rankings from QuantuneV2's stage-C measurement (every layer int8 at once), most sensitive "
                  "first: W-SQNR / A-SQNR = weight / layer-output SQNR, lowest first; W-delta / A-delta = their "
                  "SQNR delta (Eq. 16), most negative first; W&A-delta = 2 rank(W-delta) + rank(A-delta); MSE = "
                  "output MSE, largest first; cosine = output cosine similarity, lowest first; KL = KL of the "
                  "output value histograms, largest first; QuantuneV2 = W&A-delta after the MSE > 5x mean layers.",
                  "", f"![local metrics]({model['model']}/recovery_local_metrics.png)", "",
                  "| ranking | mean " + SHORT.get(metric, metric) + " over the curve | mean out SQNR dB | "
                  "fp32 layers to recover | first 3 layers of the list |", "|---|---|---|---|---|"]
        for label, s in model["local_metrics"]["summary"].items():
            first = ", ".join(model["local_metrics"]["rankings"][label][:3])
            lines.append(f"| {label} | {_fmt(metric, s['mean'])} | {_fmt('output_sqnr_db', s.get('mean_output_sqnr_db'))} | "
                         f"{s['fp32_layers_to_recover']} | {first} |")
    if "method_curves" in model:
        lines += ["", "### Recovery by each method's sensitivity list (Fig. 8)", "",
                  f"![methods]({model['model']}/recovery_methods.png)", "",
                  "| method | mean " + SHORT.get(metric, metric) + " over the curve | mean out SQNR dB | "
                  "fp32 layers to recover |", "|---|---|---|---|"]
        for method, s in model["method_curves"]["summary"].items():
            lines.append(f"| {method} | {_fmt(metric, s['mean'])} | {_fmt('output_sqnr_db', s.get('mean_output_sqnr_db'))} | "
                         f"{s['fp32_layers_to_recover']} |")
    if "integer_check" in model:
        ic = model["integer_check"]
        lines += ["", f"### Integer compiler check (quantunev2 at {ic['requested_rate']:g}%, stage C, n_qdq {ic['n_qdq']})", "",
                  "integer: " + ", ".join(f"{SHORT.get(k, k)} {_fmt(k, v)}" for k, v in ic["integer"].items()),
                  "", "probe: " + ", ".join(f"{SHORT.get(k, k)} {_fmt(k, v)}" for k, v in ic["probe"].items()),
                  "", f"integer vs probe outputs: max {ic['integer_vs_probe']['max_steps']:.2f} int8 steps, "
                  f"{100 * ic['integer_vs_probe']['within_one_step']:.2f}% within one step."]
    return lines + [""]


def markdown(report: dict) -> str:
    """The whole report: summary, Table 3 across models, then per model Tables 2 and 8 and the curves."""
    lines = ["# tvm-mpq eval: the QuantuneV2 paper's experiments on the zoo", "",
             ("**Partial report: the run is still going (or stopped) after the models below.**\n\n"
              if not report.get("complete", True) else "")
             + f"TVM {report['tvm_version']}, {report['target']}, {report.get('device', '')}; rates {', '.join(f'{r:g}' for r in report['rates'])}% "
             f"(BOPs reduction: 0% = fp32, 100% = all W8A8); methods {', '.join(report['methods'])}; baselines "
             f"analysed at stage {report['baseline_stage']}, QuantuneV2 at stage C; observer {report['observer']}, "
             f"g = {report['g']:g}; MixQuant QEM {report['mixquant_qem']:g} for rate points. "
             f"Wall time {report['wall_seconds'] / 60:.1f} min.", ""]
    lines += _summary_section(report)
    lines += _table3(report)
    for model in report["models"]:
        lines += _model_section(model)
    return "\n".join(lines)
