"""Local metrics comparing a fp32 tensor with its quantized counterpart (registry by name)."""

from tvm_mpq.metrics.local_metrics import (
    SQNR_CAP_DB,
    LocalMetric,
    make_metric,
    metric_names,
    mse,
    register_metric,
    sqnr_db,
)

__all__ = ["SQNR_CAP_DB", "LocalMetric", "make_metric", "metric_names", "mse", "register_metric", "sqnr_db"]
