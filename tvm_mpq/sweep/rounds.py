"""Statistics of interleaved timing rounds: latency over rounds, ratios to fp32 within each
round, how much the fp32 baseline moved, and whether latency falls with the rate.

A round's latency of a point (:func:`round_latency`) is the fastest of its ``time_evaluator``
repeats in that round: other jobs on the machine only ever add time to a repeat, so the fastest
is the least disturbed. Its ratio to fp32 is that latency over the fp32 baseline's in the same
round on the same device (seconds apart), so a machine that slows down between rounds moves
both and the ratio stays; the spread of a ratio over rounds is what is left of the noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def round_latency(stats: Any) -> float:
    """A point's latency in one round: the fastest repeat of its ``LatencyStats`` (ms)."""
    return float(stats.min_ms)


def latency_over_rounds(stats: Sequence[Any]) -> dict[str, Any]:
    """The report's ``latency_ms`` from one ``LatencyStats`` per round: ``median``, ``p10``,
    ``p90``, ``min``, ``max`` over the rounds' latencies (:func:`round_latency`), ``per_round``,
    ``rounds``, ``repeat`` (the fewest repeats of a round) and ``number`` (runs per repeat, last
    round)."""
    per_round = [round_latency(s) for s in stats]
    p10, median, p90 = np.percentile(per_round, [10, 50, 90])
    return {"median": float(median), "p10": float(p10), "p90": float(p90), "min": min(per_round),
            "max": max(per_round), "per_round": per_round, "rounds": len(per_round),
            "repeat": min(int(s.repeat) for s in stats), "number": int(stats[-1].number)}


def ratios_within_rounds(point_ms: Sequence[float], fp32_ms: Sequence[float]) -> list[float]:
    """``point / fp32`` per round (rounds paired by index; extra rounds of either are ignored)."""
    return [p / f for p, f in zip(point_ms, fp32_ms)]


def ratio_summary(ratios: Sequence[float]) -> dict[str, Any]:
    """The report's ``ratio_to_fp32``: ``median``, ``min``, ``max`` and ``per_round``."""
    return {"median": float(np.median(ratios)), "min": float(min(ratios)), "max": float(max(ratios)),
            "per_round": [float(r) for r in ratios]}


def spread_pct(values: Sequence[float]) -> float:
    """``(max - min) / median`` in percent (0 for a single value)."""
    return float((max(values) - min(values)) / float(np.median(values)) * 100.0) if len(values) else 0.0


def stability(fp32_ms_by_server: dict[str, list[float]]) -> dict[str, Any]:
    """How much the fp32 baseline itself moved between rounds, per device and at worst."""
    devices = [{"server": server, "fp32_ms_per_round": ms, "fp32_spread_pct": spread_pct(ms)}
               for server, ms in fp32_ms_by_server.items()]
    return {"figure": "(max - min) / median of the fp32 baseline's per-round latency, percent",
            "devices": devices, "fp32_spread_pct": max((d["fp32_spread_pct"] for d in devices), default=0.0)}


SIGN_TEST_LEVEL = 0.05
"""One-sided sign test level of a step's verdict (see :func:`rounds_needed`)."""


def rounds_needed(n_rounds: int, level: float = SIGN_TEST_LEVEL) -> int:
    """How many of ``n_rounds`` paired rounds must agree for a step to ``fall`` (or ``rise``):
    the fewest ``k`` with ``P(X >= k) <= level`` for ``X ~ Binomial(n, 1/2)`` (a one-sided sign
    test; 9 of 10, 5 of 5), and all of them when even that is not enough (fewer than 5 rounds)."""
    from math import comb

    for k in range(n_rounds + 1):
        if sum(comb(n_rounds, j) for j in range(k, n_rounds + 1)) / 2 ** n_rounds <= level:
            return k
    return n_rounds


def _step(lower: dict, higher: dict) -> dict[str, Any]:
    a, b = lower["ratio_to_fp32"]["per_round"], higher["ratio_to_fp32"]["per_round"]
    changes = [y - x for x, y in zip(a, b)]
    rises, falls = sum(c > 0 for c in changes), sum(c < 0 for c in changes)
    needed = rounds_needed(len(changes))
    verdict = "falls" if falls >= needed else "rises" if rises >= needed else "mixed"
    return {"from_rate": lower["bops_reduction_rate"], "to_rate": higher["bops_reduction_rate"],
            "median_change": float(np.median([y / x - 1.0 for x, y in zip(a, b)])),
            "rounds_faster": falls, "rounds_slower": rises, "rounds_needed": needed, "verdict": verdict}


def monotonicity(points: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """Per method: does latency fall as the achieved rate grows, judged on the within-round
    ratios? Each step between consecutive achieved rates ``falls`` (a lower ratio in enough
    rounds for a one-sided sign test at 5%: :func:`rounds_needed`), ``rises`` (higher in that
    many) or is ``mixed``; the method's verdict is ``monotone`` (every step falls), ``not
    monotone`` (some step rises) or ``inconclusive`` (no step rises, some are mixed); ``n/a``
    with fewer than two distinct timed rates."""
    verdicts: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(p["method"] for p in points):
        timed = sorted((p for p in points if p["method"] == method and p.get("ratio_to_fp32")),
                       key=lambda p: p["bops_reduction_rate"])
        distinct: list[dict] = []
        for p in timed:  # several requests can reach one achieved rate: keep the first
            if not distinct or p["bops_reduction_rate"] > distinct[-1]["bops_reduction_rate"]:
                distinct.append(p)
        steps = [_step(a, b) for a, b in zip(distinct, distinct[1:])]
        kinds = {s["verdict"] for s in steps}
        verdict = ("n/a" if not steps else "not monotone" if "rises" in kinds
                   else "monotone" if kinds == {"falls"} else "inconclusive")
        verdicts[method] = {"verdict": verdict, "steps": steps}
    return verdicts
