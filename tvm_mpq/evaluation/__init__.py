"""Evaluation: task metrics computed from model outputs (and labels where they exist)."""

from tvm_mpq.evaluation.task_metrics import (
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
