"""Sensitivity analysis: per-layer measurements and the methods that rank layers from them."""

from tvm_mpq.sensitivity import quantunev2 as _quantunev2  # noqa: F401  (registers "quantunev2")
from tvm_mpq.sensitivity.analysis import SensitivityReport, analyze
from tvm_mpq.sensitivity.layer_metrics import LayerMetrics, Measurement, measure_layers
from tvm_mpq.sensitivity.methods import SensitivityMethod, make_method, method_names, register_method

__all__ = ["LayerMetrics", "Measurement", "SensitivityMethod", "SensitivityReport", "analyze",
           "make_method", "measure_layers", "method_names", "register_method"]
