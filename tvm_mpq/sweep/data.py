"""The samples every sweep point is evaluated on, held out from calibration where possible.

* a zoo model with true labels (``mtcnn-rnet``): the labelled samples after the calibration
  prefix (LFW faces / non-faces interleaved, so any slice is balanced); accuracy is reported;
* a zoo model without labels: the zoo's sample images after the calibration ones (other crops
  and flips of the bundled photos);
* a model file: the calibration samples themselves (said so in the report's ``eval.source``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tvm_mpq.errors import MpqError
from tvm_mpq.zoo.registry import Feed


@dataclass
class EvalSet:
    """Evaluation feeds, their true labels (or None) and where they came from."""

    feeds: list[Feed]
    labels: np.ndarray | None
    source: str

    def to_json(self) -> dict:
        """``{"samples", "labelled", "source"}`` for the report."""
        return {"samples": len(self.feeds), "labelled": self.labels is not None, "source": self.source}


def eval_set(model: str, calib_feeds: list[Feed], eval_size: int, calib_given: bool) -> EvalSet:
    """``eval_size`` samples for ``model`` (a zoo name or a file); ``calib_given``: the
    calibration came from ``--calib`` (then the zoo's own samples are all held out)."""
    from tvm_mpq import zoo

    if eval_size <= 0:
        raise MpqError(f"--eval-size must be positive, got {eval_size}")
    if model not in zoo.names():
        return EvalSet(calib_feeds[:eval_size], None, f"the first {min(eval_size, len(calib_feeds))} calibration "
                       "samples (a model file has no held-out set)")
    entry = zoo.get(model)
    skip = 0 if calib_given else len(calib_feeds)
    if entry.labelled is not None:
        feeds, labels = entry.labelled(skip + eval_size)
        feeds, labels = feeds[skip:], labels[skip:]
        if not feeds:
            raise MpqError(f"{model}: no labelled samples left after the {skip} calibration samples "
                           f"(lower --calib-size)")
        return EvalSet(feeds, np.asarray(labels), f"{len(feeds)} labelled samples held out from calibration")
    try:
        feeds = entry.calibration(skip + eval_size)[skip:]
    except MpqError:
        raise MpqError(f"{model}: {skip} calibration + {eval_size} evaluation samples are more than the bundled "
                       f"sample images; lower --eval-size or --calib-size") from None
    return EvalSet(feeds, None, f"{len(feeds)} bundled sample images held out from calibration")
