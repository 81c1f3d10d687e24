"""The paper's Table 2: task metric and model size per method at BOPs reduction rates.

A rate ``r`` (docs/design.md: 0% = fp32, 100% = every layer W8A8) becomes a precision assignment:

* ranking methods (QuantuneV2, InOrder, Weight-SQNR, Top-1): start fully int8 and return
  layers to fp32 in sensitivity-list order while the achieved rate stays >= r
  (``allocate_by_rate``): W8A8 and fp32 layers only, every one with a real kernel;
* ``mixquant``: its weight bit-widths at ``mixquant_qem`` (W<b>A8, simulated below 8 bits), then
  layers returned to fp32 in MixQuant's list order while the rate stays >= r (the BOPs its
  lower weight bits save buy fp32 layers); QEM 1 is the ranking case. Its own QEM assignments
  (no rate: rate >= 100%) are listed separately;
* ``pandey``: Pandey et al.'s phase-2 point for the BOPs budget ``bops_ratio(r)`` (met from
  below: achieved rate >= r), candidates fp32 / W8A16 / W8A8 / W4A8 (simulated except W8A8).

Each point says how many of its layers are simulated (``n_simulated``).
"""

from __future__ import annotations

from tvm_mpq.allocation.allocate import allocate_by_rate
from tvm_mpq.allocation.bops import FP32, Precision, bops_reduction_rate
from tvm_mpq.evaluation.method_runs import MethodRun, rate_bops_ratio
from tvm_mpq.evaluation.evaluator import ConfigEvaluator
from tvm_mpq.graph.layer_table import LayerTable


def allocate_from(table: LayerTable, sensitivity: list[str], rate: float,
                  base: dict[str, Precision]) -> dict[str, Precision]:
    """Start at ``base`` and return layers to fp32 in ``sensitivity`` order while the BOPs
    reduction rate (reference all-W8A8) stays >= ``rate``; the fp32 set is a list prefix."""
    precisions = dict(base)
    for name in sensitivity:
        trial = {**precisions, name: FP32}
        if bops_reduction_rate(table, trial) < rate - 1e-9:
            break
        precisions = trial
    return precisions


def method_assignment(run: MethodRun, table: LayerTable, rate: float, mixquant_qem: float = 4.0) -> dict[str, Precision]:
    """The assignment ``run``'s method gives at ``rate`` (see module docstring)."""
    if run.method == "pandey":
        budget = round(rate_bops_ratio(table, rate), 9)
        label = f"bops_ratio<={budget:.6g}"
        for allocation in run.report.allocations:
            if allocation.label == label:
                return dict(allocation.precisions)
        raise KeyError(f"pandey has no allocation for budget {label}")
    if run.method == "mixquant":
        label = f"qem={mixquant_qem:g}"
        base = next((dict(a.precisions) for a in run.report.allocations if a.label == label), None)
        if base is None:
            raise KeyError(f"mixquant has no allocation for {label}")
        return allocate_from(table, run.report.sensitivity, rate, base)
    return allocate_by_rate(table, run.report.sensitivity, rate)


def rate_table_points(evaluator: ConfigEvaluator, runs: list[MethodRun], rates: list[float],
                  mixquant_qem: float = 4.0) -> list[dict]:
    """One point per (method, rate), then MixQuant's own QEM assignments (``requested_rate`` None)."""
    table = evaluator.data.table
    points = []
    for run in runs:
        for rate in rates:
            precisions = method_assignment(run, table, rate, mixquant_qem)
            points.append({"method": run.method, "requested_rate": rate, "label": f"{rate:g}%",
                           **evaluator.point(precisions)})
        if run.method == "mixquant":
            for allocation in run.report.allocations:
                points.append({"method": "mixquant", "requested_rate": None, "label": allocation.label,
                               "avg_w_bits": allocation.info.get("avg_w_bits"),
                               **evaluator.point(allocation.precisions)})
    return points
