"""The Pareto list on disk: JSON (every phase-2 point) and a PNG plot (bops_ratio vs SQNR)."""

from __future__ import annotations

import json
from pathlib import Path

from tvm_mpq.sensitivity.pandey.phase2 import Phase2Result


def save_pareto_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` (``Pandey.pareto_json()``) as strict JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, allow_nan=False))
    return path


def plot_pareto(path: Path, result: Phase2Result, chosen: dict[str, int], title: str) -> Path:
    """Measured (and predicted) output SQNR against bops_ratio, budget points marked (``chosen``:
    label -> point index)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    measured = [s for s in result.steps if s.output_sqnr_db is not None]
    if measured:
        ax.plot([s.bops_ratio for s in measured], [s.output_sqnr_db for s in measured], "o-", ms=3,
                label=f"measured output SQNR ({len(measured)} of {len(result.steps)} points)")
    ax.plot([s.bops_ratio for s in result.steps], [s.predicted_sqnr_db for s in result.steps], "--", color="gray",
            label="predicted (phase-1 noise sum)")
    for name, step in chosen.items():
        s = result.steps[step]
        y = s.output_sqnr_db if s.output_sqnr_db is not None else s.predicted_sqnr_db
        ax.plot([s.bops_ratio], [y], "r*", ms=10)
        ax.annotate(name, (s.bops_ratio, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("bops_ratio (BOPs / BOPs_fp32)")
    ax.set_ylabel("output SQNR vs fp32 (dB)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
