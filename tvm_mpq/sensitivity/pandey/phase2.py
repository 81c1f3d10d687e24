"""Phase 2: greedy walk from the highest candidate down, recording the Pareto curve.

Every group starts at the highest candidate. At each step, among all (group, lower candidate)
moves, the one with the smallest SQNR loss per BOPs saved is applied:

    score = (N(g, c) - N(g, current)) / (MACs_g * (w_cur * a_cur - w_c * a_c))

where ``N(g, c) = 10^(-SQNR_phase1(g, c) / 10)`` is the output noise-to-signal ratio phase 1
measured with only ``g`` at ``c``: the SQNR loss in linear units, which adds up over groups (the
predicted output SQNR of a point is ``-10 log10(sum_g N(g, setting_g))``). The walk continues
until no group can go lower, so one run gives the whole curve (no inference: phase-1 numbers
only). Points are then measured on demand (:meth:`Phase2Result.measure_points`, cached): the
plotted curve, and the budgets:

* BOPs budget ``R`` (``bops_ratio`` = BOPs / BOPs_fp32): the first point with ratio <= R, so the
  budget is met exactly or below, never above (MpqError if even the lowest setting exceeds R);
* fidelity budget ``T`` dB: binary search along the curve on measured output SQNR (as AIMET's
  phase 2 does, assuming SQNR falls along the curve): the lowest-BOPs point measured >= T whose
  successor measured < T (point 0 if even that one misses T; ``met`` says so).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from tvm_mpq.allocation.bops import Precision, bops, bops_ratio
from tvm_mpq.errors import MpqError
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.metrics.local_metrics import SQNR_CAP_DB
from tvm_mpq.sensitivity.context import kernel_for
from tvm_mpq.sensitivity.pandey.candidates import cost_key, is_lower, label
from tvm_mpq.sensitivity.pandey.groups import QuantizerGroup
from tvm_mpq.sensitivity.pandey.phase1 import Phase1Result

Measure = Callable[[dict[str, Precision]], float]
"""Output SQNR (dB) of the network under a per-layer assignment."""


def noise_ratio(sqnr_db: float) -> float:
    """Noise-to-signal power ratio of an SQNR in dB."""
    return 10.0 ** (-sqnr_db / 10.0)


def predicted_sqnr_db(noise: float) -> float:
    """SQNR in dB of a total noise-to-signal ratio (capped like the measured SQNR)."""
    return SQNR_CAP_DB if noise <= 0 else min(-10.0 * math.log10(noise), SQNR_CAP_DB)


@dataclass(frozen=True)
class ParetoStep:
    """One point of the curve: the move that led to it (None at the start), its cost, its
    predicted output SQNR, how many layers run simulated (no int8 kernel: anything but W8A8) and,
    once measured, its measured output SQNR."""

    step: int
    group: int | None
    layers: tuple[str, ...]
    from_candidate: Precision | None
    to_candidate: Precision | None
    bops: int
    bops_ratio: float
    relative_bops: float
    predicted_sqnr_db: float
    n_simulated: int
    output_sqnr_db: float | None = None

    def to_json(self) -> dict:
        """The point as a JSON object (candidates as ``W<w>A<a>`` labels)."""
        return {"step": self.step, "group": self.group, "layers": list(self.layers),
                "from": label(self.from_candidate) if self.from_candidate else None,
                "to": label(self.to_candidate) if self.to_candidate else None,
                "bops": self.bops, "bops_ratio": self.bops_ratio, "relative_bops": self.relative_bops,
                "predicted_sqnr_db": self.predicted_sqnr_db, "output_sqnr_db": self.output_sqnr_db,
                "n_simulated": self.n_simulated}


@dataclass
class Phase2Result:
    """The curve and the group settings at every point (``settings[i]``: group -> candidate)."""

    start: Precision
    steps: list[ParetoStep]
    settings: list[dict[int, Precision]]
    groups: list[QuantizerGroup]
    seconds: float
    measure: Measure | None = None
    measured_runs: int = 0

    def precisions(self, step: int) -> dict[str, Precision]:
        """Per-layer precisions at point ``step``."""
        return {name: self.settings[step][g.index] for g in self.groups for name in g.layers}

    def measured(self, step: int) -> float:
        """Measured output SQNR of point ``step`` (measured now if not yet)."""
        s = self.steps[step]
        if s.output_sqnr_db is None:
            if self.measure is None:
                raise RuntimeError("phase 2 has no measure function")
            start = time.perf_counter()
            self.steps[step] = dataclasses.replace(s, output_sqnr_db=self.measure(self.precisions(step)))
            self.measured_runs += 1
            self.seconds += time.perf_counter() - start
        return self.steps[step].output_sqnr_db  # type: ignore[return-value]

    def measure_points(self, steps: Iterable[int]) -> None:
        for step in steps:
            self.measured(step)

    def select_bops(self, budget: float) -> int:
        """The first point with ``bops_ratio <= budget`` (MpqError if none)."""
        if not 0.0 < budget <= 1.0:
            raise MpqError(f"BOPs budget {budget} is outside 0..1 (bops_ratio = BOPs / BOPs_fp32)")
        for s in self.steps:
            if s.bops_ratio <= budget:
                return s.step
        lowest = self.steps[-1].bops_ratio
        raise MpqError(f"BOPs budget {budget:g} is unreachable: the lowest candidates everywhere give "
                       f"bops_ratio {lowest:.6g}")

    def select_sqnr(self, target_db: float) -> int:
        """Binary search for the lowest-BOPs point measured >= ``target_db`` (see module docstring)."""
        lo, hi = 0, len(self.steps) - 1
        if self.measured(lo) < target_db or self.measured(hi) >= target_db:
            return lo if self.measured(lo) < target_db else hi
        while hi - lo > 1:  # invariant: lo meets the target, hi does not
            mid = (lo + hi) // 2
            if self.measured(mid) >= target_db:
                lo = mid
            else:
                hi = mid
        return lo


def even_points(n_steps: int, count: int | None) -> list[int]:
    """``count`` point indices spread evenly over ``0..n_steps-1`` (ends included); all if None."""
    if count is None or count >= n_steps:
        return list(range(n_steps))
    if count < 2:
        return [0, n_steps - 1][:max(count, 0)]
    return sorted({round(i * (n_steps - 1) / (count - 1)) for i in range(count)})


def run_phase2(table: LayerTable, groups: list[QuantizerGroup], candidates: tuple[Precision, ...],
               phase1: Phase1Result, measure: Measure | None = None) -> Phase2Result:
    """The greedy walk (see module docstring); ``measure`` measures points on demand."""
    start_time = time.perf_counter()
    start = max(candidates, key=cost_key)
    setting = {g.index: start for g in groups}
    noise = {g.index: {c: noise_ratio(s) for c, s in phase1.sqnr_db[g.index].items()} for g in groups}
    start_bops = bops(table, {name: start for g in groups for name in g.layers})

    def point(step: int, group: QuantizerGroup | None, old: Precision | None, new: Precision | None) -> ParetoStep:
        precisions = {name: setting[g.index] for g in groups for name in g.layers}
        cost = bops(table, precisions)
        total_noise = sum(noise[g.index][setting[g.index]] for g in groups)
        return ParetoStep(step, group.index if group else None, group.layers if group else (), old, new,
                          cost, bops_ratio(table, precisions), cost / start_bops if start_bops else 1.0,
                          predicted_sqnr_db(total_noise), sum(kernel_for(p) == "simulated" for p in precisions.values()))

    steps = [point(0, None, None, None)]
    settings = [dict(setting)]
    while True:
        best: tuple[tuple[float, int, int], QuantizerGroup, Precision] | None = None
        for g in groups:
            current = setting[g.index]
            for c in candidates:
                if not is_lower(c, current):
                    continue
                saved = g.macs * (current.w_bits * current.a_bits - c.w_bits * c.a_bits)
                key = ((noise[g.index][c] - noise[g.index][current]) / saved, -saved, g.index)
                if best is None or key < best[0]:
                    best = (key, g, c)
        if best is None:
            break
        _, group, c = best
        old = setting[group.index]
        setting[group.index] = c
        steps.append(point(len(steps), group, old, c))
        settings.append(dict(setting))
    return Phase2Result(start, steps, settings, groups, time.perf_counter() - start_time, measure)
