"""Activation-range observers, registered by name (like onnxruntime's calibrators).

An observer sees every batch of one tensor (``update``) and then proposes the range
``(lo, hi)`` to quantize it with at a given bit-width (``range``). Add one in one file:
subclass :class:`Observer`, set ``name``, decorate with :func:`register_observer`.

Registered: ``minmax`` (running min/max), and on a shared streaming histogram
(:class:`HistogramCollector`, 2048 bins, memory bounded): ``percentile`` (default 99.99),
``mse`` (the range minimizing the expected fake-quant MSE of the activation quantizer) and
``entropy`` (TensorRT-style KL calibration). Every range lies within the observed
``[min, max]``; everything is deterministic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import math

import numpy as np

from tvm_mpq.errors import MpqError
from tvm_mpq.registry import Registry
from tvm_mpq.quantization.quantizers import act_qparams

_OBSERVERS: Registry["Observer"] = Registry("observer")
register_observer = _OBSERVERS.register


def observer_names() -> list[str]:
    return sorted(_OBSERVERS.names())


def make_observer(name: str, **kwargs) -> "Observer":
    """A fresh observer by registered name; ``kwargs`` go to its constructor."""
    return _OBSERVERS.make(name, **kwargs)


class Observer(ABC):
    """Collects statistics of one tensor over the calibration set."""

    name: ClassVar[str]

    @abstractmethod
    def update(self, x: np.ndarray) -> None:
        """Add one batch of the observed tensor."""

    @abstractmethod
    def range(self, bits: int) -> tuple[float, float]:
        """The (lo, hi) range to quantize with at ``bits`` bits."""


@register_observer
class MinMaxObserver(Observer):
    """The running minimum and maximum."""

    name = "minmax"

    def __init__(self) -> None:
        self.lo = np.inf
        self.hi = -np.inf

    def update(self, x: np.ndarray) -> None:
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))

    def range(self, bits: int) -> tuple[float, float]:
        if not np.isfinite(self.lo):
            raise ValueError("observer saw no data")
        return self.lo, self.hi


# --------------------------------------------------------------------------------------------
# Histogram-based observers
# --------------------------------------------------------------------------------------------


class HistogramCollector:
    """A streaming histogram with a fixed number of bins over a range that grows.

    The first batch (with a non-zero spread) sets the range to exactly ``[min, max]``. A later
    batch that falls outside the current range widens it: the new bin width is an integer
    multiple ``k`` of the old one and the new edges lie on the old grid, so every old bin falls
    into exactly one new bin and re-binning is an exact sum of ``k`` neighbours (onnxruntime's
    ``HistogramCollector.merge_histogram`` instead grows the number of bins; here memory stays
    at ``num_bins`` counters). The spare bins of the widened range go to the side that grew.
    Non-finite values are ignored. Counts are int64; everything is deterministic.
    """

    def __init__(self, num_bins: int = 2048) -> None:
        if num_bins < 2:
            raise MpqError(f"histogram needs at least 2 bins, got {num_bins}")
        self.num_bins = int(num_bins)
        self.hist = np.zeros(self.num_bins, dtype=np.int64)
        self.left = 0.0          # left edge of bin 0
        self.width = 0.0         # bin width; 0 while all values seen are equal (point mass)
        self.data_min = math.inf
        self.data_max = -math.inf
        self.count = 0
        self.zeros = 0           # values exactly 0 (e.g. ReLU's dead half), part of the histogram

    # ---- accessors -------------------------------------------------------------------------
    @property
    def edges(self) -> np.ndarray:
        """``num_bins + 1`` bin edges (float64)."""
        return self.left + self.width * np.arange(self.num_bins + 1, dtype=np.float64)

    @property
    def centers(self) -> np.ndarray:
        return self.left + self.width * (np.arange(self.num_bins, dtype=np.float64) + 0.5)

    @property
    def empty(self) -> bool:
        return self.count == 0

    # ---- update ----------------------------------------------------------------------------
    def _add(self, x: np.ndarray) -> None:
        idx = np.floor((x - self.left) / self.width).astype(np.int64)
        np.clip(idx, 0, self.num_bins - 1, out=idx)
        self.hist += np.bincount(idx, minlength=self.num_bins)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        x = x[np.isfinite(x)]
        if x.size == 0:
            return
        xmin, xmax = float(x.min()), float(x.max())
        self.zeros += int(np.count_nonzero(x == 0))
        if self.count == 0:
            self.left, self.width = xmin, (xmax - xmin) / self.num_bins
            self.data_min, self.data_max = xmin, xmax
            if self.width > 0:
                self._add(x)
            else:
                self.hist[0] = x.size
            self.count = int(x.size)
            return

        if self.width == 0.0:  # so far a point mass at self.left
            point, npoint = self.left, self.count
            lo, hi = min(point, xmin), max(point, xmax)
            if hi > lo:
                self.hist[:] = 0
                self.left, self.width = lo, (hi - lo) / self.num_bins
                self._add(np.array([point]))
                self.hist *= npoint  # the single bin holding the point gets npoint counts
                self._add(x)
            else:
                self.hist[0] += x.size
        else:
            self._grow(xmin, xmax)
            self._add(x)
        self.data_min, self.data_max = min(self.data_min, xmin), max(self.data_max, xmax)
        self.count += int(x.size)

    def _grow(self, xmin: float, xmax: float) -> None:
        n, w, left = self.num_bins, self.width, self.left
        right = left + n * w
        j = int(math.ceil((left - xmin) / w)) if xmin < left else 0   # old bins needed on the left
        r = int(math.ceil((xmax - right) / w)) if xmax > right else 0  # ... and on the right
        if j == 0 and r == 0:
            return
        need = n + j + r
        k = -(-need // n)  # new width in old bins
        slack = n * k - need
        if j > 0 and r > 0:
            j += slack // 2
        elif j > 0:
            j += slack
        new_idx = (np.arange(n, dtype=np.int64) + j) // k
        self.hist = np.bincount(new_idx, weights=self.hist, minlength=n).astype(np.int64)
        self.left, self.width = left - j * w, k * w

    # ---- statistics ------------------------------------------------------------------------
    def zero_bin(self) -> int | None:
        """The bin holding the value 0, or None when 0 is outside the histogram."""
        if self.width == 0.0 or not self.left <= 0.0 <= self.left + self.num_bins * self.width:
            return None
        return int(min(math.floor(-self.left / self.width), self.num_bins - 1))

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0..1), linear within a bin, clipped to the observed min/max."""
        if self.width == 0.0:
            return self.data_min
        cum = np.cumsum(self.hist)
        target = q * cum[-1]
        b = int(np.searchsorted(cum, target, side="left"))
        b = min(b, self.num_bins - 1)
        before = cum[b - 1] if b > 0 else 0
        t, n = target - before, self.hist[b]
        z = min(self.zeros, int(n)) if b == self.zero_bin() else 0
        if z:  # the bin holds a point mass at exactly 0, the rest is spread uniformly
            rest, f0 = n - z, -self.left / self.width - b
            if rest > 0 and t <= rest * f0:
                frac = t / rest
            elif rest == 0 or t <= rest * f0 + z:
                frac = f0
            else:
                frac = (t - z) / rest
        else:
            frac = t / n if n > 0 else 0.0
        value = self.left + self.width * (b + frac)
        return float(np.clip(value, self.data_min, self.data_max))


class _HistogramObserver(Observer):
    """Base of the histogram observers: collects, caches ``range(bits)`` until the next update."""

    def __init__(self, num_bins: int = 2048) -> None:
        self.hist = HistogramCollector(num_bins)
        self._cache: dict[int, tuple[float, float]] = {}

    def update(self, x: np.ndarray) -> None:
        self.hist.update(x)
        self._cache.clear()

    def range(self, bits: int) -> tuple[float, float]:
        if self.hist.empty:
            raise ValueError("observer saw no data")
        if int(bits) < 1:
            raise MpqError(f"activation bits must be >= 1, got {bits}")
        bits = int(bits)
        if bits not in self._cache:
            h = self.hist
            if h.width == 0.0 or h.data_min == h.data_max:
                lo, hi = h.data_min, h.data_max
            else:
                lo, hi = self._compute(bits)
            lo = float(np.clip(lo, h.data_min, h.data_max))
            hi = float(np.clip(hi, h.data_min, h.data_max))
            self._cache[bits] = (min(lo, hi), max(lo, hi))
        return self._cache[bits]

    @abstractmethod
    def _compute(self, bits: int) -> tuple[float, float]:
        """The range from a histogram with a non-zero spread."""


@register_observer
class PercentileObserver(_HistogramObserver):
    """``lo``/``hi`` = the ``(100 - p)``-th and ``p``-th percentiles of all values seen.

    Computed from the streaming histogram (linear interpolation inside a bin), so exact to
    within one bin width. Independent of ``bits``.
    """

    name = "percentile"

    def __init__(self, percentile: float = 99.99, num_bins: int = 2048) -> None:
        super().__init__(num_bins)
        if not 50.0 <= float(percentile) <= 100.0:
            raise MpqError(f"percentile must be in [50, 100], got {percentile}")
        self.percentile = float(percentile)

    def _compute(self, bits: int) -> tuple[float, float]:
        p = self.percentile / 100.0
        return self.hist.quantile(1.0 - p), self.hist.quantile(p)


def _sq_err_antiderivative(u: np.ndarray, qmax: int) -> np.ndarray:
    """Antiderivative of ``e(u) = (u - clip(round(u), 0, qmax))^2`` (``u`` in code units).

    Inside ``[-1/2, qmax + 1/2]`` this is the rounding sawtooth (mean 1/12 per code); outside
    it is the clipping error against code 0 / ``qmax``. ``A(-1/2) = 0``.
    """
    below = (u**3 + 0.125) / 3.0
    v = u + 0.5
    fl = np.floor(v)
    t = v - fl - 0.5
    inside = fl / 12.0 + (t**3 + 0.125) / 3.0
    above = (qmax + 1) / 12.0 + ((u - qmax) ** 3 - 0.125) / 3.0
    return np.where(u < -0.5, below, np.where(u > qmax + 0.5, above, inside))


def expected_quant_mse(edges: np.ndarray, counts: np.ndarray, lo: float, hi: float,
                       bits: int) -> float:
    """Mean squared fake-quant error of histogram data for the activation quantizer of [lo, hi].

    The qparams are :func:`~tvm_mpq.quantization.quantizers.act_qparams` (range widened to
    contain 0, float32 scale, rounded zero point); values are taken uniform inside each bin and
    the error ``(x - dequant(quant(x)))^2`` is integrated exactly over each bin, so it holds both
    the rounding error and the clipping error.
    """
    edges = np.asarray(edges, dtype=np.float64)
    return float(_expected_quant_mse_batch(edges[:-1], edges[1:], np.asarray(counts, np.float64),
                                           np.array([lo]), np.array([hi]), bits)[0])


def _expected_quant_mse_batch(a: np.ndarray, b: np.ndarray, counts: np.ndarray, los: np.ndarray,
                              his: np.ndarray, bits: int, chunk: int = 256) -> np.ndarray:
    """:func:`expected_quant_mse` for many candidate ranges; bins given by edges ``a < b``."""
    qmax = 2**bits - 1
    out = np.empty(los.size)
    for s in range(0, los.size, chunk):
        qps = [act_qparams(lo, hi, bits) for lo, hi in zip(los[s:s + chunk], his[s:s + chunk])]
        scale = np.array([qp.scale for qp in qps], dtype=np.float64)[:, None]
        zp = np.array([qp.zero_point for qp in qps], dtype=np.float64)[:, None]
        ua, ub = a[None] / scale + zp, b[None] / scale + zp
        integral = _sq_err_antiderivative(ub, qmax) - _sq_err_antiderivative(ua, qmax)
        out[s:s + chunk] = (scale**2 * integral / (ub - ua) * counts[None]).sum(axis=1)
    return out / counts.sum()


@register_observer
class MSEObserver(_HistogramObserver):
    """The clipping range minimizing the expected quantization MSE at ``bits``.

    Candidates shrink ``lo`` and ``hi`` towards 0 (only the sides with data of that sign) by
    factors on a geometric grid from 1 down to 2^-10 (48 steps, ~14% apart), then twice on a
    9-point linear grid around the best pair. Each candidate is scored by
    :func:`expected_quant_mse` on the histogram: the same asymmetric quantizer as
    ``quantizers.act_qparams``, clipping + rounding error. Ties go to the wider range.
    """

    name = "mse"
    _COARSE = np.geomspace(1.0, 2.0**-10, 48)  # widest first

    def _compute(self, bits: int) -> tuple[float, float]:
        h = self.hist
        nz = h.hist > 0
        edges = h.edges
        a, b, counts = edges[:-1][nz], edges[1:][nz], h.hist[nz].astype(np.float64)
        two_lo, two_hi = h.data_min < 0, h.data_max > 0  # sides that can shrink
        lo_f = self._COARSE if two_lo else np.ones(1)
        hi_f = self._COARSE if two_hi else np.ones(1)
        step_lo = step_hi = None
        best_lo, best_hi = 1.0, 1.0
        for _ in range(3):
            fl, fh = np.meshgrid(lo_f, hi_f, indexing="ij")
            los, his = h.data_min * fl.ravel(), h.data_max * fh.ravel()
            keep = (his >= h.data_min) & (los <= h.data_max)  # inside the data, lo <= hi
            if not keep.any():
                break
            err = _expected_quant_mse_batch(a, b, counts, los[keep], his[keep], bits)
            i = int(np.argmin(err))  # candidates are widest-first: ties keep the wider range
            best_lo, best_hi = fl.ravel()[keep][i], fh.ravel()[keep][i]
            # next: a finer linear grid spanning one step of the current grid each way
            step_lo = best_lo * (1 - self._COARSE[1]) if step_lo is None else step_lo / 4
            step_hi = best_hi * (1 - self._COARSE[1]) if step_hi is None else step_hi / 4
            if two_lo:
                lo_f = np.clip(np.linspace(best_lo + step_lo, best_lo - step_lo, 9), 1e-9, 1.0)
            if two_hi:
                hi_f = np.clip(np.linspace(best_hi + step_hi, best_hi - step_hi, 9), 1e-9, 1.0)
        return h.data_min * best_lo, h.data_max * best_hi


@register_observer
class EntropyObserver(_HistogramObserver):
    """KL-divergence calibration (TensorRT style). onnxruntime's entropy calibrator runs the same
    search on a histogram symmetric about 0; on two-signed, symmetric data its threshold and
    ours agree within 20% (``tests/test_observers.py``: it puts the bins ``bins // levels``
    leaves over all in the last level, we spread them). On one-signed data it spends half its
    levels on the empty side; this observer fits the levels to the asymmetric quantizer.

    For a candidate clipping range covering histogram bins ``[i0, i1)``: the reference ``P`` is
    those bins with the mass outside folded into the end bins; the candidate ``Q`` is the
    unfolded bins merged into as many quantization levels as the activation quantizer puts
    in that span (``2^bits`` over ``[min(lo, 0), max(hi, 0)]``) and expanded back uniformly over
    the bins where ``P`` is non-zero (empty levels smoothed to 1e-12). The range minimizing
    ``KL(P || Q)`` wins; ties go to the wider range. As in TensorRT, a candidate spans at least
    ``2^bits`` histogram bins (one bin per level; with 2048 bins and 8 bits: at least 1/8 of the
    data's extent); the full range is always a candidate. Values exactly 0 (ReLU's dead half)
    are left out of both ``P`` and ``Q``: the zero point represents them exactly, and their
    spike would otherwise dominate the first level and pull the threshold down.

    * one-signed data (all ``>= 0``, e.g. post-ReLU): ``lo = min`` and ``hi`` is searched over
      the bin edges (``all <= 0``: mirrored, ``hi = max`` and ``lo`` searched);
    * two-signed data: a symmetric threshold ``t`` is searched, and the range is
      ``[max(-t, min), min(t, max)]`` — symmetric until it reaches the data's extent on the
      shorter side, so the asymmetric quantizer never wastes levels beyond the data.
    """

    name = "entropy"
    _MAX_CANDIDATES = 1024

    def _kl(self, hist: np.ndarray, i0: int, i1: int, levels: int) -> float:
        sliced = hist[i0:i1].astype(np.float64)
        p = sliced.copy()
        p[0] += hist[:i0].sum()
        p[-1] += hist[i1:].sum()
        n = p.size
        level = (np.arange(n) * levels) // n
        nonzero = p > 0
        level_sum = np.bincount(level, weights=sliced, minlength=levels)
        level_nz = np.bincount(level, weights=nonzero.astype(np.float64), minlength=levels)
        q = np.where(nonzero, level_sum[level] / np.maximum(level_nz[level], 1.0), 0.0)
        p = p[nonzero] / p.sum()
        q = q[nonzero]
        qsum = q.sum()
        if qsum <= 0:
            return math.inf
        q = np.maximum(q / qsum, 1e-12)  # TensorRT-style smoothing of empty levels
        return float(np.sum(p * np.log(p / q)))

    def _compute(self, bits: int) -> tuple[float, float]:
        h = self.hist
        nb, edges = h.num_bins, h.edges
        nlev = 2**bits
        lo_bin = int(np.clip(np.floor((h.data_min - h.left) / h.width), 0, nb - 1))
        hi_bin = int(np.clip(np.ceil((h.data_max - h.left) / h.width), 1, nb))  # exclusive
        if h.data_min >= 0:
            pairs = [(lo_bin, i1) for i1 in range(hi_bin, lo_bin, -1)]
        elif h.data_max <= 0:
            pairs = [(i0, hi_bin) for i0 in range(lo_bin, hi_bin)]
        else:
            zero = -h.left / h.width  # fractional bin position of 0
            reach = max(zero - lo_bin, hi_bin - zero)
            pairs = []
            for r in np.arange(math.ceil(reach), 0, -1):
                i0 = max(lo_bin, int(math.floor(zero - r)))
                i1 = min(hi_bin, int(math.ceil(zero + r)))
                if not pairs or pairs[-1] != (i0, i1):
                    pairs.append((i0, i1))

        def levels_in(i0: int, i1: int) -> int:
            a, b = edges[i0], edges[i1]
            grid = max(b, 0.0) - min(a, 0.0)
            return max(1, int(round(nlev * (b - a) / grid))) if grid > 0 else 1

        full = pairs[0]
        need = min(nlev, nb)  # TensorRT: at least one histogram bin per quantization level
        cands = [pq for pq in pairs if pq[1] - pq[0] >= max(need, levels_in(*pq))]
        if len(cands) > self._MAX_CANDIDATES:  # thin out evenly, keep widest-first order
            pick = np.linspace(0, len(cands) - 1, self._MAX_CANDIDATES).round().astype(int)
            cands = [cands[i] for i in np.unique(pick)]
        if not cands or cands[0] != full:
            # the full range with fewer bins than levels: every bin is its own level, KL 0
            cands.insert(0, full)
        # exact zeros are represented exactly (the zero point), in P and Q alike: leaving them
        # out scales the KL by a constant, but stops ReLU's spike at 0 from dominating level 0
        hist = h.hist.copy()
        zb = h.zero_bin()
        if zb is not None:
            hist[zb] -= min(h.zeros, int(hist[zb]))
        if hist.sum() == 0:
            return h.data_min, h.data_max
        kls = np.array([self._kl(hist, i0, i1, levels_in(i0, i1)) if i1 - i0 >= levels_in(i0, i1)
                        else 0.0 for i0, i1 in cands])
        i0, i1 = cands[int(np.argmin(kls))]
        lo = h.data_min if h.data_min >= 0 else edges[i0]
        hi = h.data_max if h.data_max <= 0 else edges[i1]
        return lo, hi
