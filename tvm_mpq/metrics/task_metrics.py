"""Task metrics: one number from a model's outputs, its fp32 outputs and (where they exist) labels.

``outputs`` / ``reference`` are per-sample lists of the model's flattened outputs
(``outputs[i][k]``: output ``k`` of sample ``i``); class predictions are the argmax over the last
axis of output 0 (the logits), one per sample, or one per position for sequence outputs such as
the PP-OCR recogniser's ``(1, T, C)`` (agreement is then per position).

* with labels: ``accuracy`` (``lfw_accuracy`` for the MTCNN face / non-face task);
* without labels: ``top1_agreement`` / ``top5_agreement`` with the fp32 prediction (fp32
  pseudo-labels), ``kl_softmax`` of the output distributions, ``output_sqnr_db`` over all outputs
  (the SQNR of docs/design.md), ``embedding_cosine`` for sentence embeddings, ``text_agreement`` /
  ``text_similarity`` of the greedy-CTC recognized text for text recognisers.

Add a metric in one class: subclass :class:`TaskMetric`, set ``name`` (``needs_labels``,
``higher_is_better``), decorate with :func:`register_task_metric`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from tvm_mpq.errors import MpqError
from tvm_mpq.metrics.local_metrics import SqnrMetric
from tvm_mpq.registry import Registry
from tvm_mpq.types import Outputs


def _logits(outputs: Outputs) -> np.ndarray:
    """Output 0 of every sample as ``(positions, classes)`` rows, samples in order."""
    if not outputs:
        raise MpqError("a task metric needs at least one sample")
    return np.concatenate([np.asarray(o[0], np.float64).reshape(-1, np.shape(o[0])[-1]) for o in outputs])


def _check_pair(outputs: Outputs, reference: Outputs) -> None:
    if len(outputs) != len(reference):
        raise ValueError(f"{len(outputs)} outputs vs {len(reference)} reference outputs")


def accuracy(outputs: Outputs, labels: np.ndarray) -> float:
    """Fraction of samples whose argmax class equals the label (one prediction per sample)."""
    pred = _logits(outputs).argmax(-1)
    labels = np.asarray(labels).reshape(-1)
    if pred.size != labels.size:
        raise MpqError(f"accuracy needs one class prediction per sample: {pred.size} predictions "
                       f"for {labels.size} labels (output 0 has shape {np.shape(outputs[0][0])})")
    return float(np.mean(pred == labels))


def topk_agreement(outputs: Outputs, reference: Outputs, k: int = 1) -> float:
    """Fraction of predictions (samples or positions) whose fp32 top-1 class is in the top-``k``."""
    _check_pair(outputs, reference)
    ref_top1 = _logits(reference).argmax(-1)
    logits = _logits(outputs)
    if k == 1:
        return float(np.mean(logits.argmax(-1) == ref_top1))
    topk = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    return float(np.mean((topk == ref_top1[:, None]).any(-1)))


def top1_agreement(outputs: Outputs, reference: Outputs) -> float:
    """Top-1 agreement with the fp32 model (accuracy against fp32 pseudo-labels)."""
    return topk_agreement(outputs, reference, 1)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def kl_softmax(outputs: Outputs, reference: Outputs) -> float:
    """Mean ``KL(softmax(fp32) || softmax(quantized))`` over samples (and positions)."""
    _check_pair(outputs, reference)
    log_p, log_q = _log_softmax(_logits(reference)), _log_softmax(_logits(outputs))
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), -1)))


def output_sqnr_db(outputs: Outputs, reference: Outputs) -> float:
    """The SQNR of docs/design.md over every output of every sample (fp32 reference = signal)."""
    _check_pair(outputs, reference)
    metric = SqnrMetric()
    for out, ref in zip(outputs, reference):
        for o, r in zip(out, ref):
            metric.update(r, o)
    return metric.value()


def embedding_cosine(outputs: Outputs, reference: Outputs) -> float:
    """Mean over samples of the cosine similarity of output 0 with its fp32 value."""
    _check_pair(outputs, reference)
    values = []
    for out, ref in zip(outputs, reference):
        a, b = np.asarray(ref[0], np.float64).ravel(), np.asarray(out[0], np.float64).ravel()
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        values.append(float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b)))
    return float(np.mean(values))


def ctc_sequences(outputs: Outputs, blank: int = 0) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of output 0 of every sample, as class indices: argmax per time step,
    repeats collapsed, ``blank`` dropped (the PP-OCR recogniser's decoding, before the indices are
    mapped to characters, so two outputs decode to the same text iff their sequences are equal)."""
    sequences = []
    for out in outputs:
        best = np.asarray(out[0]).reshape(-1, np.shape(out[0])[-1]).argmax(-1)
        keep = np.ones_like(best, bool)
        keep[1:] = best[1:] != best[:-1]
        keep &= best != blank
        sequences.append(tuple(int(i) for i in best[keep]))
    return sequences


def _edit_distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def text_agreement(outputs: Outputs, reference: Outputs, blank: int = 0) -> float:
    """Fraction of samples whose recognized text (greedy CTC) equals the fp32 model's."""
    _check_pair(outputs, reference)
    return float(np.mean([a == b for a, b in zip(ctc_sequences(outputs, blank), ctc_sequences(reference, blank))]))


def text_similarity(outputs: Outputs, reference: Outputs, blank: int = 0) -> float:
    """Mean over samples of ``1 - edit distance / max(len)`` between the recognized texts and
    the fp32 model's (1 where both are empty)."""
    _check_pair(outputs, reference)
    values = [1.0 - _edit_distance(a, b) / max(len(a), len(b), 1)
              for a, b in zip(ctc_sequences(outputs, blank), ctc_sequences(reference, blank))]
    return float(np.mean(values))


class TaskMetric(ABC):
    """A task metric: ``metric(outputs, reference, labels)`` -> float."""

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    needs_labels: ClassVar[bool] = False

    @abstractmethod
    def __call__(self, outputs: Outputs, reference: Outputs, labels: np.ndarray | None = None) -> float:
        """The metric of ``outputs`` (``reference``: fp32 outputs of the same samples)."""


_TASK_METRICS: Registry[TaskMetric] = Registry("task metric")
register_task_metric = _TASK_METRICS.register
task_metric_names = _TASK_METRICS.names


def make_task_metric(name: str) -> TaskMetric:
    """A task metric by registered name (MpqError naming the valid ones otherwise)."""
    return _TASK_METRICS.make(name)


class _LabelledMetric(TaskMetric):
    needs_labels = True

    def __call__(self, outputs: Outputs, reference: Outputs, labels: np.ndarray | None = None) -> float:
        if labels is None:
            raise MpqError(f"task metric '{self.name}' needs labels, and these samples have none")
        return accuracy(outputs, labels)


@register_task_metric
class Accuracy(_LabelledMetric):
    """Top-1 accuracy against true labels."""

    name = "accuracy"


@register_task_metric
class LfwAccuracy(_LabelledMetric):
    """Face / non-face accuracy on scikit-image's LFW subset (MTCNN RNet; label 1 = face)."""

    name = "lfw_accuracy"


@register_task_metric
class Top1Agreement(TaskMetric):
    """Top-1 agreement with the fp32 predictions (fp32 pseudo-labels)."""

    name = "top1_agreement"

    def __call__(self, outputs: Outputs, reference: Outputs, labels: np.ndarray | None = None) -> float:
        return top1_agreement(outputs, reference)


@register_task_metric
class Top5Agreement(TaskMetric):
    """The fp32 top-1 class is among the top-5 classes."""

    name = "top5_agreement"

    def __call__(self, outputs: Outputs, reference: Outputs, labels: np.ndarray | None = None) -> float:
        return topk_agreement(outputs, reference, 5)


@register_task_metric
class KlSoftmax(TaskMetric):
    """KL divergence of the softmax outputs from fp32's (lower is better)."""

    name = "kl_softmax"
    higher_is_better = False

    def __call__(self, outputs: Outputs, reference: Outputs, labels: np.ndarray | None = None) -> float:
        return kl_softmax(outputs, reference)


@register_task_metric
class OutputSqnr(TaskMetric):
    """SQNR of all outputs against fp32, in dB."""

    name = "output_sqnr_db"

    def __call__(self, outputs: Outputs, reference: Outputs, labels: np.ndarray | None = None) -> float:
        return output_sqnr_db(outputs, reference)


@register_task_metric
class EmbeddingCosine(TaskMetric):
    """Cosine similarity of the embedding (output 0) with fp32's."""

    name = "embedding_cosine"

    def __call__(self, outputs: Outputs, reference: Outputs, labels: np.ndarray | None = None) -> float:
        return embedding_cosine(outputs, reference)


@register_task_metric
class TextAgreement(TaskMetric):
    """Recognized-text agreement with fp32 (CTC recogniser, e.g. ppocr-rec): exact match per sample."""

    name = "text_agreement"

    def __call__(self, outputs: Outputs, reference: Outputs, labels: np.ndarray | None = None) -> float:
        return text_agreement(outputs, reference)


@register_task_metric
class TextSimilarity(TaskMetric):
    """Recognized-text similarity with fp32: 1 - normalized edit distance, mean over samples."""

    name = "text_similarity"

    def __call__(self, outputs: Outputs, reference: Outputs, labels: np.ndarray | None = None) -> float:
        return text_similarity(outputs, reference)


def default_metric(task: str, has_labels: bool) -> str:
    """The metric a task is judged by: accuracy where labels exist (``lfw_accuracy`` for the
    face task), embedding cosine for sentence embeddings, else top-1 agreement with fp32."""
    if has_labels:
        return "lfw_accuracy" if task == "face-binary" else "accuracy"
    if task == "sentence-embedding":
        return "embedding_cosine"
    return "top1_agreement"
