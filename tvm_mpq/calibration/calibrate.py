"""Run a model with chosen intermediates exposed, once per calibration batch; observe ranges.

``run_exposed`` is the single place where calibration-style inference happens: one compiled
module (the ``ExposeIntermediates`` pass applied) and one run per batch, with a progress bar.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import tvm
import tvm_ffi
from tqdm import tqdm

from relay_passes import ExposeIntermediates
from tvm_mpq.calibration.observers import make_observer
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.output_files import write_atomically
from tvm_mpq.target_build.runs import compile_for_runs
from tvm_mpq.types import Feed

BatchCallback = Callable[[int, list[np.ndarray], list[np.ndarray]], None]
"""Called as ``(batch_index, model_outputs, exposed_tensors)``."""


def compile_exposed(graph: ModelGraph, var_names: list[str]):
    """``graph`` compiled with ``var_names`` as extra outputs (what :func:`run_exposed` runs; the
    CPU kernels' build for a large model, :func:`tvm_mpq.target_build.compile_for_runs`)."""
    return compile_for_runs(graph.with_module(ExposeIntermediates(var_names)(graph.mod)))


def run_exposed(graph: ModelGraph, feeds: list[Feed], var_names: list[str], on_batch: BatchCallback,
                desc: str = "calibrating", compiled=None) -> None:
    """Compile ``graph`` with ``var_names`` exposed (or take ``compiled``, from
    :func:`compile_exposed` with the same names) and call ``on_batch`` for every feed, in order.

    The model runs one feed ahead on a worker thread (TVM's calls release the GIL), so feed
    ``i + 1`` is inferred while ``on_batch`` measures feed ``i`` (numpy, also mostly outside the
    GIL): the two overlap on a second core; the callbacks still see the feeds one at a time."""
    compiled = compile_exposed(graph, var_names) if compiled is None else compiled
    k = len(var_names)
    progress = tqdm(total=len(feeds), desc=desc, unit="batch", leave=False,
                    disable=os.environ.get("TVM_MPQ_NO_PROGRESS") == "1")
    with progress, ThreadPoolExecutor(max_workers=1, thread_name_prefix="tvm-mpq-run") as runner:
        pending = runner.submit(compiled.run, feeds[0]) if feeds else None
        for index in range(len(feeds)):
            outputs = pending.result()
            pending = runner.submit(compiled.run, feeds[index + 1]) if index + 1 < len(feeds) else None
            outputs, tensors = outputs[:len(outputs) - k], outputs[len(outputs) - k:]
            on_batch(index, outputs, tensors)
            progress.update(1)


def default_cache_dir() -> Path:
    return Path(os.environ.get("TVM_MPQ_CACHE", Path.home() / ".cache" / "tvm-mpq"))


def calibration_key(graph: ModelGraph, feeds: list[Feed], var_names: list[str], observer: str) -> str:
    """Hash of everything a calibration result depends on: graph, weights, data, tensors, observer."""
    h = hashlib.sha256()
    h.update(str(tvm_ffi.structural_hash(graph.mod)).encode())
    for name, value in graph.params.items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(value).tobytes())
    for feed in feeds:
        for name in sorted(feed):
            h.update(np.ascontiguousarray(feed[name]).tobytes())
    h.update(json.dumps([var_names, observer]).encode())
    return h.hexdigest()[:24]


class CalibrationCache:
    """Activation ranges on disk: ``<cache_dir>/calibration/<model>-<key>.json``."""

    def __init__(self, cache_dir: Path | None = None):
        self.root = (cache_dir or default_cache_dir()) / "calibration"

    def path(self, model: str, key: str) -> Path:
        return self.root / f"{model.replace('/', '_')}-{key}.json"

    def load(self, model: str, key: str) -> dict[str, dict[int, tuple[float, float]]] | None:
        p = self.path(model, key)
        if not p.is_file():
            return None
        data = json.loads(p.read_text())
        return {var: {int(b): tuple(r) for b, r in by_bits.items()} for var, by_bits in data["ranges"].items()}

    def save(self, model: str, key: str, ranges: dict[str, dict[int, tuple[float, float]]], observer: str) -> Path:
        return write_atomically(self.path(model, key), json.dumps({
            "model": model, "observer": observer,
            "ranges": {v: {str(b): list(r) for b, r in by_bits.items()} for v, by_bits in ranges.items()}}))


def calibrate(graph: ModelGraph, feeds: list[Feed], var_names: list[str], observer: str = "minmax",
              bits: tuple[int, ...] = (8,), cache: CalibrationCache | None = None
              ) -> dict[str, dict[int, tuple[float, float]]]:
    """Ranges ``{var: {bits: (lo, hi)}}`` of the tensors ``var_names`` over ``feeds``."""
    key = calibration_key(graph, feeds, var_names, observer) if cache else ""
    if cache and (hit := cache.load(graph.name, key)) is not None and all(
            b in hit.get(v, {}) for v in var_names for b in bits):
        return hit
    observers = {v: make_observer(observer) for v in var_names}

    def observe(_i: int, _outs: list[np.ndarray], tensors: list[np.ndarray]) -> None:
        for v, t in zip(var_names, tensors):
            observers[v].update(t)

    run_exposed(graph, feeds, var_names, observe)
    ranges = {v: {b: observers[v].range(b) for b in bits} for v in var_names}
    if cache:
        cache.save(graph.name, key, ranges, observer)
    return ranges
