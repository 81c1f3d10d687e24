"""What a sweep measures: the options, the rates and methods, and the points they expand to.

Ranking methods (``quantunev2``, ``inorder``, ``weight-sqnr``, ``top1``) give one point per
requested BOPs reduction rate, allocated from ONE analysis per method. Bit-width methods
(``mixquant``, ``pandey``) choose their own per-layer bit-widths (their budgets are QEMs or
BOPs / SQNR budgets, not rates): each of their assignments the integer kernels can run is one
point, whose ``requested_rate`` is the rate it achieves and whose ``allocation`` names it
(``qem=4``); ``--rates`` does not apply to them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvm_mpq.errors import MpqError
from tvm_mpq.ptq.options import PtqOptions
from tvm_mpq.types import SOURCE_TO_FOLDED

DEFAULT_RATES = (0.0, 25.0, 50.0, 75.0, 100.0)
BITWIDTH_METHODS = ("mixquant", "pandey")
"""Methods whose analysis returns their own bit-width assignments (``SensitivityReport.allocations``)."""


@dataclass(frozen=True)
class TimingOptions:
    """How the points are timed: ``rounds`` round-robin passes over every point of a device
    (the fp32 baseline included; :mod:`~tvm_mpq.sweep.interleave`), and in each pass one
    ``time_evaluator`` measurement per point (see ``RemoteModel.time``): up to ``repeat``
    repeats of at least ``min_repeat_ms`` each, fewer (never under ``min_repeat``) when they
    would take longer than ``max_seconds``."""

    rounds: int = 10
    repeat: int = 3
    min_repeat_ms: float = 100.0
    max_seconds: float = 2.0
    min_repeat: int = 3

    def to_json(self) -> dict[str, float | int]:
        """The options as a JSON object (for the report)."""
        return {"rounds": self.rounds, "repeat": self.repeat, "min_repeat_ms": self.min_repeat_ms,
                "max_seconds": self.max_seconds, "min_repeat": self.min_repeat}


NATIVE_TIMING = TimingOptions()
"""Native CPUs / GPUs: 10 rounds; per round and point 3 repeats of >= 100 ms, at most 2 s. Many
short rounds rather than a few long ones: on a shared 2-core VM the speed changes within
seconds, and the median over rounds of the within-round ratios is what averages it out."""
EMULATED_TIMING = TimingOptions(rounds=3, repeat=3, min_repeat_ms=100.0, max_seconds=35.0, min_repeat=1)
"""QEMU: 3 rounds; a model that takes ~11 s per emulated run gets 3 runs per round (the rounds
give the spread, so a round may be a single run)."""
NATIVE_EVAL_SIZE = 32
EMULATED_EVAL_SIZE = 8
"""Default evaluation samples (each is one remote run; under QEMU a large model takes ~11 s a run)."""


@dataclass
class SweepOptions:
    """Everything ``tvm-mpq sweep`` was asked for (the CLI's options, validated)."""

    model: str
    target: str
    rates: list[float] = field(default_factory=lambda: list(DEFAULT_RATES))
    methods: list[str] = field(default_factory=lambda: ["quantunev2"])
    rpc: str | None = None
    tracker: str | None = None
    key: str | None = None
    eval_size: int | None = None
    """None: :data:`NATIVE_EVAL_SIZE`, or :data:`EMULATED_EVAL_SIZE` under QEMU."""
    rounds: int | None = None
    repeat: int | None = None
    max_seconds: float | None = None
    min_repeat_ms: float | None = None
    """Timing overrides (per round and point, except ``rounds``); None: from
    :data:`NATIVE_TIMING`, or :data:`EMULATED_TIMING` under QEMU."""
    input_shape: list[str] | None = None
    calib: str | None = None
    calib_size: int = 16
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    observer: str = "minmax"
    ptq: PtqOptions = field(default_factory=PtqOptions)
    """Cross-layer equalization / bias correction (``--equalize``, ``--bias-correction``)."""
    cache_dir: Path | None = None
    g: float = 2.0
    stage: str = SOURCE_TO_FOLDED
    keep_libs: Path | None = None
    setup: bool = True
    """aarch64 without --rpc/--tracker: set up the toolchain and sysroot when missing (cached)."""
    request_timeout: float = 600.0
    tuning: Any = None
    """:class:`~tvm_mpq.compiler.build.TuningOptions` (None: database + kernel rules, no tuning)."""


@dataclass(frozen=True)
class PointSpec:
    """One point to build and measure: a method and the rate asked of it (ranking methods), or
    one of a bit-width method's own assignments (``allocation`` label, rate filled in later)."""

    method: str
    requested_rate: float | None
    allocation: str | None = None

    @property
    def label(self) -> str:
        """``quantunev2 rate 50%`` / ``mixquant qem=4``: how progress lines name the point."""
        return f"{self.method} {self.allocation}" if self.allocation else f"{self.method} rate {self.requested_rate:g}%"


def resolve_timing(options: SweepOptions, emulated: bool) -> TimingOptions:
    """The timing of a sweep: the defaults for the device kind, with the options' overrides."""
    base = EMULATED_TIMING if emulated else NATIVE_TIMING
    repeat = options.repeat or base.repeat
    return TimingOptions(options.rounds or base.rounds, repeat,
                         base.min_repeat_ms if options.min_repeat_ms is None else options.min_repeat_ms,
                         options.max_seconds or base.max_seconds, min(base.min_repeat, repeat))


def parse_rates(text: str) -> list[float]:
    """``"0,25,50"`` -> ``[0.0, 25.0, 50.0]`` (each 0..100, no duplicates, order kept)."""
    rates: list[float] = []
    for part in text.split(","):
        part = part.strip().rstrip("%")
        try:
            rate = float(part)
        except ValueError:
            raise MpqError(f"--rates: '{part}' is not a number (give e.g. 0,25,50,75,100)") from None
        if not math.isfinite(rate) or not 0 <= rate <= 100:
            raise MpqError(f"--rates: {part} is outside 0..100 (percent BOPs reduction)")
        if rate in rates:
            raise MpqError(f"--rates: {part} is given twice")
        rates.append(rate)
    return rates


def parse_methods(text: str) -> list[str]:
    """``"quantunev2,inorder"`` -> names, each a registered sensitivity method."""
    from tvm_mpq.sensitivity import method_names

    known = method_names()
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise MpqError("--methods is empty")
    for m in methods:
        if m not in known:
            raise MpqError(f"--methods: unknown method '{m}' (have {', '.join(known)})")
    if len(set(methods)) != len(methods):
        raise MpqError(f"--methods: a method is given twice ({text})")
    return methods


def is_bitwidth_method(method: str) -> bool:
    """Whether ``method`` chooses bit-widths itself (its points are its own assignments)."""
    return method in BITWIDTH_METHODS


def rate_points(method: str, rates: list[float]) -> list[PointSpec]:
    """The points of a ranking method: one per rate."""
    return [PointSpec(method, rate) for rate in rates]
