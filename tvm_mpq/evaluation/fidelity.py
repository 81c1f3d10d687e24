"""The fidelity block of a report: every task metric that applies to a model's task.

``fidelity(task, outputs, reference)`` -> ``{"top1_agreement": ..., "output_sqnr_db": ...}``
(DESIGN "Report"); ``accuracy(task, outputs, labels)`` -> ``{"lfw_accuracy": ...}`` where true
labels exist. ``step_agreement`` compares two quantized runs (integer vs QDQ-simulated) in
units of one int8 step of the fp32 output.
"""

from __future__ import annotations

import numpy as np

from tvm_mpq.evaluation.task_metrics import Outputs, make_task_metric

CLASSIFIER_TASKS = ("imagenet", "face-binary", "text-direction", "architecture-only")
_FIDELITY = {
    "imagenet": ("top1_agreement", "top5_agreement", "kl_softmax", "output_sqnr_db"),
    "face-binary": ("top1_agreement", "kl_softmax", "output_sqnr_db"),
    "text-direction": ("top1_agreement", "kl_softmax", "output_sqnr_db"),
    "text-recognition": ("top1_agreement", "output_sqnr_db"),
    "sentence-embedding": ("embedding_cosine", "output_sqnr_db"),
}
_DEFAULT = ("top1_agreement", "output_sqnr_db")


def fidelity_metric_names(task: str) -> tuple[str, ...]:
    """The label-free metrics reported for ``task``."""
    return _FIDELITY.get(task, _DEFAULT)


def fidelity(task: str, outputs: Outputs, reference: Outputs) -> dict[str, float]:
    """Label-free agreement of ``outputs`` with the fp32 ``reference`` (same samples)."""
    return {name: float(make_task_metric(name)(outputs, reference)) for name in fidelity_metric_names(task)}


def accuracy(task: str, outputs: Outputs, labels: np.ndarray) -> dict[str, float]:
    """Accuracy against true labels (``lfw_accuracy`` for the face task)."""
    name = "lfw_accuracy" if task == "face-binary" else "accuracy"
    return {name: float(make_task_metric(name)(outputs, outputs, labels))}


def step_agreement(outputs: Outputs, simulated: Outputs, reference: Outputs) -> dict[str, float]:
    """``|outputs - simulated|`` in units of one int8 step of each fp32 output (its range over
    all samples / 255): the maximum, and the fraction of elements within one step."""
    worst, within, total = 0.0, 0, 0
    for k in range(len(reference[0]) if reference else 0):
        ref = np.stack([np.asarray(r[k], np.float64) for r in reference])
        step = (float(ref.max()) - float(ref.min())) / 255 or 1.0
        diff = np.abs(np.stack([np.asarray(o[k], np.float64) for o in outputs])
                      - np.stack([np.asarray(s[k], np.float64) for s in simulated])) / step
        worst = max(worst, float(diff.max()))
        within += int((diff <= 1.0).sum())
        total += diff.size
    return {"max_steps": worst, "within_one_step": within / total if total else 1.0}
