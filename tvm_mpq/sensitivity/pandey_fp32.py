"""``pandey-fp32``: Pandey et al.'s search with fp32 as the highest candidate.

Pandey et al.'s candidates (W4A8, W8A8, W8A16, ...) all cost at most 16 x 16 bit operations per
MAC, so their phase-2 curve starts at ``bops_ratio`` 0.25 or below: a BOPs reduction rate below
about 80% (DESIGN's convention) is out of its reach. To compare it with the ranking methods at
every rate of the paper's Table 2 (100/50/40/30/20%), this variant adds fp32 (``W32A32``, no
quantizer) as the highest candidate, as AIMET's mixed-precision search can include a float
candidate: phase 2 starts with every group fp32 and walks down through the quantized candidates.

Phase 1 needs no run for the fp32 candidate: with only fp32 quantizers enabled the network *is*
the fp32 model, so its output SQNR is the exact-match cap (``SQNR_CAP_DB``). Everything else is
:class:`~tvm_mpq.sensitivity.pandey.Pandey`: phase-1 runs per (group, quantized candidate), the
greedy walk, BOPs / SQNR budgets met from below.
"""

from __future__ import annotations

import time

from tvm_mpq.allocation.bops import FP32, bops_ratio
from tvm_mpq.errors import MpqError
from tvm_mpq.metrics.task_metrics import output_sqnr_db
from tvm_mpq.metrics.local_metrics import SQNR_CAP_DB
from tvm_mpq.sensitivity.context import MethodContext
from tvm_mpq.sensitivity.methods import register_method
from tvm_mpq.sensitivity.pandey.candidates import DEFAULT
from tvm_mpq.sensitivity.pandey.groups import quantizer_groups
from tvm_mpq.sensitivity.pandey.method import Pandey
from tvm_mpq.sensitivity.pandey.phase1 import run_phase1
from tvm_mpq.sensitivity.pandey.phase2 import even_points, run_phase2


@register_method
class PandeyFp32(Pandey):
    """Pandey et al. with fp32 added above ``candidates`` (see module docstring)."""

    name = "pandey-fp32"

    def __init__(self, candidates: object = DEFAULT, bops_budgets: object = None, sqnr_budgets: object = None,
                 samples: int | None = None, curve_points: int | None = 32):
        super().__init__(candidates, bops_budgets, sqnr_budgets, samples, curve_points)
        self.quantized = self.candidates
        self.candidates = (FP32, *self.quantized)

    def measure(self, ctx: MethodContext) -> None:
        start = time.perf_counter()
        self._model = ctx.graph.name
        if self.samples is not None and self.samples > len(ctx.feeds):
            raise MpqError(f"pandey-fp32: {self.samples} samples asked, only {len(ctx.feeds)} calibration samples")
        feeds = ctx.feeds[:self.samples] if self.samples else ctx.feeds
        weightless = any(layer.weight_param is None for layer in ctx.table)
        bits = {c.a_bits for c in self.quantized} | ({c.w_bits for c in self.quantized} if weightless else set())
        ctx.calibrate(tuple(bits))
        self.groups = quantizer_groups(ctx.table)
        self.phase1 = run_phase1(ctx, self.groups, self.quantized, feeds)
        for group in self.groups:
            self.phase1.sqnr_db[group.index][FP32] = SQNR_CAP_DB
        reference = ctx.reference(feeds)
        self.phase2 = run_phase2(ctx.table, self.groups, self.candidates, self.phase1,
                                 lambda p: output_sqnr_db(ctx.run(p, feeds), reference))
        budgets = list(self.bops_budgets)
        if not budgets and not self.sqnr_budgets:
            budgets = [bops_ratio(ctx.table, {l.name: c for l in ctx.table}) for c in self.quantized]
        self._chosen = {f"bops_ratio<={b:.6g}": self.phase2.select_bops(b) for b in budgets}
        self._targets = {f"output_sqnr>={t:g}dB": t for t in self.sqnr_budgets}
        self._chosen.update({name: self.phase2.select_sqnr(t) for name, t in self._targets.items()})
        self.phase2.measure_points(even_points(len(self.phase2.steps), self.curve_points))
        self.phase2.measure_points(self._chosen.values())
        self._seconds = time.perf_counter() - start
