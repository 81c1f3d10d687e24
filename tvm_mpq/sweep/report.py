"""The sweep report: JSON (docs/design.md "Report contract", more keys welcome), a Markdown table, a PNG.

Contract keys, in this order, then the extras::

    {"model", "target", "device", "tvm_version", "analysis": {"method", "seconds", "n_layers"},
     "points": [{"method", "requested_rate", "bops_reduction_rate", "bops_ratio", "fp32_layers",
                 "n_qdq", "model_size_mb", "latency_ms": {"median", "p10", "p90"},
                 "fidelity": {...}, "accuracy": {...}}], ...}

``analysis`` is the first method's analysis; ``analyses`` lists every method's. ``model_size_mb``
is the exported library's size in MB (10^6 bytes). ``accuracy`` is ``{}`` when the evaluation
samples have no labels. ``eval.name`` names the sample set (the one ``tvm-mpq eval`` and the
benchmarks score on).

Timing is interleaved (:mod:`~tvm_mpq.sweep.interleave`): ``rounds`` is the number of
round-robin rounds; a point's ``latency_ms`` is over its rounds (``median``, ``p10``, ``p90``,
``min``, ``max``, ``per_round``, ``rounds``, ``repeat``, ``number``) and ``ratio_to_fp32`` its
latency over the fp32 baseline's in the same round on the same device (``median``, ``min``,
``max``, ``per_round``). ``baseline`` says which library is the fp32 baseline, ``devices``
which points each device timed, ``stability`` how much the fp32 baseline moved between rounds,
``monotonicity`` per method whether latency falls with the achieved rate, judged on the
within-round ratios (:mod:`~tvm_mpq.sweep.rounds`).

With ``--tune-trials`` (or a tuning database for the device) each point's ``build.tuning`` says
how many of its MAC kernels were tuned and how many reused from the database; ``tuning`` sums
them up (``device``, ``database``, ``tuned``, ``reused``, ``per_point``; null without tuning).

A compile-only point (CUDA without a GPU) has ``latency_ms``, ``fidelity`` and ``accuracy``
null and says why in ``run_skipped``. Non-finite numbers are written as null (strict JSON).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from tvm_mpq.evaluation.fidelity import Reference, figures
from tvm_mpq.sweep.fields import cell, metric_names, point_label
from tvm_mpq.sweep.plan import SweepOptions, TimingOptions
from tvm_mpq.sweep.remote import Execution

CONTRACT_KEYS = ("model", "target", "device", "tvm_version", "analysis", "points")
ANALYSIS_KEYS = ("method", "seconds", "n_layers")
POINT_KEYS = ("method", "requested_rate", "bops_reduction_rate", "bops_ratio", "fp32_layers", "n_qdq",
              "model_size_mb", "latency_ms", "fidelity", "accuracy")
LATENCY_KEYS = ("median", "p10", "p90")
EMULATION_NOTE = "latencies are QEMU user-mode emulation times on this machine: compare only ratios between points"
TIMING_METHOD = ("interleaved: all points built first, then on each device every point and the fp32 baseline "
                 "timed once per round, round-robin (round r starts at point r mod n); per round and point one "
                 "time_evaluator measurement over RPC (per-repeat mean of `number` runs; the round's latency is "
                 "the fastest repeat: other jobs only add time); latency_ms over the rounds; ratio_to_fp32 = point / fp32 baseline "
                 "within each round")


def new_report(model: str, options: SweepOptions, execution: Execution, task: str, reference: Reference,
               timing: TimingOptions) -> dict:
    """The report before any point: the contract's header, ``analysis`` None until the first one."""
    import tvm

    from targets import get_target

    fp32_accuracy = figures(task, reference.outputs, reference)["accuracy"]
    return {
        "model": model, "target": options.target, "device": execution.device, "tvm_version": tvm.__version__,
        "analysis": None, "points": [],
        "task": task, "tvm_target": get_target(options.target).target_dict(), "stage": options.stage,
        "methods": list(options.methods), "rates": list(options.rates),
        "emulated": execution.emulated, "latency_note": EMULATION_NOTE if execution.emulated else "native device times",
        "eval": reference.samples.to_json(),
        "reference": {"runs_on": reference.runs_on, **({"accuracy": fp32_accuracy} if fp32_accuracy else {})},
        "rounds": timing.rounds,
        "timing": {**timing.to_json(), "method": TIMING_METHOD},
        "calibration": {"source": options.calib or "bundled samples", "samples": options.calib_size,
                        "observer": options.observer, "equalize": options.ptq.equalize,
                        "bias_correction": options.ptq.at_stage(options.stage).bias_correction,
                        "channel_act": options.ptq.channel_act, "measured_bias": options.ptq.measured_bias,
                        "weight_rounding": options.ptq.at_stage(options.stage).weight_rounding},
        "analyses": [], "rpc": execution.to_json(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(report: dict, path: Path) -> Path:
    """Write ``report`` as strict JSON at ``path`` (non-finite numbers -> null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_finite(report), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def write_outputs(report: dict, path: Path) -> list[Path]:
    """The JSON at ``path``, the Markdown table and the PNG plot next to it (same stem)."""
    from tvm_mpq.sweep.plot import plot_sweep

    md = path.with_suffix(".md")
    md.write_text(markdown(report))
    png = plot_sweep(report, path.with_suffix(".png"))
    return [write_json(report, path), md, png]


def tuning_summary(points: list[dict], baseline: dict | None = None) -> dict | None:
    """The report's ``tuning`` object: where the points' MAC kernels were tuned (``device``,
    ``database``, ``trials_per_task``) and how many each point tuned and reused
    (``per_point``), and the fp32 baseline built for a sweep without a rate-0 point
    (``baseline``: its tuning, None when it was not built or not tuned); totals ``tuned``,
    ``reused`` over both. None when nothing was tuned."""
    runs = [(i, (p.get("build") or {}).get("tuning")) for i, p in enumerate(points)]
    runs = [(i, t) for i, t in runs if t]
    every = [t for _, t in runs] + ([baseline] if baseline else [])
    if not every:
        return None
    last = every[-1]

    def counts(t: dict) -> dict:
        return {"tasks": t["tasks"], "tuned": t["tuned"], "reused": t["reused"], "seconds": t["seconds"]}

    return {"device": last.get("device"), "database": last.get("database"),
            "trials_per_task": last.get("trials_per_task"),
            "tuned": sum(t["tuned"] for t in every), "reused": sum(t["reused"] for t in every),
            "per_point": [{"point": i, **counts(t)} for i, t in runs],
            "baseline": counts(baseline) if baseline else None}


def _tuning_cell(point: dict) -> str:
    t = (point.get("build") or {}).get("tuning")
    return f"{t['tuned']} / {t['reused']}" if t else "-"


def _timing_lines(report: dict) -> list[str]:
    timing = report["timing"]
    rounds = report.get("rounds") or timing.get("rounds")
    lines = [f"- timing: {timing['method']}" + (f"; {rounds} round(s)" if rounds else "")
             + f" (per round and point up to {timing['repeat']} repeats, <= {timing['max_seconds']:g} s)"]
    if report.get("baseline"):
        lines.append(f"- fp32 baseline: {report['baseline']['source']}")
    stability = report.get("stability")
    if stability:
        moved = ", ".join(f"{d['server']} {d['fp32_spread_pct']:.1f}%" for d in stability["devices"])
        lines.append(f"- stability: the fp32 baseline moved {stability['fp32_spread_pct']:.1f}% between rounds "
                     f"((max - min) / median; {moved})")
    for method, verdict in (report.get("monotonicity") or {}).items():
        steps = "; ".join(f"{s['from_rate']:.1f}% -> {s['to_rate']:.1f}%: {s['verdict']} "
                          f"({s['median_change'] * 100:+.1f}%, slower in {s['rounds_slower']} round(s))"
                          for s in verdict["steps"])
        lines.append(f"- latency vs rate, {method} (within-round ratios): **{verdict['verdict']}**"
                     + (f" ({steps})" if steps else ""))
    return lines


def markdown(report: dict) -> str:
    """The report as Markdown: the set-up, then one table row per point."""
    points = report["points"]
    fid, acc = metric_names(points, "fidelity"), metric_names(points, "accuracy")
    emulated = report.get("emulated")
    unit = "ms, QEMU" if emulated else "ms"
    samples = report["eval"]
    lines = [f"# {report['model']} on {report['target']}: latency and fidelity vs BOPs reduction rate", "",
             f"- device: {report['device']}",
             f"- TVM {report['tvm_version']}, target `{json.dumps(report.get('tvm_target'))}`, stage {report.get('stage')}",
             f"- evaluation: {samples['source']}" + (f" (`{samples['name']}`)" if samples.get("name") else "")
             + f"; fidelity vs the fp32 reference run on {report['reference']['runs_on']}",
             *_timing_lines(report)]
    for a in report.get("analyses", []):
        lines.append(f"- analysis {a['method']}: {a['seconds']:.1f} s, {a['n_layers']} layers"
                     + (f"; skipped: {'; '.join(a['skipped_allocations'])}" if a.get("skipped_allocations") else ""))
    ref_acc = report["reference"].get("accuracy") or {}
    if ref_acc:
        lines.append("- fp32 reference: " + ", ".join(f"{k} {v:.4f}" for k, v in ref_acc.items()))
    if report.get("rpc", {}).get("servers_used"):
        lines.append(f"- RPC ({report['rpc']['mode']}): servers used {', '.join(report['rpc']['servers_used'])}")
    tuning = report.get("tuning") or tuning_summary(points)
    if tuning:
        lines.append(f"- MetaSchedule tuning on {tuning['device']}: {tuning['trials_per_task']} trials per new kernel, "
                     f"{tuning['tuned']} kernel(s) tuned and {tuning['reused']} reused from the database over the "
                     f"points" + (" and the fp32 baseline" if tuning.get("baseline") else "")
                     + f" ({tuning['database']})" + ("; emulated timings rank candidates for the emulator, "
                                                         "not for a real Arm core" if emulated else ""))
    if emulated:
        lines += ["", f"> **Emulation:** {EMULATION_NOTE}."]
    skipped = report.get("rpc", {}).get("runs_skipped")
    if skipped:
        lines += ["", f"> **Runs skipped:** {skipped}."]
    header = ["method", "requested %", "achieved %", "bops_ratio", "fp32 layers", "n_qdq", "size MB",
              f"median ({unit})", "p10", "p90", "x fp32 (median)", "x fp32 min-max", "x fp32 per round",
              *fid, *acc, "server", *(["tuned / reused"] if tuning else [])]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in points:
        lat = p.get("latency_ms") or {}
        ratio = p.get("ratio_to_fp32") or {}
        requested = p["allocation"] if p.get("allocation") else f"{p['requested_rate']:g}"
        row = [p["method"], requested, cell(p["bops_reduction_rate"], 1), cell(p["bops_ratio"], 4),
               str(len(p["fp32_layers"])), str(p["n_qdq"]), cell(p["model_size_mb"], 2),
               cell(lat.get("median"), 3), cell(lat.get("p10"), 3), cell(lat.get("p90"), 3),
               cell(ratio.get("median"), 3),
               f"{cell(ratio.get('min'), 3)}-{cell(ratio.get('max'), 3)}" if ratio else "-",
               " / ".join(cell(r, 3) for r in ratio.get("per_round", [])) or "-",
               *(cell((p.get("fidelity") or {}).get(k), 4) for k in fid),
               *(cell((p.get("accuracy") or {}).get(k), 4) for k in acc), p.get("server") or "-",
               *([_tuning_cell(p)] if tuning else [])]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "fp32 layers per point:", ""]
    for p in points:
        names = p["fp32_layers"]
        shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
        lines.append(f"- {p['method']} {point_label(p)}: {shown if names else 'none'}")
    return "\n".join(lines) + "\n"
