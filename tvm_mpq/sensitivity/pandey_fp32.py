"""``pandey-fp32``: Pandey et al.'s search with fp32 as the highest candidate.

Pandey et al.'s candidates (W4A8, W8A8, W8A16, ...) all cost at most 16 x 16 bit operations per
MAC, so their phase-2 curve starts at ``bops_ratio`` 0.25 or below: a BOPs reduction rate below
about 80% (docs/design.md's convention) is out of its reach. To compare it with the ranking methods at
every rate of the paper's Table 2 (100/50/40/30/20%), this variant adds fp32 (``W32A32``, no
quantizer) as the highest candidate, as AIMET's mixed-precision search can include a float
candidate: phase 2 starts with every group fp32 and walks down through the quantized candidates.

Phase 1 needs no run for the fp32 candidate: with only fp32 quantizers enabled the network *is*
the fp32 model, so its output SQNR is the exact-match cap (``SQNR_CAP_DB``). Everything else is
:class:`~tvm_mpq.sensitivity.pandey.Pandey`: phase-1 runs per (group, quantized candidate), the
greedy walk, BOPs / SQNR budgets met from below.
"""

from __future__ import annotations

from tvm_mpq.allocation.bops import FP32
from tvm_mpq.sensitivity.methods import register_method
from tvm_mpq.sensitivity.pandey.candidates import DEFAULT
from tvm_mpq.sensitivity.pandey.method import Pandey


@register_method
class PandeyFp32(Pandey):
    """Pandey et al. with fp32 added above ``candidates`` (see module docstring)."""

    name = "pandey-fp32"

    def __init__(self, candidates: object = DEFAULT, bops_budgets: object = None, sqnr_budgets: object = None,
                 samples: int | None = None, curve_points: int | None = 32):
        super().__init__(candidates, bops_budgets, sqnr_budgets, samples, curve_points)
        self.quantized = self.candidates
        self.candidates = (FP32, *self.quantized)
