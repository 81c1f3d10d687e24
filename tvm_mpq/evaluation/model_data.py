"""A zoo model with the samples the paper's experiments use: calibration and evaluation sets.

Sample counts are per model (:data:`PROFILES`): on this 2-core machine an EfficientNet-Lite0
inference takes ~0.3 s and a PP-OCR recogniser one ~0.7 s, against a few milliseconds for
mtcnn-rnet and ppocr-cls, so the expensive models get fewer evaluation, Top-1 and Pandey samples.

The evaluation samples are the named set of :func:`tvm_mpq.evaluation.sample_set.held_out`,
the one ``tvm-mpq sweep`` and ``benchmarks/precision_pass.py`` use: labelled models
(mtcnn-rnet: 200 LFW crops; ppocr-cls: 74 strips upright / rotated) on their labelled samples
after the first ``calib``, other models on ``calibration(calib + eval)[calib:]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from tvm_mpq.errors import MpqError
from tvm_mpq.evaluation.sample_set import SampleSet, held_out
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable, build_layer_table
from tvm_mpq.types import Feed
from tvm_mpq.zoo.registry import get


@dataclass(frozen=True)
class SampleCounts:
    """``calib``: calibration samples; ``eval``: evaluation samples (None: the whole labelled
    set); ``top1``: Top-1 order's samples (None: all evaluation samples, the paper's "all");
    ``pandey``: Pandey et al.'s phase-1 / phase-2 samples (None: all calibration samples);
    ``curve_points``: measured points per recovery curve (None: every number of fp32 layers);
    ``curve_samples``: the first evaluation samples the recovery curves run on (None: all)."""

    calib: int = 16
    eval: int | None = None
    top1: int | None = None
    pandey: int | None = 8
    curve_points: int | None = None
    curve_samples: int | None = None


PROFILES: dict[str, SampleCounts] = {
    "mtcnn-rnet": SampleCounts(calib=16, eval=None, top1=None, pandey=16),
    "ppocr-cls": SampleCounts(calib=16, eval=None, top1=None, pandey=16, curve_points=12),
    "efficientnet-lite0": SampleCounts(calib=16, eval=32, top1=6, pandey=2, curve_points=8, curve_samples=12),
    "ppocr-rec": SampleCounts(calib=8, eval=12, top1=3, pandey=2, curve_points=6, curve_samples=6),
    "minilm": SampleCounts(calib=16, eval=32, top1=8, pandey=4, curve_points=8, curve_samples=16),
}
DEFAULT_COUNTS = SampleCounts(calib=16, eval=32, top1=8, pandey=4, curve_points=8, curve_samples=16)


def counts_for(model: str, **overrides: int | None) -> SampleCounts:
    """The model's profile with the non-None ``overrides`` applied."""
    base = PROFILES.get(model, DEFAULT_COUNTS)
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class ModelData:
    """A zoo model at stage A, its layer table, calibration and evaluation samples."""

    name: str
    task: str
    graph: ModelGraph
    table: LayerTable
    calib: list[Feed]
    samples: SampleSet
    counts: SampleCounts

    @property
    def eval_feeds(self) -> list[Feed]:
        """The evaluation samples' feeds."""
        return self.samples.feeds

    @property
    def labels(self) -> np.ndarray | None:
        """The evaluation samples' true labels (None: unlabelled)."""
        return self.samples.labels

    def describe(self) -> str:
        """One line: layers, MACs, sample counts."""
        labels = "labelled" if self.labels is not None else "fp32 pseudo-labels"
        return (f"{len(self.table)} MAC layers, {self.table.total_macs() / 1e6:.1f} M MACs; "
                f"{len(self.calib)} calibration / {len(self.eval_feeds)} evaluation samples ({labels})")


def load_model_data(name: str, counts: SampleCounts) -> ModelData:
    """Build the zoo model ``name`` and its sample sets (see module docstring)."""
    model = get(name)
    if not model.pretrained:
        raise MpqError(f"zoo model '{name}' is architecture-only (random weights): no accuracy claims; "
                       "evaluate a pretrained one")
    if counts.calib < 1:
        raise MpqError(f"--calib-size must be >= 1, got {counts.calib}")
    graph = model.build_graph()
    table = build_layer_table(graph)
    calib = model.calibration(counts.calib)
    samples = held_out(name, counts.calib, counts.eval)
    eval_feeds, labels = samples.feeds, samples.labels
    top1, top1_pool = counts.top1, len(eval_feeds) if labels is not None else len(calib)
    if top1 is not None and top1 > top1_pool:
        top1 = top1_pool
    if counts.pandey is not None and counts.pandey > len(calib):
        counts = dataclasses.replace(counts, pandey=len(calib))
    curve = counts.curve_samples
    if curve is not None and curve >= len(eval_feeds):
        curve = None
    counts = dataclasses.replace(counts, top1=top1, eval=len(eval_feeds), curve_samples=curve)
    return ModelData(name, model.task, graph, table, calib, samples, counts)
