"""Rate-target allocation (docs/design.md): start fully int8, return the most sensitive groups to fp32
in sensitivity-list order while the achieved BOPs reduction rate stays >= the target."""

from __future__ import annotations

from tvm_mpq.allocation.bops import FP32, INT8, Precision, bops_reduction_rate
from tvm_mpq.errors import MpqError
from tvm_mpq.graph.layer_table import LayerTable


def allocate_by_rate(table: LayerTable, sensitivity: list[str], rate: float,
                     low: Precision = INT8,
                     groups: list[list[str]] | None = None) -> dict[str, Precision]:
    """Per-layer precisions meeting ``rate`` (percent, 0..100).

    ``groups`` lists layers that must share one precision (a fused group); by default every
    layer is its own group. Groups are visited in the order their first member appears in
    ``sensitivity``; the walk stops at the first group whose return to fp32 would drop the
    rate below the target, so the fp32 set is always a prefix of the sensitivity list.
    """
    if not 0.0 <= rate <= 100.0:
        raise MpqError(f"--rate {rate} is outside 0..100 (percent BOPs reduction)")
    names = set(table.names())
    unknown = [n for n in sensitivity if n not in names]
    if unknown or len(set(sensitivity)) != len(names):
        raise MpqError(f"the sensitivity list does not match the model's layers (unknown: {unknown[:3]}, "
                       f"{len(set(sensitivity))} listed vs {len(names)} layers)")
    group_of = {n: [n] for n in names}
    for group in groups or []:
        for member in group:
            group_of[member] = group
    precisions = {n: low for n in table.names()}
    visited: set[str] = set()
    for name in sensitivity:
        group = group_of[name]
        if name in visited:
            continue
        visited.update(group)
        trial = dict(precisions)
        trial.update({m: FP32 for m in group})
        if bops_reduction_rate(table, trial, low) < rate - 1e-9:
            break
        precisions = trial
    return precisions
