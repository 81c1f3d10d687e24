"""x86 kernel registration: the channels-last MAC kernels of :mod:`tvm_mpq.kernels.cpu_mac`.

The graph is converted to NHWC for x86 targets (:func:`tvm_mpq.kernels.activation_layout`), and
one parametric kernel per MAC kind takes its widths from the target
(:func:`tvm_mpq.kernels.cpu_isa.cpu_isa`): 16 fp32 lanes, 32 registers and 512-bit ``vpdpbusd``
on AVX512-VNNI; 8 lanes, 16 registers and ``vpmaddwd`` on AVX2; 4 lanes on SSE2.
"""

from __future__ import annotations

from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from . import register_rules
from .cpu_mac import cpu_mac_rules
from .cpu_winograd import WinogradConv2d


@register_rules("x86_64")
def x86_rules(target: Target) -> list[ScheduleRule]:
    """The x86 MAC rules (Winograd 3x3, conv2d, depthwise, matmul; channels-last)."""
    return [WinogradConv2d(), *cpu_mac_rules(target)]
