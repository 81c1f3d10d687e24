"""Table 2 as a plot: task metrics against the achieved BOPs reduction rate, one line per method."""

from __future__ import annotations

from pathlib import Path

from tvm_mpq.metrics.local_metrics import SQNR_CAP_DB


def plot_rates(path: Path, points: list[dict], panels: list[tuple[str, str]], fp32: dict[str, float],
               title: str) -> Path:
    """One panel per ``(metric, axis label)``: the metric of every rate point (``requested_rate``
    set) vs its achieved BOPs reduction rate, one line per method (QuantuneV2 thick); simulated
    points (bit-widths without an integer kernel) hollow; fp32's value dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0 * len(panels), 4.4))
    FigureCanvasAgg(fig)
    methods = list(dict.fromkeys(p["method"] for p in points))
    for i, (metric, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for method in methods:
            rows = sorted((p for p in points if p["method"] == method and p["requested_rate"] is not None
                           and p["metrics"].get(metric, 0.0) < SQNR_CAP_DB),
                          key=lambda p: p["bops_reduction_rate"])
            if not rows:
                continue
            line, = ax.plot([p["bops_reduction_rate"] for p in rows], [p["metrics"][metric] for p in rows], "-",
                            lw=2.4 if method == "quantunev2" else 1.2, label=method)
            for p in rows:
                ax.plot([p["bops_reduction_rate"]], [p["metrics"][metric]], "o", color=line.get_color(), ms=5,
                        mfc="none" if p["n_simulated"] else line.get_color())
        if metric in fp32 and fp32[metric] < SQNR_CAP_DB:
            ax.axhline(fp32[metric], color="gray", ls="--", lw=1, label="fp32")
        ax.set_xlabel("achieved BOPs reduction rate (%) (hollow: simulated bit-widths)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
