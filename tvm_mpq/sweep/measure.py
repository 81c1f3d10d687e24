"""Run and time the built points on the devices, and write what they measure into the report.

The points are dealt out over the devices round-robin (one device unless a tracker pool gives
more); each device runs its points' evaluation samples and then times them interleaved with
the fp32 baseline (:mod:`~tvm_mpq.sweep.interleave`). The baseline is the rate-0 point (every
layer fp32) where there is one, else an fp32 build of the model; a device whose points do not
include the rate-0 point times the same library as its own baseline, so every ratio to fp32 is
taken within one round on one device.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvm_mpq.evaluation.fidelity import Reference, figures
from tvm_mpq.sweep.builds import BuiltPoint
from tvm_mpq.sweep.interleave import RoundTimes, SampleOutputs, TimedLibrary, time_interleaved
from tvm_mpq.sweep.plan import TimingOptions
from tvm_mpq.sweep.remote import Execution
from tvm_mpq.sweep.rounds import (latency_over_rounds, monotonicity, ratio_summary, ratios_within_rounds, round_latency,
                                  stability)

BASELINE_KEY = "fp32-baseline"
Log = Callable[[str], None]


@dataclass(frozen=True)
class Measurement:
    """What the devices need: the samples and fp32 reference, the target (its device and ELF
    check), the model's input order, the timing options and the RPC request timeout."""

    task: str
    reference: Reference
    target: Any
    input_names: Sequence[str]
    timing: TimingOptions
    request_timeout: float


def deal(points: Sequence[BuiltPoint], n_devices: int) -> list[list[BuiltPoint]]:
    """Point ``i`` to device ``i mod n_devices`` (every device gets at least one when
    ``n_devices <= len(points)``)."""
    return [list(points[d::n_devices]) for d in range(n_devices)]


def measure_points(execution: Execution, built: Sequence[BuiltPoint], baseline: Path, baseline_label: str,
                   setup: Measurement, report: dict, save: Callable[[], None], log: Log) -> None:
    """Run and time every built point (see the module docstring); fills the points' ``fidelity``,
    ``accuracy``, ``server``, ``latency_ms`` and ``ratio_to_fp32``, and the report's
    ``devices``, ``stability`` and ``monotonicity``. ``baseline`` is the fp32 baseline's library
    (``baseline_label`` names it in the report); ``save`` is called after each step."""
    sessions = execution.open_devices(len(built), setup.request_timeout, log)
    groups = deal(built, len(sessions))
    fp32_ms: dict[str, list[float]] = {}
    report["devices"] = []
    while sessions:
        session = sessions.pop(0)
        group = groups[len(report["devices"])]
        device = _time_device(session, group, baseline, setup, report, save, log)
        device["baseline"] = baseline_label
        del session
        gc.collect()
        fp32_ms[device["server"]] = device.pop("fp32_ms")
        report["devices"].append(device)
        report["rpc"] = execution.to_json()
    report["stability"] = stability(fp32_ms)
    report["monotonicity"] = monotonicity(report["points"])
    save()


def _time_device(session: Any, group: list[BuiltPoint], baseline: Path, setup: Measurement, report: dict,
                 save: Callable[[], None], log: Log) -> dict[str, Any]:
    rows = {str(p.row): report["points"][p.row] for p in group}
    labels = {str(p.row): p.label for p in group}
    own = next((p for p in group if p.all_fp32), None)
    base_key = str(own.row) if own is not None else BASELINE_KEY
    libraries = [] if own is not None else [TimedLibrary(BASELINE_KEY, baseline, runs_samples=False)]
    libraries += [TimedLibrary(str(p.row), p.library, runs_samples=True) for p in group]
    labels[BASELINE_KEY] = "fp32 baseline"
    per_round: dict[str, list[Any]] = {lib.key: [] for lib in libraries}
    start = time.perf_counter()
    log(f"{session.address}: {len(group)} point(s) + fp32 baseline: running {len(setup.reference.samples.feeds)} "
        f"samples each, then {setup.timing.rounds} interleaved round(s)")
    for event in time_interleaved(session, libraries, setup.reference.samples.feeds, setup.target,
                                  setup.input_names, setup.timing):
        if isinstance(event, SampleOutputs):
            row = rows[event.key]
            row.update(figures(setup.task, event.outputs, setup.reference))
            row["server"] = event.server
            log(f"[{int(event.key) + 1}] {labels[event.key]}: {event.server}: "
                + ", ".join(f"{k} {v:.4g}" for k, v in {**row["fidelity"], **row["accuracy"]}.items()))
        elif isinstance(event, RoundTimes):
            for key, stats in event.stats.items():
                per_round[key].append(stats)
            base_ms = [round_latency(s) for s in per_round[base_key]]
            for key, row in rows.items():
                row["latency_ms"] = latency_over_rounds(per_round[key])
                row["ratio_to_fp32"] = ratio_summary(ratios_within_rounds([round_latency(s) for s in per_round[key]],
                                                                          base_ms))
            log(f"{event.server} round {event.index + 1}/{setup.timing.rounds}: fp32 {base_ms[-1]:.3f} ms; "
                + "; ".join(f"{labels[k]} {rows[k]['ratio_to_fp32']['per_round'][-1]:.3f}x" for k in rows
                            if k != base_key))
        save()
    return {"server": session.address, "points": [p.row for p in group], "baseline_among_points": own is not None,
            "seconds": time.perf_counter() - start, "fp32_ms": [round_latency(s) for s in per_round[base_key]]}
