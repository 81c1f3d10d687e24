"""Sensitivity analysis: per-layer measurements and the methods that rank layers from them."""

from tvm_mpq.sensitivity import quantunev2 as _quantunev2  # noqa: F401  (registers "quantunev2")
from tvm_mpq.sensitivity import quantunev2_e2e as _quantunev2_e2e  # noqa: F401  (registers "quantunev2-e2e")
from tvm_mpq.sensitivity import top1 as _top1  # noqa: F401  (registers "top1")
from tvm_mpq.sensitivity import mixquant as _mixquant  # noqa: F401  (registers "mixquant")
from tvm_mpq.sensitivity import pandey as _pandey  # noqa: F401  (registers "pandey")
from tvm_mpq.sensitivity import ablation as _ablation  # noqa: F401  (registers the Table 8 variants)
from tvm_mpq.sensitivity import pandey_fp32 as _pandey_fp32  # noqa: F401  (registers "pandey-fp32")
from tvm_mpq.sensitivity.analysis import SensitivityReport, analyze, g_option
from tvm_mpq.sensitivity.context import BitAllocation, EvalData, MethodContext, kernel_for
from tvm_mpq.sensitivity.layer_metrics import LayerMetrics, Measurement, measure_layers
from tvm_mpq.sensitivity.methods import SensitivityMethod, make_method, method_names, register_method

__all__ = ["BitAllocation", "EvalData", "LayerMetrics", "Measurement", "MethodContext", "SensitivityMethod",
           "SensitivityReport", "analyze", "g_option", "kernel_for", "make_method", "measure_layers", "method_names",
           "register_method"]
