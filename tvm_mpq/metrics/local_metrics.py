"""Streaming local metrics between a fp32 tensor ``x`` and its quantized version ``x_hat``.

Definitions (docs/design.md): ``SQNR_dB = 10 log10(sum x^2 / sum (x - x_hat)^2)``,
``MSE = mean (x - x_hat)^2``; also cosine similarity and the KL divergence between the value
histograms of ``x`` and ``x_hat``. Each metric accumulates over calibration batches
(``update``) and reports one number (``value``). Register a new one with
:func:`register_metric` (see ``tutorials/`` for an example).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from tvm_mpq.registry import Registry

SQNR_CAP_DB = 200.0
"""SQNR reported for an exact match (no error), so JSON stays finite."""

_METRICS: Registry["LocalMetric"] = Registry("metric")
register_metric = _METRICS.register
metric_names = _METRICS.names


def make_metric(name: str) -> "LocalMetric":
    return _METRICS.make(name)


def sqnr_db(x: np.ndarray, x_hat: np.ndarray) -> float:
    """One-shot SQNR in dB (capped at SQNR_CAP_DB for an exact match)."""
    m = SqnrMetric()
    m.update(x, x_hat)
    return m.value()


def mse(x: np.ndarray, x_hat: np.ndarray) -> float:
    m = MseMetric()
    m.update(x, x_hat)
    return m.value()


class LocalMetric(ABC):
    name: ClassVar[str]
    higher_is_better: ClassVar[bool]

    @abstractmethod
    def update(self, x: np.ndarray, x_hat: np.ndarray) -> None:
        """Add one batch: a layer's fp32 output ``x`` and its quantized version ``x_hat`` (the
        analysis passes both as float64, in the tensor's shape)."""

    @abstractmethod
    def value(self) -> float: ...


def as_float64(a: np.ndarray) -> np.ndarray:
    """``a`` as float64, its shape kept (no copy when it is float64 already): a caller feeding one
    pair to several metrics converts it once (the analysis hands every metric float64 tensors)."""
    return np.asarray(a, dtype=np.float64)


def _f64(a: np.ndarray) -> np.ndarray:
    return as_float64(a).ravel()


@register_metric
class SqnrMetric(LocalMetric):
    name = "sqnr_db"
    higher_is_better = True

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0

    def update(self, x: np.ndarray, x_hat: np.ndarray) -> None:
        x64 = _f64(x)
        e = x64 - _f64(x_hat)
        self.signal += float(x64 @ x64)
        self.noise += float(e @ e)

    def value(self) -> float:
        if self.noise == 0.0:
            return SQNR_CAP_DB
        if self.signal == 0.0:
            return -SQNR_CAP_DB
        return float(min(10.0 * np.log10(self.signal / self.noise), SQNR_CAP_DB))


@register_metric
class MseMetric(LocalMetric):
    name = "mse"
    higher_is_better = False

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, x: np.ndarray, x_hat: np.ndarray) -> None:
        e = _f64(x) - _f64(x_hat)
        self.total += float(e @ e)
        self.count += e.size

    def value(self) -> float:
        return self.total / max(self.count, 1)


@register_metric
class CosineMetric(LocalMetric):
    name = "cosine"
    higher_is_better = True

    def __init__(self) -> None:
        self.xy = self.xx = self.yy = 0.0

    def update(self, x: np.ndarray, x_hat: np.ndarray) -> None:
        a, b = _f64(x), _f64(x_hat)
        self.xy += float(a @ b)
        self.xx += float(a @ a)
        self.yy += float(b @ b)

    def value(self) -> float:
        if self.xx == 0.0 or self.yy == 0.0:
            return 1.0 if self.xx == self.yy else 0.0
        return self.xy / np.sqrt(self.xx * self.yy)


@register_metric
class KlMetric(LocalMetric):
    """KL(P || Q) of the value histograms of x (P) and x_hat (Q), 256 bins over the first
    batch's range of x (values outside are clipped into the edge bins), smoothed by 1e-10.
    The bins are equal, so ``np.histogram`` is given their count and range (its direct binning,
    the same counts as the edges it computes) instead of the edges (a sort of every batch)."""

    name = "kl"
    higher_is_better = False
    BINS = 256

    def __init__(self) -> None:
        self.edges: np.ndarray | None = None
        self.p = np.zeros(self.BINS)
        self.q = np.zeros(self.BINS)

    def update(self, x: np.ndarray, x_hat: np.ndarray) -> None:
        if self.edges is None:
            lo, hi = float(np.min(x)), float(np.max(x))
            self.edges = np.linspace(lo, hi if hi > lo else lo + 1.0, self.BINS + 1)
        lo, hi = self.edges[0], self.edges[-1]
        self.p += np.histogram(np.clip(x, lo, hi), self.BINS, (lo, hi))[0]
        self.q += np.histogram(np.clip(x_hat, lo, hi), self.BINS, (lo, hi))[0]

    def value(self) -> float:
        p = self.p / max(self.p.sum(), 1) + 1e-10
        q = self.q / max(self.q.sum(), 1) + 1e-10
        return float(np.sum(p * np.log(p / q)))
