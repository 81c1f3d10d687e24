"""Phase 1: network-output SQNR with one quantizer group at one candidate, all else fp32.

As in AIMET's ``_create_and_save_accuracy_list``: every other quantizer is disabled, the group
under test is enabled at the candidate, the network output is compared with fp32. One run per
(group, candidate) over the phase-1 samples, on one compiled module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tvm_mpq.allocation.bops import Precision
from tvm_mpq.metrics.task_metrics import output_sqnr_db
from tvm_mpq.sensitivity.context import MethodContext
from tvm_mpq.sensitivity.pandey.candidates import label
from tvm_mpq.sensitivity.pandey.groups import QuantizerGroup
from tvm_mpq.types import Feed


@dataclass
class Phase1Result:
    """``sqnr_db[group index][candidate]``: output SQNR with only that group quantized."""

    sqnr_db: dict[int, dict[Precision, float]]
    samples: int
    runs: int
    seconds: float

    def sensitivity_list(self, groups: list[QuantizerGroup]) -> list[dict]:
        """Every (group, candidate) entry, least sensitive (highest SQNR) first."""
        rows = [{"group": g.index, "layers": list(g.layers), "candidate": label(c), "output_sqnr_db": s}
                for g in groups for c, s in self.sqnr_db[g.index].items()]
        return sorted(rows, key=lambda r: (-r["output_sqnr_db"], r["group"]))

    def to_json(self, groups: list[QuantizerGroup]) -> dict:
        """Sample count, cost and the sensitivity list."""
        return {"samples": self.samples, "runs": self.runs, "seconds": self.seconds,
                "sensitivity_list": self.sensitivity_list(groups)}


def run_phase1(ctx: MethodContext, groups: list[QuantizerGroup], candidates: tuple[Precision, ...],
               feeds: list[Feed]) -> Phase1Result:
    """Measure every (group, candidate) pair (see module docstring)."""
    start = time.perf_counter()
    reference = ctx.reference(feeds)
    sqnr: dict[int, dict[Precision, float]] = {}
    runs = 0
    for group in groups:
        sqnr[group.index] = {}
        for c in candidates:
            outputs = ctx.run({name: c for name in group.layers}, feeds)
            sqnr[group.index][c] = output_sqnr_db(outputs, reference)
            runs += 1
    return Phase1Result(sqnr, len(feeds), runs, time.perf_counter() - start)
