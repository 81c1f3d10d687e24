"""Time one device's points interleaved, in one RPC session.

A machine's speed drifts (other jobs, clocks, caches): a sweep that timed its points one after
the other, minutes apart, measured the drift along with the points. Here every library of the
device is uploaded and loaded once, each point runs the evaluation samples once (their outputs
give the fidelity), and then ``rounds`` round-robin passes time every library, the fp32
baseline included, one ``time_evaluator`` measurement each. Round ``r`` starts at library
``r mod n``, so no library is always first or last after a pause. Within a round the points are
seconds apart, so their ratio to the baseline of the same round cancels most of the drift
(:mod:`~tvm_mpq.sweep.rounds`).

:func:`time_interleaved` is a generator of :class:`SampleOutputs` (one per point) and
:class:`RoundTimes` (one per round), so that the caller can write a report as they arrive.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvm_mpq.sweep.plan import TimingOptions
from tvm_mpq.types import Feed, Outputs


@dataclass(frozen=True)
class TimedLibrary:
    """A library a device times: ``key`` names it for the caller; ``runs_samples``: also run the
    evaluation samples (the points; not a baseline that is not a point of this device)."""

    key: str
    library: Path
    runs_samples: bool


@dataclass(frozen=True)
class SampleOutputs:
    """One library's outputs on every evaluation sample, from ``server``."""

    key: str
    outputs: Outputs
    server: str


@dataclass(frozen=True)
class RoundTimes:
    """Round ``index`` (from 0) of ``server``: a ``LatencyStats`` per library key, in the order timed."""

    index: int
    stats: dict[str, Any]
    server: str


def round_order(keys: Sequence[str], index: int) -> list[str]:
    """The order of round ``index``: ``keys`` rotated to start at ``index mod len(keys)``."""
    shift = index % len(keys) if keys else 0
    return [*keys[shift:], *keys[:shift]]


def time_interleaved(session: Any, libraries: Sequence[TimedLibrary], feeds: Sequence[Feed], target: Any,
                     input_names: Sequence[str], timing: TimingOptions) -> Iterator[SampleOutputs | RoundTimes]:
    """Load every library on ``session`` (a ``RemoteSession``), run the samples of those that run
    them, then time all of them in ``timing.rounds`` round-robin rounds (see the module docstring).

    The session's models are released when the generator finishes or is closed.
    """
    from targets.rpc import RemoteModel

    server = session.address
    models: dict[str, Any] = {}
    try:
        for lib in libraries:
            models[lib.key] = RemoteModel(session, lib.library, target, input_names=input_names)
        for lib in libraries:
            if lib.runs_samples:
                yield SampleOutputs(lib.key, [models[lib.key].run(feed) for feed in feeds], server)
        keys = [lib.key for lib in libraries]
        for index in range(timing.rounds):
            stats = {key: models[key].time(feeds[0], repeat=timing.repeat, min_repeat_ms=timing.min_repeat_ms,
                                           max_seconds=timing.max_seconds, min_repeat=timing.min_repeat)
                     for key in round_order(keys, index)}
            yield RoundTimes(index, stats, server)
    finally:
        for model in models.values():
            model.close()
        models.clear()
        gc.collect()
