"""The ``pandey`` method: phase 1, phase 2, budgets -> precision assignments and a Pareto list."""

from __future__ import annotations

import math
import time
from pathlib import Path

from tvm_mpq.allocation.bops import Precision, bops_ratio
from tvm_mpq.errors import MpqError
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.metrics.local_metrics import SQNR_CAP_DB
from tvm_mpq.metrics.task_metrics import output_sqnr_db
from tvm_mpq.sensitivity.context import BitAllocation, MethodContext
from tvm_mpq.sensitivity.layer_metrics import LayerMetrics
from tvm_mpq.sensitivity.methods import SensitivityMethod, register_method
from tvm_mpq.sensitivity.pandey.candidates import DEFAULT, cost_key, label, parse_candidates
from tvm_mpq.sensitivity.pandey.groups import QuantizerGroup, quantizer_groups
from tvm_mpq.sensitivity.pandey.pareto import plot_pareto, save_pareto_json
from tvm_mpq.sensitivity.pandey.phase1 import Phase1Result, run_phase1
from tvm_mpq.sensitivity.pandey.phase2 import Phase2Result, even_points, run_phase2


def _floats(values: object, what: str) -> tuple[float, ...]:
    if values is None:
        return ()
    items = values.split(",") if isinstance(values, str) else list(values)  # type: ignore[arg-type]
    out = []
    for item in items:
        try:
            v = float(item)
        except (TypeError, ValueError):
            raise MpqError(f"{what} '{item}' is not a number") from None
        if not math.isfinite(v):
            raise MpqError(f"{what} '{item}' is not finite")
        out.append(v)
    return tuple(out)


@register_method
class Pandey(SensitivityMethod):
    """Pandey et al. (2023): phase-1 SQNR per (quantizer group, candidate), phase-2 greedy Pareto
    walk, budgets on ``bops_ratio`` and/or output SQNR.

    ``bops_budgets`` default to the bops_ratio of the homogeneous network at each candidate
    below the highest (mixed precision at the cost of uniform W8A8, W4A8, ...). ``samples``:
    calibration samples for phase 1 and the measured curve (None: all). ``curve_points``: how
    many points of the phase-2 curve to measure for the Pareto plot, spread evenly (None: every
    point; 0: none); budget points are always measured.
    """

    name = "pandey"
    needs_activations = False

    def __init__(self, candidates: object = DEFAULT, bops_budgets: object = None, sqnr_budgets: object = None,
                 samples: int | None = None, curve_points: int | None = 32):
        self.candidates = parse_candidates(candidates)  # type: ignore[arg-type]
        self.quantized = self.candidates
        """The candidates phase 1 measures (with a quantizer); any other candidate (fp32, see
        ``pandey-fp32``) is the model itself there and scores the exact-match SQNR."""
        self.bops_budgets = _floats(bops_budgets, "BOPs budget")
        for b in self.bops_budgets:
            if not 0.0 < b <= 1.0:
                raise MpqError(f"BOPs budget {b:g} is outside 0..1 (bops_ratio = BOPs / BOPs_fp32)")
        self.sqnr_budgets = _floats(sqnr_budgets, "SQNR budget")
        if samples is not None and samples < 1:
            raise MpqError(f"pandey needs at least 1 sample, got {samples}")
        if curve_points is not None and curve_points < 0:
            raise MpqError(f"pandey curve_points must be >= 0, got {curve_points}")
        self.samples, self.curve_points = samples, curve_points
        self.groups: list[QuantizerGroup] = []
        self.phase1: Phase1Result | None = None
        self.phase2: Phase2Result | None = None
        self._chosen: dict[str, int] = {}
        self._targets: dict[str, float] = {}
        self._model = ""
        self._seconds = 0.0

    def measure(self, ctx: MethodContext) -> None:
        start = time.perf_counter()
        self._model = ctx.graph.name
        if self.samples is not None and self.samples > len(ctx.feeds):
            raise MpqError(f"{self.name}: {self.samples} samples asked, only {len(ctx.feeds)} calibration samples")
        feeds = ctx.feeds[:self.samples] if self.samples else ctx.feeds
        weightless = any(layer.weight_param is None for layer in ctx.table)
        bits = {c.a_bits for c in self.quantized} | ({c.w_bits for c in self.quantized} if weightless else set())
        ctx.calibrate(tuple(bits))
        self.groups = quantizer_groups(ctx.table)
        self.phase1 = run_phase1(ctx, self.groups, self.quantized, feeds)
        for candidate in (c for c in self.candidates if c not in self.quantized):
            for group in self.groups:
                self.phase1.sqnr_db[group.index][candidate] = SQNR_CAP_DB
        reference = ctx.reference(feeds)
        self.phase2 = run_phase2(ctx.table, self.groups, self.candidates, self.phase1,
                                 lambda p: output_sqnr_db(ctx.run(p, feeds), reference))
        budgets = list(self.bops_budgets)
        if not budgets and not self.sqnr_budgets:
            budgets = [bops_ratio(ctx.table, {l.name: c for l in ctx.table}) for c in self.candidates[1:]]
        self._chosen = {f"bops_ratio<={b:.6g}": self.phase2.select_bops(b) for b in budgets}
        self._targets = {f"output_sqnr>={t:g}dB": t for t in self.sqnr_budgets}
        self._chosen.update({name: self.phase2.select_sqnr(t) for name, t in self._targets.items()})
        self.phase2.measure_points(even_points(len(self.phase2.steps), self.curve_points))
        self.phase2.measure_points(self._chosen.values())
        self._seconds = time.perf_counter() - start

    def rank(self, table: LayerTable, metrics: dict[str, LayerMetrics]) -> list[str]:
        """Groups by their phase-1 SQNR at the lowest candidate, ascending (most sensitive first)."""
        if self.phase1 is None:
            raise RuntimeError("pandey: measure(ctx) must run before rank")
        lowest = min(self.candidates, key=cost_key)
        group_of = {name: g for g in self.groups for name in g.layers}
        return [l.name for l in sorted(table, key=lambda l: (self.phase1.sqnr_db[group_of[l.name].index][lowest],
                                                             group_of[l.name].index, l.index))]

    def allocate(self, ctx: MethodContext) -> list[BitAllocation]:
        assert self.phase2 is not None
        out = []
        for name, step in self._chosen.items():
            s = self.phase2.steps[step]
            key = name.replace("bops_ratio<=", "bops").replace("output_sqnr>=", "sqnr").replace("dB", "db")
            target = self._targets.get(name)
            met = {} if target is None else {"met": s.output_sqnr_db is not None and s.output_sqnr_db >= target}
            out.append(BitAllocation(name, key, self.phase2.precisions(step),
                                     {"step": step, "output_sqnr_db": s.output_sqnr_db,
                                      "predicted_sqnr_db": s.predicted_sqnr_db, "relative_bops": s.relative_bops,
                                      **met}))
        return out

    def details(self) -> dict[str, dict]:
        if self.phase1 is None:
            return {}
        return {name: {"quantizer_group": g.index,
                       "phase1_sqnr_db": {label(c): s for c, s in self.phase1.sqnr_db[g.index].items()}}
                for g in self.groups for name in g.layers}

    def pareto_json(self) -> dict:
        """Groups, phase-1 sensitivity list, every phase-2 point, the chosen points."""
        assert self.phase1 is not None and self.phase2 is not None
        return {"model": self._model, "candidates": [label(c) for c in self.candidates],
                "start": label(self.phase2.start), "groups": [g.to_json() for g in self.groups],
                "phase1": self.phase1.to_json(self.groups),
                "phase2": {"seconds": self.phase2.seconds, "measured_points": self.phase2.measured_runs,
                           "steps": [s.to_json() for s in self.phase2.steps]},
                "chosen": self._chosen}

    def summary(self) -> dict:
        if self.phase1 is None or self.phase2 is None:
            return {}
        return {"candidates": [label(c) for c in self.candidates], "n_groups": len(self.groups),
                "samples": self.phase1.samples, "phase1_runs": self.phase1.runs,
                "phase1_seconds": self.phase1.seconds, "phase2_seconds": self.phase2.seconds,
                "phase2_points": len(self.phase2.steps), "phase2_measured_points": self.phase2.measured_runs,
                "seconds": self._seconds, "compiles": 1,
                "pareto": [[s.bops_ratio, s.output_sqnr_db] for s in self.phase2.steps if s.output_sqnr_db is not None],
                "chosen": self._chosen}

    def write_artifacts(self, stem: Path) -> list[Path]:
        if self.phase2 is None:
            return []
        json_path = save_pareto_json(Path(f"{stem}.pareto.json"), self.pareto_json())
        png_path = plot_pareto(Path(f"{stem}.pareto.png"), self.phase2, self._chosen,
                               f"{self._model}: Pandey et al. phase 2 ({', '.join(label(c) for c in self.candidates)})")
        return [json_path, png_path]
