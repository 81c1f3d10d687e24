"""BOPs accounting and budget -> precision allocation."""

from tvm_mpq.allocation.bops import FP32, Precision, bops, bops_ratio, bops_reduction_rate, raw_reduction_rate
from tvm_mpq.allocation.allocate import allocate_by_rate

__all__ = ["FP32", "Precision", "allocate_by_rate", "bops", "bops_ratio", "bops_reduction_rate", "raw_reduction_rate"]
