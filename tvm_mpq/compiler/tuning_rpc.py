"""MetaSchedule tuning with candidates measured on a device over TVM RPC.

The parts are TVM's: ``LocalBuilder`` builds each candidate here and links it with the target's
(cross) compiler into a shared library
(:class:`~tvm_mpq.compiler.tuning_builder.CandidateBuilder`);
``RPCRunner`` uploads it to the device and times it with ``time_evaluator``, one session per
candidate, as many at once as the tracker has servers of the key; ``JSONDatabase`` commits
each record as it is measured. What tvm-mpq adds is bounds and one-line errors:

* before the first candidate is built, the device is checked (:func:`check_device`): the
  tracker has servers of the key, one answers within the timeout, and its CPU is the target's;
* every session is opened with a bounded wait (:func:`targets.rpc.tuning.open_device_session`:
  TVM's tracker request would wait forever for a server of the key) and every measurement
  is killed after the timeout (:class:`BoundedRPCRunner`: TVM's RPCRunner pool has none);
* a round in which no built candidate could be measured stops the tuning with an MpqError
  (:class:`DeviceHealth`): the server died, the pool is gone, every session timed out. A server
  of a pool that dies mid-round only fails the candidates it held: the others, and the
  later rounds, are measured on the servers left. The records measured before stay.

Timings are the device's: under QEMU they are emulation times, which rank candidates for the
emulator, not for a real Arm core.
"""

from __future__ import annotations

import gc
import math
import re
from functools import partial
from pathlib import Path
from typing import Any

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.s_tir.meta_schedule.runner import RPCConfig, RPCRunner
from tvm.support.popen_pool import PopenPoolExecutor

from tvm_mpq.errors import MpqError, last_line
from tvm_mpq.compiler.tuning import TuningDevice, TuningOptions, run_tuning
from tvm_mpq.compiler.tuning_builder import CandidateBuilder

from targets.elf import arch_machine, machine_name
from targets.rpc.net import parse_address
from targets.rpc.tuning import candidate_compiler, open_device_session


def check_device(target: tvm.target.Target, device: TuningDevice, timeout_s: float) -> tuple[int, int | None]:
    """(how many servers will measure: the tracker's servers of the key, or 1; the device's
    thread count, None when its TVM cannot tell); MpqError when the tracker has no server of
    the key, none answers within ``timeout_s``, or the server's CPU is not the target's."""
    from targets.rpc import connect_tracker, remote_machine

    servers = 1
    if device.tracker is not None:
        with connect_tracker(device.tracker) as client:
            servers = client.check_key(str(device.key))
    session = open_device_session(device.rpc, device.tracker, device.key, timeout_s)
    try:
        server = remote_machine(session)
        try:
            cores: int | None = int(session.get_function("runtime.NumThreads")())
        except Exception:  # a runtime without the function
            cores = None
    finally:
        del session
        gc.collect()  # end the session: a server serves one at a time
    wanted = arch_machine(str(target.attrs.get("mtriple", "") or ""))
    if server is not None and wanted is not None and server != wanted:
        raise MpqError(f"{device.describe()} runs on {machine_name(server)}, but the candidates are built for "
                       f"{machine_name(wanted)}: tune on a server of the target's architecture")
    return servers, cores


def with_num_cores(target: tvm.target.Target, cores: int | None) -> tvm.target.Target:
    """``target`` with ``num-cores`` (MetaSchedule needs it to tile for threads): its own, else the
    device's thread count, else 1."""
    if target.attrs.get("num-cores") is not None:
        return target
    return tvm.target.Target({**target.export(), "num-cores": cores or 1})


@derived_object
class BoundedRPCRunner(RPCRunner._cls):  # type: ignore[name-defined,misc]
    """TVM's ``RPCRunner`` with sessions from :func:`open_device_session` (``--rpc`` or a
    tracker, bounded waits) and a worker pool that kills a measurement after ``timeout_s``
    (reported as MetaSchedule's ``RPCRunner: Timeout`` run error). RPCRunner's start-up check
    runs once, on that pool, whose worker then measures (TVM imported once, not twice)."""

    def __init__(self, device: TuningDevice, workers: int, timeout_s: float) -> None:
        host, port = parse_address(device.tracker or str(device.rpc), "address")
        self._pool_ready = False
        super().__init__(
            rpc_config=RPCConfig(tracker_host=host, tracker_port=port, tracker_key=device.key or "-",
                                 session_timeout_sec=math.ceil(timeout_s)),
            f_create_session=partial(open_device_session, device.rpc, device.tracker, device.key, timeout_s,
                                     timeout_s),
            max_workers=workers)
        self.pool.shutdown()  # never started: the check above was deferred to the bounded pool
        self.pool = PopenPoolExecutor(max_workers=workers, timeout=timeout_s)
        self._pool_ready = True
        self._sanity_check()

    def _sanity_check(self) -> None:
        if self._pool_ready:
            super()._sanity_check()


@derived_object
class DeviceHealth(PyMeasureCallback):
    """Stops the tuning (MpqError) after a round in which no built candidate could be
    measured on the device; runs after MetaSchedule's own callbacks, so the round's records
    (failed runs included, as MetaSchedule keeps them) are in the database already."""

    def __init__(self, device: TuningDevice, work_dir: Path) -> None:
        self.device = device
        self.work_dir = work_dir

    def apply(self, task_scheduler: Any, task_id: int, measure_candidates: list, builder_results: list,
              runner_results: list) -> None:
        built = [run for build, run in zip(builder_results, runner_results) if build.error_msg is None]
        if built and all(run.error_msg is not None for run in built):
            reason = _reason(built[-1].error_msg)
            task = _task_name(task_scheduler, task_id)
            raise MpqError(f"tuning on {self.device.describe()} stopped: none of {len(built)} candidate(s) of "
                           f"{task} could be measured ({reason}); the database {self.work_dir} keeps its "
                           f"{valid_records(self.work_dir)} measured record(s)")


def valid_records(work_dir: Path) -> int:
    """How many records of the database at ``work_dir`` hold a measured time (not a failed run)."""
    from tvm_mpq.compiler.tuning import database

    return sum(1 for r in database(work_dir).get_all_tuning_records()
               if r.run_secs is not None and all(float(s) < 1e9 for s in r.run_secs))


def tune_on_device(tasks: list, target: tvm.target.Target, options: TuningOptions, work_dir: Path) -> None:
    """Tune the extracted ``tasks`` with candidates cross-compiled here and measured on
    ``options.device`` (see the module docstring)."""
    device = options.device
    assert device is not None
    servers, cores = check_device(target, device, options.device_timeout_s)
    tune_target = with_num_cores(target, cores)
    tasks = [ms.ExtractedTask(t.task_name, t.mod, tune_target, t.dispatched, t.weight) for t in tasks]
    builder = CandidateBuilder(candidate_compiler(target))
    runner = BoundedRPCRunner(device, servers, options.device_timeout_s)
    try:
        run_tuning(tasks, options, work_dir, builder=builder, runner=runner,
                   measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                      DeviceHealth(device, work_dir)])
    finally:
        builder.close()
        runner.pool.shutdown(wait=False)


def _reason(error_msg: str) -> str:
    """A runner error's own line: ``RPCRunner: Timeout, killed after 2 seconds``, or the last line
    of a worker's traceback (``tvm_mpq.errors.MpqError: ...``) without the exception's name."""
    text = last_line(RuntimeError(error_msg)).removeprefix("RPCRunner: ")
    return re.sub(r"^[\w.]+(Error|Exception): ", "", text)


def _task_name(task_scheduler: Any, task_id: int) -> str:
    try:
        return str(task_scheduler.tasks_[task_id].ctx.task_name)
    except (AttributeError, IndexError):
        return f"task {task_id}"
