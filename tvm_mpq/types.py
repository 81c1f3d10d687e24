"""Types shared across the package, at the ground floor of the import graph (no tvm_mpq imports).

``Feed`` was defined in ``tvm_mpq.zoo.registry``; it lives here so that runtime, calibration,
sensitivity and the compiler need not import the model zoo for a type alias.
"""

from __future__ import annotations

import numpy as np

Feed = dict[str, np.ndarray]
"""One batch of model inputs, keyed by input name, with the model's exact input shapes."""

Outputs = list[list[np.ndarray]]
"""Model outputs per sample: ``outputs[i]`` is the flattened output list of sample ``i``."""

__all__ = ["Feed", "Outputs"]
