"""Which task metrics the paper's tables report for each zoo task, and which one is primary.

* ``imagenet`` (efficientnet-lite0): top-1 / top-5 agreement with fp32 and KL of the softmax
  outputs (no ImageNet labels ship offline: fp32 predictions are the pseudo-labels);
* ``face-binary`` (mtcnn-rnet): LFW face / non-face accuracy (true labels);
* ``text-direction`` (ppocr-cls): top-1 agreement with fp32 (plus accuracy on the 0/180-degree
  labels of the rotated strips);
* ``text-recognition`` (ppocr-rec): recognized-text agreement (greedy CTC, exact match) and
  similarity (1 - normalized edit distance) with fp32;
* ``sentence-embedding`` (minilm): embedding cosine with fp32.

Every task also reports the output SQNR against fp32 (a continuous companion of the discrete
agreement metrics on few samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tvm_mpq.metrics.task_metrics import Outputs, make_task_metric


@dataclass(frozen=True)
class TaskMetricSet:
    """``primary`` judges a point (tables, recovery curves); ``metrics`` are all reported."""

    primary: str
    metrics: tuple[str, ...]

    def compute(self, outputs: Outputs, reference: Outputs, labels: np.ndarray | None) -> dict[str, float]:
        """Every metric of the set (label metrics only where ``labels`` exist)."""
        out = {}
        for name in self.metrics:
            metric = make_task_metric(name)
            if metric.needs_labels and labels is None:
                continue
            out[name] = float(metric(outputs, reference, labels))
        return out

    def higher_is_better(self, name: str | None = None) -> bool:
        """Direction of ``name`` (default: the primary metric)."""
        return make_task_metric(name or self.primary).higher_is_better


_SETS = {
    "imagenet": TaskMetricSet("top1_agreement", ("top1_agreement", "top5_agreement", "kl_softmax", "output_sqnr_db")),
    "face-binary": TaskMetricSet("lfw_accuracy", ("lfw_accuracy", "top1_agreement", "kl_softmax", "output_sqnr_db")),
    "text-direction": TaskMetricSet("top1_agreement", ("top1_agreement", "accuracy", "kl_softmax", "output_sqnr_db")),
    "text-recognition": TaskMetricSet("text_agreement", ("text_agreement", "text_similarity", "top1_agreement",
                                                         "output_sqnr_db")),
    "sentence-embedding": TaskMetricSet("embedding_cosine", ("embedding_cosine", "output_sqnr_db")),
}
_GENERIC = TaskMetricSet("top1_agreement", ("top1_agreement", "output_sqnr_db"))

SHORT = {"top1_agreement": "top-1 agr.", "top5_agreement": "top-5 agr.", "kl_softmax": "KL",
         "output_sqnr_db": "out SQNR dB", "lfw_accuracy": "LFW acc.", "accuracy": "acc. (labels)",
         "text_agreement": "text agr.", "text_similarity": "text sim.", "embedding_cosine": "emb. cosine"}
"""Column headers for the Markdown tables."""


def metric_set(task: str, has_labels: bool) -> TaskMetricSet:
    """The metrics of ``task``; a labelled primary metric falls back to top-1 agreement without labels."""
    chosen = _SETS.get(task, _GENERIC)
    if not has_labels and make_task_metric(chosen.primary).needs_labels:
        return TaskMetricSet("top1_agreement", tuple(m for m in chosen.metrics if not make_task_metric(m).needs_labels))
    return chosen
