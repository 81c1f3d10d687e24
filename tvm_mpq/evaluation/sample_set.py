"""The named evaluation sample sets that every tool scores fidelity on.

``tvm-mpq sweep``, ``tvm-mpq eval`` and ``benchmarks/precision_pass.py`` all take their
evaluation samples from :func:`held_out` (a model file: :func:`first_samples`), so the same
name means the same samples, in the same order, with the same labels:

* a zoo model with true labels (mtcnn-rnet, ppocr-cls): the labelled samples after the first
  ``calib`` (LFW faces / non-faces, upright / rotated strips, interleaved: any slice is
  balanced); mtcnn-rnet calibrates on exactly those first samples;
* a zoo model without labels: the zoo's sample images after the ``calib`` calibration ones
  (other crops and flips of the bundled photos);
* a model file: the first calibration samples themselves (there is nothing held out).

The name, e.g. ``efficientnet-lite0/held-out[16:48]``, is the model and the slice of its
sample sequence; reports carry it (``SampleSet.to_json``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tvm_mpq.errors import MpqError
from tvm_mpq.types import Feed

DEFAULT_HELD_OUT = 32
"""Held-out samples of an unlabelled zoo model when no size is given."""


@dataclass(frozen=True)
class SampleSet:
    """Evaluation feeds, their true labels (or None), the set's name and a sentence on its origin."""

    name: str
    feeds: list[Feed]
    labels: np.ndarray | None
    source: str

    def to_json(self) -> dict:
        """``{"name", "samples", "labelled", "source"}`` for a report."""
        return {"name": self.name, "samples": len(self.feeds), "labelled": self.labels is not None,
                "source": self.source}


def held_out(model: str, calib_size: int, eval_size: int | None = None) -> SampleSet:
    """Zoo model ``model``'s samples after its first ``calib_size`` (see the module docstring);
    ``eval_size`` of them (None: every labelled one left, or :data:`DEFAULT_HELD_OUT`)."""
    from tvm_mpq import zoo

    if eval_size is not None and eval_size <= 0:
        raise MpqError(f"--eval-size must be positive, got {eval_size}")
    entry = zoo.get(model)
    if entry.labelled is not None:
        feeds, labels = entry.labelled(None if eval_size is None else calib_size + eval_size)
        feeds, labels = feeds[calib_size:], np.asarray(labels[calib_size:])
        if not feeds:
            raise MpqError(f"{model}: no labelled samples left after the {calib_size} calibration samples "
                           f"(lower --calib-size)")
        source = f"{len(feeds)} labelled samples held out from calibration"
    else:
        count = calib_size + (DEFAULT_HELD_OUT if eval_size is None else eval_size)
        try:
            feeds = entry.calibration(count)[calib_size:]
        except MpqError:
            raise MpqError(f"{model}: {calib_size} calibration + {count - calib_size} evaluation samples are more "
                           "than the bundled sample images; lower --eval-size or --calib-size") from None
        labels = None
        source = f"{len(feeds)} bundled sample images held out from calibration"
    return SampleSet(f"{model}/held-out[{calib_size}:{calib_size + len(feeds)}]", feeds, labels, source)


def first_samples(model: str, feeds: list[Feed], eval_size: int) -> SampleSet:
    """The first ``eval_size`` of ``feeds`` (a model file's calibration samples: none is held out)."""
    if eval_size <= 0:
        raise MpqError(f"--eval-size must be positive, got {eval_size}")
    chosen = feeds[:eval_size]
    return SampleSet(f"{model}/calibration[0:{len(chosen)}]", chosen, None,
                     f"the first {len(chosen)} calibration samples (a model file has no held-out set)")
