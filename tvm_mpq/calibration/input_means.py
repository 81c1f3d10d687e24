"""The calibration set's mean of chosen tensors (one fp32 inference pass), cached on disk.

Bias correction needs ``E[x]`` of every quantized layer's input: the element-wise mean over all
calibration samples (and the batch axis), one tensor per layer, the shape of one sample.
"""

from __future__ import annotations

import numpy as np

from tvm_mpq.calibration.calibrate import CalibrationCache, calibration_key, run_exposed
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.types import Feed

MEAN_KIND = "mean-tensor"
"""What the cache key records in place of an observer name."""


def mean_tensors(graph: ModelGraph, feeds: list[Feed], var_names: list[str],
                 cache: CalibrationCache | None = None) -> dict[str, np.ndarray]:
    """``{var: mean over feeds and the batch axis}`` (float64, shape without the batch axis)."""
    names = sorted(set(var_names))
    if not names:
        return {}
    key = calibration_key(graph, feeds, names, MEAN_KIND) if cache else ""
    path = cache.path(graph.name, key).with_suffix(".means.npz") if cache else None
    if path is not None and path.is_file():
        with np.load(path) as data:
            if all(f"t{i}" in data.files for i in range(len(names))):
                return {n: data[f"t{i}"] for i, n in enumerate(names)}
    sums: dict[str, np.ndarray] = {}
    counts = {n: 0 for n in names}

    def accumulate(_i: int, _outs: list[np.ndarray], tensors: list[np.ndarray]) -> None:
        for name, tensor in zip(names, tensors):
            t = np.asarray(tensor, dtype=np.float64)
            batch = t.reshape(-1, *t.shape[1:]) if t.ndim > 1 else t[None]
            sums[name] = sums.get(name, 0.0) + batch.sum(axis=0)
            counts[name] += batch.shape[0]

    run_exposed(graph, feeds, names, accumulate, desc="mean inputs (bias correction)")
    means = {n: sums[n] / counts[n] for n in names}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{f"t{i}": means[n] for i, n in enumerate(names)})
    return means
