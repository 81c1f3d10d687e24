"""Calibration and evaluation feeds for a corpus model, from its :class:`InputRecipe` s.

Image inputs are real photos, or real document images for models made for documents
(:mod:`tvm_mpq.data.images`); the others are synthetic, drawn from
a seeded generator in the input's range. ``feeds(model, graph, count, offset)`` returns
``count`` feeds starting at sample ``offset``: calibration takes ``[0, n)`` and evaluation the
samples after it, so the two never overlap.
"""

from __future__ import annotations

import numpy as np

from tvm_mpq.corpus.catalog import CorpusModel, InputRecipe
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
    out = []
    for index in range(offset, offset + count):
        rng = np.random.default_rng(1000 + index)
        if recipe.kind == "integers":
            value = rng.integers(int(recipe.low), int(recipe.high), size=spec.shape)
        elif recipe.kind == "uniform":
            value = rng.uniform(recipe.low, recipe.high, size=spec.shape)
        else:
            raise ValueError(f"unknown input recipe kind {recipe.kind!r}")
        out.append(value.astype(spec.dtype))
    return out


def _images(recipe: InputRecipe, spec: TensorSpec, count: int, offset: int) -> list[np.ndarray]:
    from tvm_mpq.data.images import sample_documents, sample_images

    nhwc = recipe.layout == "NHWC"
    height, width = (spec.shape[1], spec.shape[2]) if nhwc else (spec.shape[2], spec.shape[3])
    sample = sample_documents if recipe.kind == "document" else sample_images
    photos = sample(offset + count, (height, width))[offset:]
    mean = np.asarray(recipe.mean, np.float32)
    std = np.asarray(recipe.std, np.float32)
    out = []
    for photo in photos:
        if recipe.channels == "gray":
            photo = photo.mean(axis=2, keepdims=True)
        elif recipe.channels == "BGR":
            photo = photo[:, :, ::-1]
        value = (photo * recipe.scale - mean) / std  # HxWxC
        value = value[None] if nhwc else value.transpose(2, 0, 1)[None]
        out.append(np.ascontiguousarray(value, dtype=np.float32).reshape(spec.shape))
    return out
