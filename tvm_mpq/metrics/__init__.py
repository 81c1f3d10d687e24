"""Metrics, by name: local metrics compare a fp32 tensor with its quantized counterpart
(``local_metrics``: SQNR, MSE, cosine, ...); task metrics score a model's outputs against its fp32
outputs or labels (``task_metrics``: top-1 agreement, output SQNR, accuracy, ...). Sensitivity
methods, the evaluation and the sweep all read them from here."""

from tvm_mpq.metrics.local_metrics import (
    SQNR_CAP_DB,
    LocalMetric,
    make_metric,
    metric_names,
    mse,
    register_metric,
    sqnr_db,
)
from tvm_mpq.metrics.task_metrics import (
    TaskMetric,
    default_metric,
    make_task_metric,
    output_sqnr_db,
    register_task_metric,
    task_metric_names,
)

__all__ = ["SQNR_CAP_DB", "LocalMetric", "TaskMetric", "default_metric", "make_metric", "make_task_metric",
           "metric_names", "mse", "output_sqnr_db", "register_metric", "register_task_metric", "sqnr_db",
           "task_metric_names"]
