"""Evaluation: fidelity and task metrics of compiled models, the paper's tables and studies.

The task metrics themselves live in :mod:`tvm_mpq.metrics.task_metrics` (sensitivity methods use
them too); they are re-exported here."""

from tvm_mpq.metrics.task_metrics import (
    Outputs,
    TaskMetric,
    accuracy,
    default_metric,
    embedding_cosine,
    kl_softmax,
    make_task_metric,
    output_sqnr_db,
    register_task_metric,
    task_metric_names,
    top1_agreement,
    topk_agreement,
)

__all__ = ["Outputs", "TaskMetric", "accuracy", "default_metric", "embedding_cosine", "kl_softmax",
           "make_task_metric", "output_sqnr_db", "register_task_metric", "task_metric_names",
           "top1_agreement", "topk_agreement"]
