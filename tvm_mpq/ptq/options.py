"""Which post-training refinements a run applies (CLI ``--equalize``, ``--bias-correction``,
``--channel-act``, ``--measured-bias``, ``--weight-rounding``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from tvm_mpq.errors import MpqError
from tvm_mpq.types import SOURCE, parse_stage

WEIGHT_ROUNDINGS = ("nearest", "hessian")
"""How int8 weights are rounded (``--weight-rounding``): to nearest, or Hessian-weighted."""


@dataclass(frozen=True)
class PtqOptions:
    """``equalize``: cross-layer equalization of the model's equalizable layer pairs (graph
    rewrite, exact in fp32); ``bias_correction``: correct each quantized layer's bias by the
    expected error of its quantized weight (one extra fp32 pass over the calibration set);
    ``channel_act``: quantize the input of each int8 depthwise conv per channel
    (:mod:`tvm_mpq.ptq.channel_ranges`; two extra fp32 passes); ``measured_bias``: with bias
    correction, each int8 depthwise conv's correction measured on the int8 model instead
    (:mod:`tvm_mpq.ptq.measured_bias`; one compile and one pass over the calibration set per
    depthwise conv); ``weight_rounding``: ``"nearest"`` or ``"hessian"`` (each int8 weight
    rounded up or down to minimise its layer's output error, :mod:`tvm_mpq.ptq.weight_rounding`;
    one extra fp32 pass)."""

    equalize: bool = False
    bias_correction: bool = False
    channel_act: bool = False
    measured_bias: bool = False
    weight_rounding: str = "nearest"

    def __post_init__(self) -> None:
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise MpqError(f"weight rounding must be one of {', '.join(WEIGHT_ROUNDINGS)}, not '{self.weight_rounding}'")

    def at_stage(self, stage: str) -> "PtqOptions":
        """The options a config made for ``stage`` can carry: bias correction and weight rounding
        are made for batch-norm folded layers, so at stage source (A) they are off."""
        if parse_stage(stage) != SOURCE:
            return self
        return replace(self, bias_correction=False, weight_rounding="nearest")

    def describe(self) -> str:
        on = [name for name, flag in (("cross-layer equalization", self.equalize),
                                      ("bias correction" + (" (depthwise measured)" if self.measured_bias else ""),
                                       self.bias_correction),
                                      ("per-channel depthwise inputs", self.channel_act),
                                      ("Hessian-weighted weight rounding", self.weight_rounding == "hessian")) if flag]
        return ", ".join(on) or "none"
