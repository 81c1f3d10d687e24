"""Types and names shared across the package, at the ground floor of the import graph.

``Feed`` was defined in ``tvm_mpq.zoo.registry``; it lives here so that runtime, calibration,
sensitivity and the compiler need not import the model zoo for a type alias.
"""

from __future__ import annotations

import numpy as np

from tvm_mpq.errors import MpqError

Feed = dict[str, np.ndarray]
"""One batch of model inputs, keyed by input name, with the model's exact input shapes."""

Outputs = list[list[np.ndarray]]
"""Model outputs per sample: ``outputs[i]`` is the flattened output list of sample ``i``."""

# The IR stages QuantuneV2 measures sensitivity on and applies a config to (docs/design.md, "The IR
# stages, by name"). The values are the paper's letters, which the command line, the configs'
# provenance and the reports keep; code compares against these names.
SOURCE = "A"
"""The source graph ("stage A"): the imported model, conv / batch-norm / activation separate."""
FOLDED = "C"
"""The folded graph ("stage C"): batch-norm folded into the convs, the layers that run fused."""
SOURCE_TO_FOLDED = "A->C"
"""Sensitivity measured on the source graph, the config applied on the folded graph (default)."""

STAGE_NAMES = {"source": SOURCE, "source->folded": SOURCE_TO_FOLDED, "folded": FOLDED}
"""``--stage`` by name; the letters (``A``, ``A->C``, ``C``) are accepted too."""
STAGES = (SOURCE, SOURCE_TO_FOLDED, FOLDED)


def parse_stage(text: str) -> str:
    """A stage by name (``source``, ``source->folded``, ``folded``) or letter -> its letter form."""
    stage = STAGE_NAMES.get(text, text)
    if stage not in STAGES:
        names = ", ".join(f"{name} ({letter})" for name, letter in STAGE_NAMES.items())
        raise MpqError(f"IR stage must be one of {names}, not {text!r}")
    return stage


def stage_name(stage: str) -> str:
    """``"A->C"`` -> ``"source->folded"``."""
    return next(name for name, letter in STAGE_NAMES.items() if letter == stage)


def measured_on(stage: str) -> str:
    """The graph a stage's sensitivity is measured on: :data:`FOLDED` for ``folded``, else
    :data:`SOURCE`."""
    return FOLDED if stage == FOLDED else SOURCE


RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
"""Gate blocks in the weights of each ONNX recurrent op (the frontend's rewrite and the loop
kernel both read them)."""


__all__ = ["FOLDED", "RECURRENT_GATES", "SOURCE", "SOURCE_TO_FOLDED", "STAGES", "STAGE_NAMES", "Feed", "Outputs", "measured_on",
           "parse_stage", "stage_name"]
