"""The sweep plot (PNG, matplotlib Agg): latency and fidelity vs achieved BOPs reduction rate.

Four panels, one line per method: latency relative to fp32, the median of the within-round
ratios with their min-max band over rounds (the interleaved timing's figure, what the
monotonicity verdict reads); median latency in ms with its p10-p90 band over rounds; the task's
first fidelity metric (top-1 agreement, or embedding cosine) with accuracy dashed where labels
exist; output SQNR in dB. Compile-only sweeps (no device reachable) say so in the empty panels.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from tvm_mpq.sweep.fields import metric_names


def _series(points: list[dict], method: str, value) -> tuple[list[float], list[float]]:
    rows = sorted((p["bops_reduction_rate"], value(p)) for p in points if p["method"] == method)
    rows = [(x, y) for x, y in rows if y is not None]
    return [x for x, _ in rows], [y for _, y in rows]


def _band(ax: Any, points: list[dict], method: str, field: str, keys: tuple[str, str, str], color: str) -> None:
    """``field``'s ``keys[0]`` as a line, ``keys[1]``-``keys[2]`` as a band, vs the achieved rate."""
    value = lambda key: (lambda p: (p.get(field) or {}).get(key))  # noqa: E731
    x, mid = _series(points, method, value(keys[0]))
    if not x:
        return
    _, lo = _series(points, method, value(keys[1]))
    _, hi = _series(points, method, value(keys[2]))
    ax.plot(x, mid, "o-", color=color, label=method)
    if len(lo) == len(x) == len(hi):
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)


def plot_sweep(report: dict, path: Path) -> Path:
    """Draw ``report``'s points into ``path`` (PNG); returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = report["points"]
    methods = list(dict.fromkeys(p["method"] for p in points))
    fid = metric_names(points, "fidelity")
    primary = fid[0] if fid else None
    acc = metric_names(points, "accuracy")
    fig = Figure(figsize=(20, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    ax_ratio, ax_lat, ax_fid, ax_sqnr = fig.subplots(1, 4)
    for i, method in enumerate(methods):
        color = f"C{i}"
        _band(ax_ratio, points, method, "ratio_to_fp32", ("median", "min", "max"), color)
        _band(ax_lat, points, method, "latency_ms", ("median", "p10", "p90"), color)
        if primary:
            x, y = _series(points, method, lambda p: (p.get("fidelity") or {}).get(primary))
            ax_fid.plot(x, y, "o-", color=color, label=f"{method} {primary}")
        for name in acc:
            x, y = _series(points, method, lambda p, n=name: (p.get("accuracy") or {}).get(n))
            ax_fid.plot(x, y, "s--", color=color, alpha=0.7, label=f"{method} {name}")
        x, y = _series(points, method, lambda p: (p.get("fidelity") or {}).get("output_sqnr_db"))
        ax_sqnr.plot(x, y, "o-", color=color, label=method)
    emulated = report.get("emulated")
    rounds = report.get("rounds")
    if ax_ratio.lines:
        ax_ratio.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax_ratio.set_ylabel("latency / fp32 in the same round: median, min-max")
    ax_ratio.set_title("latency relative to fp32" + (f" ({rounds} interleaved rounds)" if rounds else ""))
    ax_lat.set_ylabel("latency median, p10-p90 over rounds (ms" + (", QEMU emulation)" if emulated else ")"))
    ax_lat.set_title("latency" + (" (emulated: compare ratios only)" if emulated else ""))
    ax_fid.set_ylabel(primary or "fidelity")
    ax_fid.set_title("fidelity vs fp32" + (" and accuracy" if acc else ""))
    ax_sqnr.set_ylabel("output SQNR vs fp32 (dB)")
    ax_sqnr.set_title("output SQNR")
    skipped = (report.get("rpc") or {}).get("runs_skipped")
    for ax in (ax_ratio, ax_lat, ax_fid, ax_sqnr):
        ax.set_xlabel("BOPs reduction rate achieved (%)")
        ax.set_xlim(-5, 105)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        elif skipped:
            ax.text(0.5, 0.5, "runs skipped:\nno GPU reachable", ha="center", va="center", transform=ax.transAxes)
    title = textwrap.fill(f"{report['model']} on {report['target']}: {report['device']}", 220)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
