"""aarch64 kernel registration: the channels-last MAC kernels of :mod:`tvm_mpq.kernels.cpu_mac`.

The same parametric kernels as on x86, with NEON's widths (4 fp32 lanes, 32 registers) and, with
``+dotprod``, ``sdot`` for int8 (the graph shifts uint8 activations to int8 for it,
:class:`relay_passes.shift_activations.ShiftActivationsToInt8`); without ``+dotprod`` int8 MACs
are widening NEON multiply-adds.
"""

from __future__ import annotations

from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from . import register_rules
from .cpu_mac import cpu_mac_rules
from .cpu_winograd import WinogradConv2d


@register_rules("aarch64")
def aarch64_rules(target: Target) -> list[ScheduleRule]:
    """The aarch64 MAC rules (Winograd 3x3, conv2d, depthwise, matmul; channels-last)."""
    return [WinogradConv2d(), *cpu_mac_rules(target)]
