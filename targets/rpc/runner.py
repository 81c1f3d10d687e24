"""Run an exported model over RPC: upload, load, build a Relax VM on the remote device, run, time.

::

    with RemoteModel(session, "model.so", target) as model:
        outputs = model.run(feed)                  # list of numpy arrays
        stats = model.time(feed)                   # LatencyStats(median_ms, p10_ms, p90_ms, ...)

The library's ELF machine is checked against the target and against the server's CPU before
the upload, so a library built for another target is a one-line error, not a remote crash.
"""

from __future__ import annotations

import gc
import math
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np

from tvm_mpq.errors import MpqError, last_line

from targets.elf import machine_name, read_elf_machine
from targets.rpc.session import remote_machine


@dataclass(frozen=True)
class LatencyStats:
    """``time_evaluator`` result: per-repeat mean latency statistics in milliseconds (``min_ms``:
    the fastest repeat)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    repeat: int
    number: int
    min_ms: float

    def to_json(self) -> dict[str, float | int]:
        """The report's ``latency_ms`` object (``median``, ``p10``, ``p90``) plus the rest."""
        d = asdict(self)
        return {"median": d.pop("median_ms"), "p10": d.pop("p10_ms"), "p90": d.pop("p90_ms"),
                "mean": d.pop("mean_ms"), "std": d.pop("std_ms"), "min": d.pop("min_ms"), **d}


def latency_stats(seconds: Sequence[float], number: int) -> LatencyStats:
    """Statistics of per-repeat mean times given in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p10, med, p90 = np.percentile(ms, [10, 50, 90])
    return LatencyStats(float(med), float(p10), float(p90), float(ms.mean()), float(ms.std()), len(ms), number,
                        float(ms.min()))


def check_library_for_server(path: str | Path, session: Any, target: Any = None) -> None:
    """MpqError if the library is not an ELF for ``target`` or for the server's CPU."""
    session = getattr(session, "rpc", session)
    machine = read_elf_machine(path)
    if target is not None and machine != target.elf_machine:
        raise MpqError(f"{Path(path).name} is built for {machine_name(machine)}, but target {target.name} "
                       f"runs {machine_name(target.elf_machine)} code")
    server = remote_machine(session)
    if server is not None and server != machine:
        raise MpqError(f"{Path(path).name} is built for {machine_name(machine)}, but the RPC server runs on "
                       f"{machine_name(server)}: build it for that server's target")


class RemoteModel:
    """An exported library loaded in an RPC session, with a Relax VM on the target's device.

    ``target``: a :class:`~targets.base.DeployTarget` (picks the device, checks the ELF); None
    runs on the remote CPU without the target check. ``input_names``: the order of ``main``'s
    parameters (``[s.name for s in graph.inputs]``); without it a feed dict's own order is used. ``close()`` (or leaving the ``with``
    block) drops every remote handle so the server's session can end.
    """

    def __init__(self, session: Any, library: str | Path, target: Any = None, device_index: int = 0,
                 input_names: Sequence[str] | None = None) -> None:
        from tvm import relax

        self.input_names = list(input_names) if input_names is not None else None
        session = getattr(session, "rpc", session)  # a RemoteSession or a tvm RPCSession
        self.session = session
        self.target = target
        library = Path(library)
        check_library_for_server(library, session, target)
        remote_name = f"tvm-mpq-{uuid.uuid4().hex[:8]}-{library.name}"
        try:
            session.upload(str(library), remote_name)
            self.module = session.load_module(remote_name)
        except Exception as err:
            raise MpqError(f"RPC server could not load {library.name}: {last_line(err)}") from None
        self.device = target.remote_device(session, device_index) if target is not None else session.cpu(device_index)
        devices = [self.device] if self.device.dlpack_device_type() == session.cpu().dlpack_device_type() \
            else [self.device, session.cpu()]
        if target is not None and target.device_kind == "cuda" and not self.device.exist:
            raise MpqError("the RPC server has no CUDA device (run the CUDA model on a GPU host's server)")
        try:
            self.vm = relax.VirtualMachine(self.module, devices)
        except Exception as err:
            raise MpqError(f"cannot start the Relax VM of {library.name} on the RPC server: {last_line(err)}") from None

    def _inputs(self, feed: dict[str, np.ndarray] | Sequence[np.ndarray]) -> list[Any]:
        import tvm

        if isinstance(feed, dict) and self.input_names is not None:
            missing = [n for n in self.input_names if n not in feed]
            if missing:
                raise MpqError(f"feed lacks model input(s) {missing} (has {list(feed)})")
            arrays = [feed[n] for n in self.input_names]
        else:
            arrays = list(feed.values()) if isinstance(feed, dict) else list(feed)
        return [tvm.runtime.tensor(np.require(a, requirements="C"), self.device) for a in arrays]

    def run(self, feed: dict[str, np.ndarray] | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run ``main`` on the inputs (a feed dict in the model's input order, or a list)."""
        try:
            self.vm.set_input("main", *self._inputs(feed))
            start = time.perf_counter()
            self.vm.invoke_stateful("main")
            self._last_run_s = time.perf_counter() - start
            return _flatten(self.vm.get_outputs("main"))
        except Exception as err:
            raise MpqError(f"remote run failed: {last_line(err)}") from None

    def time(self, feed: dict[str, np.ndarray] | Sequence[np.ndarray], repeat: int = 10,
             min_repeat_ms: float = 100.0, max_seconds: float = 20.0, min_repeat: int = 3) -> LatencyStats:
        """Time ``main`` with ``time_evaluator`` (one warm-up run discarded).

        Each of the ``repeat`` measurements runs the model ``number`` times for at least
        ``min_repeat_ms``; ``repeat`` shrinks (to no fewer than ``min_repeat``) when one run is
        so slow that the measurements would take longer than ``max_seconds`` in all. One run's duration is
        estimated by an extra warm-up run, or taken from the last :meth:`run` when that took
        over 50 ms (a slow model under QEMU: one run fewer, first-call overhead negligible).
        """
        self.vm.set_input("main", *self._inputs(feed))
        try:
            one = getattr(self, "_last_run_s", None)
            if one is None or one < 0.05:
                start = time.perf_counter()
                self.vm.invoke_stateful("main")  # warm-up, and an estimate of one run
                one = time.perf_counter() - start
            one = max(one, 1e-6)
            number = max(1, math.ceil(min_repeat_ms / 1e3 / one))
            per_repeat = max(number * one, min_repeat_ms / 1e3)
            repeat = max(1, min(repeat, max(min_repeat, int(max_seconds / per_repeat))))
            timer = self.vm.time_evaluator("invoke_stateful", self.device, number=number, repeat=repeat)
            result = timer("main")
        except Exception as err:
            raise MpqError(f"remote timing failed: {last_line(err)}") from None
        return latency_stats(list(result.results), number)

    def close(self) -> None:
        """Drop the remote VM and module (the session ends once the caller drops it too)."""
        for name in ("vm", "module", "device", "session"):
            if hasattr(self, name):
                delattr(self, name)
        gc.collect()

    def __enter__(self) -> RemoteModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _flatten(value: Any) -> list[np.ndarray]:
    if hasattr(value, "numpy"):
        return [value.numpy()]
    out: list[np.ndarray] = []
    for item in value:
        out.extend(_flatten(item))
    return out


@dataclass
class RemoteRun:
    """What :func:`run_on_server` measured: outputs per feed, latency, and the server used."""

    outputs: list[list[np.ndarray]]
    latency: LatencyStats | None
    server: str


def run_on_server(library: str | Path, feeds: Sequence[dict[str, np.ndarray]], target: Any = None, *,
                  rpc_address: str | None = None, tracker: str | None = None, key: str | None = None,
                  measure: bool = True, request_timeout: float = 600.0, input_names: Sequence[str] | None = None,
                  **time_options: Any) -> RemoteRun:
    """One session: upload ``library``, run every feed, time the first; then end the session.

    ``rpc_address`` (``HOST:PORT``) or ``tracker`` + ``key``: with a tracker the session goes to
    whichever server of ``key`` is free (waiting up to ``request_timeout`` s while all are busy),
    so one call per sweep point spreads the points over the pool. ``time_options`` go to
    :meth:`RemoteModel.time`.
    """
    from targets.rpc.endpoint import open_session

    if isinstance(feeds, dict):
        feeds = [feeds]
    remote = open_session(rpc_address, tracker, key, request_timeout=request_timeout)
    try:
        with RemoteModel(remote, library, target, input_names=input_names) as model:
            outputs = [model.run(feed) for feed in feeds]
            stats = model.time(feeds[0], **time_options) if measure and feeds else None
    finally:
        address = remote.address
        del remote
        gc.collect()
    return RemoteRun(outputs, stats, address)
