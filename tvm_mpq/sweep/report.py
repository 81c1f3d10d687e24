"""The sweep report: JSON (DESIGN "Report" contract, more keys welcome), a Markdown table, a PNG.

Contract keys, in this order, then the extras::

    {"model", "target", "device", "tvm_version", "analysis": {"method", "seconds", "n_layers"},
     "points": [{"method", "requested_rate", "bops_reduction_rate", "bops_ratio", "fp32_layers",
                 "n_qdq", "model_size_mb", "latency_ms": {"median", "p10", "p90"},
                 "fidelity": {...}, "accuracy": {...}}], ...}

``analysis`` is the first method's analysis; ``analyses`` lists every method's. ``model_size_mb``
is the exported library's size in MB (10^6 bytes). ``accuracy`` is ``{}`` when the evaluation
samples have no labels. A compile-only point (CUDA without a GPU) has ``latency_ms``,
``fidelity`` and ``accuracy`` null and says why in ``run_skipped``. Non-finite numbers are
written as null (strict JSON).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from tvm_mpq.sweep.data import EvalSet
from tvm_mpq.sweep.plan import SweepOptions, TimingOptions
from tvm_mpq.sweep.remote import Execution

CONTRACT_KEYS = ("model", "target", "device", "tvm_version", "analysis", "points")
ANALYSIS_KEYS = ("method", "seconds", "n_layers")
POINT_KEYS = ("method", "requested_rate", "bops_reduction_rate", "bops_ratio", "fp32_layers", "n_qdq",
              "model_size_mb", "latency_ms", "fidelity", "accuracy")
LATENCY_KEYS = ("median", "p10", "p90")
EMULATION_NOTE = "latencies are QEMU user-mode emulation times on this machine: compare only ratios between points"


def new_report(model: str, options: SweepOptions, execution: Execution, task: str, data: EvalSet,
               reference: dict, timing: TimingOptions) -> dict:
    """The report before any point: the contract's header, ``analysis`` None until the first one."""
    import tvm

    from targets import get_target

    return {
        "model": model, "target": options.target, "device": execution.device, "tvm_version": tvm.__version__,
        "analysis": None, "points": [],
        "task": task, "tvm_target": get_target(options.target).target_dict(), "stage": options.stage,
        "methods": list(options.methods), "rates": list(options.rates),
        "emulated": execution.emulated, "latency_note": EMULATION_NOTE if execution.emulated else "native device times",
        "eval": data.to_json(),
        "reference": {k: v for k, v in reference.items() if k != "outputs"},
        "timing": {**timing.to_json(), "method": "time_evaluator over RPC: per-repeat mean of `number` runs; "
                   "median / p10 / p90 over the repeats"},
        "calibration": {"source": options.calib or "bundled samples", "samples": options.calib_size,
                        "observer": options.observer, "equalize": options.ptq.equalize,
                        "bias_correction": options.ptq.bias_correction and options.stage != "A"},
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


def _num(value: Any, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def metric_names(points: list[dict], field: str) -> list[str]:
    """Every metric name of ``field`` (``fidelity`` / ``accuracy``) over the points, in first-seen order."""
    names: list[str] = []
    for p in points:
        for name in p.get(field) or {}:
            if name not in names:
                names.append(name)
    return names


def markdown(report: dict) -> str:
    """The report as Markdown: the set-up, then one table row per point."""
    points = report["points"]
    fid, acc = metric_names(points, "fidelity"), metric_names(points, "accuracy")
    emulated = report.get("emulated")
    unit = "ms, QEMU" if emulated else "ms"
    lines = [f"# {report['model']} on {report['target']}: latency and fidelity vs BOPs reduction rate", "",
             f"- device: {report['device']}",
             f"- TVM {report['tvm_version']}, target `{json.dumps(report.get('tvm_target'))}`, stage {report.get('stage')}",
             f"- evaluation: {report['eval']['source']}; fidelity vs the fp32 reference run on "
             f"{report['reference']['runs_on']}",
             f"- timing: {report['timing']['method']} (up to {report['timing']['repeat']} repeats, "
             f"<= {report['timing']['max_seconds']:g} s per point)"]
    for a in report.get("analyses", []):
        lines.append(f"- analysis {a['method']}: {a['seconds']:.1f} s, {a['n_layers']} layers"
                     + (f"; skipped: {'; '.join(a['skipped_allocations'])}" if a.get("skipped_allocations") else ""))
    ref_acc = report["reference"].get("accuracy") or {}
    if ref_acc:
        lines.append("- fp32 reference: " + ", ".join(f"{k} {v:.4f}" for k, v in ref_acc.items()))
    if report.get("rpc", {}).get("servers_used"):
        lines.append(f"- RPC ({report['rpc']['mode']}): servers used {', '.join(report['rpc']['servers_used'])}")
    if emulated:
        lines += ["", f"> **Emulation:** {EMULATION_NOTE}."]
    skipped = report.get("rpc", {}).get("runs_skipped")
    if skipped:
        lines += ["", f"> **Runs skipped:** {skipped}."]
    header = ["method", "requested %", "achieved %", "bops_ratio", "fp32 layers", "n_qdq", "size MB",
              f"median ({unit})", "p10", "p90", *fid, *acc, "server"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in points:
        lat = p.get("latency_ms") or {}
        requested = p["allocation"] if p.get("allocation") else f"{p['requested_rate']:g}"
        row = [p["method"], requested, _num(p["bops_reduction_rate"], 1), _num(p["bops_ratio"], 4),
               str(len(p["fp32_layers"])), str(p["n_qdq"]), _num(p["model_size_mb"], 2),
               _num(lat.get("median"), 3), _num(lat.get("p10"), 3), _num(lat.get("p90"), 3),
               *(_num((p.get("fidelity") or {}).get(k), 4) for k in fid),
               *(_num((p.get("accuracy") or {}).get(k), 4) for k in acc), p.get("server") or "-"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "fp32 layers per point:", ""]
    for p in points:
        names = p["fp32_layers"]
        shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
        label = p.get("allocation") or f"rate {p['requested_rate']:g}%"
        lines.append(f"- {p['method']} {label}: {shown if names else 'none'}")
    return "\n".join(lines) + "\n"
