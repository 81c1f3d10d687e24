"""Which post-training refinements a run applies (CLI ``--equalize``, ``--bias-correction``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PtqOptions:
    """``equalize``: cross-layer equalization of the model's equalizable layer pairs (graph
    rewrite, exact in fp32); ``bias_correction``: correct each quantized layer's bias by the
    expected error of its quantized weight (one extra fp32 pass over the calibration set)."""

    equalize: bool = False
    bias_correction: bool = False

    def describe(self) -> str:
        on = [name for name, flag in (("cross-layer equalization", self.equalize),
                                      ("bias correction", self.bias_correction)) if flag]
        return ", ".join(on) or "none"
