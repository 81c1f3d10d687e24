"""Calibration and evaluation feeds for a corpus model, from its :class:`InputRecipe` s.

Image inputs are real photos, or real document images for models made for documents
(:mod:`tvm_mpq.data.images`); a graph network's are real molecules and a reaction model's real
reactions (:mod:`tvm_mpq.data.bundled_arrays`); the others are synthetic, drawn from
a seeded generator in the input's range. ``feeds(model, graph, count, offset)`` returns
``count`` feeds starting at sample ``offset``: calibration takes ``[0, n)`` and evaluation the
samples after it, so the two never overlap.
"""

from __future__ import annotations

import numpy as np

from tvm_mpq.corpus.catalog import CorpusModel, InputRecipe
from tvm_mpq.data.bundled_arrays import BUNDLED_KINDS, bundled_arrays
from tvm_mpq.frontends.model_graph import ModelGraph, TensorSpec

Feed = dict[str, np.ndarray]


def feeds(model: CorpusModel, graph: ModelGraph, count: int, offset: int = 0) -> list[Feed]:
    """``count`` feeds (samples ``offset .. offset+count-1``) with ``graph``'s input shapes."""
    per_input = {spec.name: make_input(model.recipes[spec.name], spec, count, offset) for spec in graph.inputs}
    return [{name: values[i] for name, values in per_input.items()} for i in range(count)]


def make_input(recipe: InputRecipe, spec: TensorSpec, count: int, offset: int) -> list[np.ndarray]:
    """``count`` arrays of ``spec``'s shape and dtype made as ``recipe`` says."""
    if recipe.kind in ("image", "document"):
        return _images(recipe, spec, count, offset)
    if recipe.kind == "ones":
        return [np.ones(spec.shape, dtype=spec.dtype) for _ in range(count)]
    if recipe.kind in BUNDLED_KINDS:
        return _bundled(recipe.kind, spec, count, offset)
    out = []
    for index in range(offset, offset + count):
        rng = np.random.default_rng(1000 + index)
        if recipe.kind == "integers":
            value = rng.integers(int(recipe.low), int(recipe.high), size=spec.shape)
        elif recipe.kind == "uniform":
            value = rng.uniform(recipe.low, recipe.high, size=spec.shape)
        elif recipe.kind == "normal":
            value = rng.normal(0.0, recipe.gain, size=spec.shape)
        elif recipe.kind == "tones":
            value = recipe.gain * _tone(rng, spec.shape, recipe.low, recipe.high, recipe.sample_rate)
        else:
            raise ValueError(f"unknown input recipe kind {recipe.kind!r}")
        out.append(value.astype(spec.dtype))
    return out


def _bundled(kind: str, spec: TensorSpec, count: int, offset: int) -> list[np.ndarray]:
    arrays = bundled_arrays(kind)
    if spec.name not in arrays:
        raise ValueError(f"the bundled {kind} have no input {spec.name!r} (have {sorted(arrays)})")
    values = arrays[spec.name]
    if values.shape[1:] != spec.shape:
        raise ValueError(f"the bundled {kind} give {spec.name!r} the shape {values.shape[1:]}, "
                         f"not {spec.shape}")
    if offset + count > len(values):
        raise ValueError(f"the bundled {kind} hold {len(values)} samples, not {offset + count}")
    return [values[i].astype(spec.dtype) for i in range(offset, offset + count)]


def _tone(rng: np.random.Generator, shape: tuple[int, ...], low_hz: float, high_hz: float,
          sample_rate: int = 16000) -> np.ndarray:
    """A harmonic tone along the time axis, zero mean and unit variance (see ``tones``)."""
    axis = _time_axis(shape)
    f0 = low_hz * (high_hz / low_hz) ** rng.uniform()
    t = np.arange(shape[axis]) / sample_rate + rng.uniform()
    harmonics = int(rng.integers(1, 9))
    wave = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
               for k in range(1, harmonics + 1))
    wave = wave + rng.normal(0.0, 0.05, size=wave.shape)
    wave = (wave - wave.mean()) / wave.std()
    along = [1] * len(shape)
    along[axis] = shape[axis]
    return np.broadcast_to(wave.reshape(along), shape).copy()


def _time_axis(shape: tuple[int, ...]) -> int:
    """The last axis longer than one sample: a frame of audio has no zero-variance tone."""
    longer = [axis for axis, size in enumerate(shape) if size > 1]
    if not longer:
        raise ValueError(f"a tones input needs an axis of more than one sample, not the shape {shape}")
    return longer[-1]


def _images(recipe: InputRecipe, spec: TensorSpec, count: int, offset: int) -> list[np.ndarray]:
    from tvm_mpq.data.images import sample_documents, sample_images

    nhwc = recipe.layout == "NHWC"
    height, width = (spec.shape[1], spec.shape[2]) if nhwc else (spec.shape[2], spec.shape[3])
    sample = sample_documents if recipe.kind == "document" else sample_images
    batch = spec.shape[0]
    photos = sample(recipe.skip + (offset + count) * batch, (height, width))[recipe.skip + offset * batch:]
    mean = np.asarray(recipe.mean, np.float32)
    std = np.asarray(recipe.std, np.float32)
    values = []
    for photo in photos:
        if recipe.channels == "gray":
            photo = photo.mean(axis=2, keepdims=True)
        elif recipe.channels == "BGR":
            photo = photo[:, :, ::-1]
        value = (photo * recipe.scale - mean) / std  # HxWxC
        values.append(value if nhwc else value.transpose(2, 0, 1))
    return [np.ascontiguousarray(np.stack(values[i * batch:(i + 1) * batch]), dtype=np.float32).reshape(spec.shape)
            for i in range(count)]
