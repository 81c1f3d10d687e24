"""CUDA kernel registration: tvm-mpq's GEMM kernels first, then TVM's dlight GPU rules.

The graph stays NCHW. Int8 conv2d / matmul are the ``dp4a`` implicit GEMMs of
:mod:`tvm_mpq.kernels.cuda_mac`, fp32 ones the same GEMMs on fused multiply-adds; everything
else goes to TVM's GPU rules in the order of TVM's own CUDA pipeline (``Matmul``, ``GEMV``,
``Reduction``, ``GeneralReduction``, ``Fallback``: pooling, softmax, elementwise kernels). A rule that fails declines
(:func:`tvm_mpq.kernels.tagged`) and ``Fallback`` takes anything left.
"""

from __future__ import annotations

from tvm.s_tir import dlight
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from . import register_rules
from .cuda_mac import cuda_mac_rules


def tvm_gpu_rules() -> list[ScheduleRule]:
    """TVM's dlight GPU rules, as its default CUDA pipeline applies them."""
    gpu = dlight.gpu
    return [gpu.Matmul(), gpu.GEMV(), gpu.Reduction(), gpu.GeneralReduction(), gpu.Fallback()]


@register_rules("cuda")
def cuda_rules(target: Target) -> list[ScheduleRule]:
    """tvm-mpq's CUDA MAC rules, then TVM's GPU rules for the rest."""
    return [*cuda_mac_rules(target), *tvm_gpu_rules()]
