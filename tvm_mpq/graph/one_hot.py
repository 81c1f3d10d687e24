"""One-hot rows: ``astype(equal(x, codes), float)`` with ``codes`` consecutive integers.

A model that embeds integer tokens by ``one_hot(x) @ W`` (``jax.nn.one_hot`` exported by tf2onnx
or jax2tf as ``Equal`` against a constant ``[1, 1, K]`` row of codes, ``Cast``, ``MatMul``;
magika's byte embedding: 2048 bytes x 257 codes x 64) multiplies a row of zeros and one 1 by
``W``: the product is row ``x - first`` of ``W`` (zeros where ``x`` is no code), exact in any
precision and no multiply-accumulate at all. The layer table does not list such a product as a
layer (nothing to decide: an int8 one would quantize a lookup), and
:mod:`relay_passes.one_hot_matmul_as_take` builds it as that row lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneHotCodes:
    """The codes a one-hot row compares against: ``first, first + 1, ..., first + depth - 1``."""

    first: int
    depth: int


def one_hot_codes(x_shape: tuple[int, ...] | None, x_dtype: str, codes: np.ndarray | None,
                  weight_shape: tuple[int, ...] | None) -> OneHotCodes | None:
    """The codes of ``matmul(astype(equal(x, codes)), w)`` when it is a one-hot row per element of
    ``x`` times a 2-D weight of one row per code, else ``None``.

    ``x``: an integer tensor whose last axis is 1 (one token per row); ``codes``: a constant
    whose axes are all 1 but the last, holding consecutive integers (each token matches at most
    one code, so each row has at most one 1)."""
    if x_shape is None or codes is None or not x_shape or x_shape[-1] != 1:
        return None
    if not (x_dtype.startswith("int") or x_dtype.startswith("uint")):
        return None
    if codes.ndim == 0 or codes.ndim > len(x_shape) or any(d != 1 for d in codes.shape[:-1]):
        return None
    row = codes.reshape(-1)
    if row.size < 2 or not np.issubdtype(row.dtype, np.integer) or weight_shape is None \
            or len(weight_shape) != 2 or weight_shape[0] != row.size:
        return None
    first = int(row[0])
    if not np.array_equal(row.astype(np.int64), np.arange(first, first + row.size, dtype=np.int64)):
        return None
    return OneHotCodes(first, int(row.size))


__all__ = ["OneHotCodes", "one_hot_codes"]
