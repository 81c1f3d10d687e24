"""Accuracy recovery when dequantizing layers one by one (the paper's Fig. 3 / Fig. 8).

Start with every layer W8A8, return layers to fp32 one at a time in a ranking's order and
measure the task metric after each step: a good sensitivity list recovers the fp32 metric with
few fp32 layers. Point ``k`` has the first ``k`` layers of the list in fp32; ``k = 0`` is the
all-int8 model, ``k = L`` the fp32 model, so every curve ends at the fp32 metric. ``counts``
picks the measured ``k`` (all of ``0..L`` by default).

``summary`` condenses a curve: the mean of the primary metric over the measured points (area
under the curve, normalised), the fewest fp32 layers reaching fp32's metric within ``tol``, and
the mean output SQNR (a continuous companion where the task metric saturates).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tvm_mpq.allocation.bops import FP32, INT8
from tvm_mpq.evaluation.evaluator import ConfigEvaluator
from tvm_mpq.metrics.local_metrics import SQNR_CAP_DB


def curve_counts(n_layers: int, points: int | None = None) -> list[int]:
    """Numbers of fp32 layers to measure: all of ``0..n_layers``, or, when ``points`` is given
    and smaller, ``0`` and ``points - 1`` values spaced geometrically from 1 to ``n_layers``
    (dense where the first layers returned to fp32 recover the most, e.g. 0 1 2 4 7 14 26 50)."""
    if points is None or points >= n_layers + 1:
        return list(range(n_layers + 1))
    if points < 2:
        raise ValueError("a recovery curve needs at least 2 points")
    wanted = points - 1  # geometric values; rounding merges some, so ask for more until enough
    while True:
        geometric = {round(n_layers ** (i / (wanted - 1))) for i in range(wanted)} if wanted > 1 else {n_layers}
        counts = sorted({0} | geometric)
        if len(counts) >= points:
            return counts[:points - 1] + [n_layers]
        wanted += 1


def recovery_curve(evaluator: ConfigEvaluator, ranking: list[str], counts: list[int],
                   samples: int | None = None) -> list[dict]:
    """``[{"n_fp32": k, "bops_reduction_rate": ..., **metrics}]`` for every ``k`` in ``counts``
    (metrics on the first ``samples`` evaluation samples; None: all)."""
    names = evaluator.data.table.names()
    if sorted(ranking) != sorted(names):
        raise ValueError("the ranking does not list the model's layers")
    curve = []
    for k in counts:
        precisions = {n: INT8 for n in names}
        precisions.update({n: FP32 for n in ranking[:k]})
        point = evaluator.point(precisions, samples)
        curve.append({"n_fp32": k, "bops_reduction_rate": point["bops_reduction_rate"], **point["metrics"]})
    return curve


def summary(curve: list[dict], metric: str, fp32_value: float, higher_is_better: bool = True,
            tol: float = 0.0) -> dict:
    """Mean of ``metric`` over the curve, the fewest fp32 layers within ``tol`` of fp32's value,
    and the mean output SQNR over the points short of the exact fp32 end (where measured)."""
    values = np.array([p[metric] for p in curve], np.float64)
    ok = [p["n_fp32"] for p in curve
          if (p[metric] >= fp32_value - tol if higher_is_better else p[metric] <= fp32_value + tol)]
    sqnr = [p["output_sqnr_db"] for p in curve if p.get("output_sqnr_db", SQNR_CAP_DB) < SQNR_CAP_DB]
    return {"mean": float(values.mean()), "fp32_layers_to_recover": min(ok) if ok else None,
            "mean_output_sqnr_db": float(np.mean(sqnr)) if sqnr else None}


def plot_recovery(path: Path, curves: dict[str, list[dict]], metrics: list[tuple[str, str]], fp32: dict[str, float],
                  title: str, highlight: str | None = None) -> Path:
    """One panel per ``(metric, axis label)``: metric vs number of fp32 layers, one line per
    ranking (``highlight`` drawn thick), fp32's value dashed (output SQNR: the exact fp32 end,
    at the SQNR cap, is left out)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0 * len(metrics), 4.4))
    FigureCanvasAgg(fig)
    for i, (metric, ylabel) in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for label, curve in curves.items():
            thick = label == highlight
            shown = [p for p in curve if metric != "output_sqnr_db" or p[metric] < SQNR_CAP_DB]  # fp32: exact
            ax.plot([p["n_fp32"] for p in shown], [p[metric] for p in shown], "o-" if thick else ".-",
                    lw=2.6 if thick else 1.2, ms=4 if thick else 3, label=label, zorder=3 if thick else 2)
        if metric in fp32 and not (metric == "output_sqnr_db" and fp32[metric] >= SQNR_CAP_DB):
            ax.axhline(fp32[metric], color="gray", ls="--", lw=1, label="fp32")
        ax.set_xlabel("layers returned to fp32 (in ranking order)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
