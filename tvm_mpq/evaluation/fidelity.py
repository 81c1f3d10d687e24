"""Fidelity to fp32: the one code path of ``tvm-mpq sweep``, ``tvm-mpq eval`` and the benchmarks.

::

    samples = held_out("efficientnet-lite0", 16, 32)        # tvm_mpq.evaluation.sample_set
    reference = fp32_reference(graph, samples)              # the fp32 model run on this host
    figures(task, outputs, reference)   # {"fidelity": {"top1_agreement": ...}, "accuracy": {...}}

Every figure comes from :func:`scores`: the task's metric set (:func:`tasks.metric_set`, one
table for every tool), computed against the fp32 outputs and, where the sample set has true
labels, against those. :func:`fidelity` is its label-free part (docs/design.md "Report contract": the sweep
point's ``fidelity``), :func:`accuracy` the part against true labels. ``step_agreement``
compares two quantized runs (integer vs QDQ-simulated) in units of one int8 step of the fp32
output.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import numpy as np

from tvm_mpq.evaluation.sample_set import SampleSet
from tvm_mpq.evaluation.tasks import metric_set
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.metrics.task_metrics import Outputs, make_task_metric


@dataclass(frozen=True)
class Reference:
    """The fp32 model's outputs on a sample set, and where they were computed."""

    samples: SampleSet
    outputs: Outputs
    runs_on: str
    model: object | None = None
    """The compiled fp32 model that computed ``outputs`` (a ``CompiledGraph``), to run it again on
    other inputs without a second compile."""


def fp32_reference(graph: ModelGraph, samples: SampleSet) -> Reference:
    """``graph`` (stage A, fp32) compiled for and run on this host (``llvm``) on every sample
    (the CPU kernels' build for a large model, :func:`tvm_mpq.target_build.compile_for_runs`)."""
    from tvm_mpq.target_build.runs import compile_for_runs

    model = compile_for_runs(graph)
    outputs = [model.run(feed) for feed in samples.feeds]
    return Reference(samples, outputs, f"this host ({platform.machine()}, fp32 llvm build, run locally)", model)


def scores(task: str, outputs: Outputs, reference: Outputs, labels: np.ndarray | None = None) -> dict[str, float]:
    """Every metric of ``task``'s set: against the fp32 ``reference`` outputs (same samples, same
    order) and, when ``labels`` are given, against the true labels."""
    return metric_set(task, labels is not None).compute(outputs, reference, labels)


def figures(task: str, outputs: Outputs, reference: Reference) -> dict[str, dict[str, float]]:
    """:func:`scores` on ``reference``'s sample set, split into ``fidelity`` (label-free) and
    ``accuracy`` (against true labels; ``{}`` without them)."""
    flat = scores(task, outputs, reference.outputs, reference.samples.labels)
    labelled = {name for name in flat if make_task_metric(name).needs_labels}
    return {"fidelity": {k: v for k, v in flat.items() if k not in labelled},
            "accuracy": {k: v for k, v in flat.items() if k in labelled}}


def fidelity_metric_names(task: str) -> tuple[str, ...]:
    """The label-free metrics reported for ``task``."""
    return metric_set(task, False).metrics


def fidelity(task: str, outputs: Outputs, reference: Outputs) -> dict[str, float]:
    """Label-free agreement of ``outputs`` with the fp32 ``reference`` (same samples)."""
    return scores(task, outputs, reference)


def accuracy(task: str, outputs: Outputs, labels: np.ndarray) -> dict[str, float]:
    """Accuracy against true labels (``lfw_accuracy`` for the face task, ``accuracy`` otherwise)."""
    names = [m for m in metric_set(task, True).metrics if make_task_metric(m).needs_labels] or ["accuracy"]
    return {name: float(make_task_metric(name)(outputs, outputs, labels)) for name in names}


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
