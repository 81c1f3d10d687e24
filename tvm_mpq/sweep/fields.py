"""Reading a sweep report's points: the metric names they carry, numbers as table cells.

Shared by :mod:`~tvm_mpq.sweep.report` (Markdown) and :mod:`~tvm_mpq.sweep.plot` (PNG), which
import it and not each other's internals.
"""

from __future__ import annotations

import math
from typing import Any


def metric_names(points: list[dict], field: str) -> list[str]:
    """Every metric name of ``field`` (``fidelity`` / ``accuracy``) over the points, in first-seen order."""
    names: list[str] = []
    for p in points:
        for name in p.get(field) or {}:
            if name not in names:
                names.append(name)
    return names


def cell(value: Any, digits: int) -> str:
    """``value`` with ``digits`` decimals, ``-`` for a missing or non-finite one."""
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def point_label(point: dict) -> str:
    """``rate 50%`` or a bit-width method's allocation (``qem=4``)."""
    return point.get("allocation") or f"rate {point['requested_rate']:g}%"
