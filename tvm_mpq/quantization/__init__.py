"""Quantizers exactly as docs/design.md defines them, in numpy (the reference the graph must match)."""

from tvm_mpq.quantization.quantizers import (
    ActQParams,
    act_qparams,
    fake_quant_activation,
    fake_quant_weight,
    weight_scales,
)

__all__ = ["ActQParams", "act_qparams", "fake_quant_activation", "fake_quant_weight", "weight_scales"]
