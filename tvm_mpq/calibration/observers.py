"""Activation-range observers, registered by name (like onnxruntime's calibrators).

An observer sees every batch of one tensor (``update``) and then proposes the range
``(lo, hi)`` to quantize it with at a given bit-width (``range``). Add one in one file:
subclass :class:`Observer`, set ``name``, decorate with :func:`register_observer`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from tvm_mpq.errors import MpqError

_OBSERVERS: dict[str, type["Observer"]] = {}


def register_observer(cls: type["Observer"]) -> type["Observer"]:
    if cls.name in _OBSERVERS:
        raise ValueError(f"observer '{cls.name}' registered twice")
    _OBSERVERS[cls.name] = cls
    return cls


def observer_names() -> list[str]:
    return sorted(_OBSERVERS)


def make_observer(name: str) -> "Observer":
    if name not in _OBSERVERS:
        raise MpqError(f"unknown observer '{name}' (have {', '.join(observer_names())})")
    return _OBSERVERS[name]()


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
