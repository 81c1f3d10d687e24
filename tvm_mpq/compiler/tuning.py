"""MetaSchedule tuning of the MAC kernels no kernel rule covers, into a persistent database per
target and device.

::

    TuningOptions(trials=64)                                   # measured on this host
    TuningOptions(trials=8, device=TuningDevice(tracker="127.0.0.1:9190", key="rasp4"))
                                                               # measured on the device, over RPC

The database (:func:`tuning_dir`) is keyed by target and device: ``ROOT/<target>`` for this
host, ``ROOT/<target>@<device>`` for a device reached over RPC (the tracker or server key). Every
fused PrimFunc (one layer shape + precision + epilogue) is tuned once; any later build of any
config for the same target and device reuses its record (``reused`` in :func:`~tvm_mpq.compiler.tune.tune`'s counts),
without connecting to the device. Records are committed as they are measured
(``JSONDatabase`` appends each one), so a run that stops keeps what it measured.

Candidates are built by :class:`~tvm_mpq.compiler.tuning_builder.CandidateBuilder`; for a device
(another architecture than this host's: cross-compiled) they are measured by MetaSchedule's RPC
runner (:mod:`tvm_mpq.compiler.tuning_rpc`), else by its local runner
(:func:`tvm_mpq.compiler.tune.tune` picks).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import tvm

from tvm_mpq.errors import MpqError
from tvm_mpq.kernels import is_scheduled, target_arch

DEFAULT_TUNING_ROOT = Path(os.environ.get("TVM_MPQ_TUNING_DIR", Path.home() / ".cache" / "tvm-mpq" / "tuning"))
DEVICE_TIMEOUT_S = 300.0
"""Default bound on one measurement on a device (session, upload, load, timing), and on the
wait for a free server of the key: an emulated server under QEMU on a loaded 2-core machine
takes tens of seconds to fork a session. (``--tune-timeout``'s help says 300 s.)"""
MAC_TASK_MARKERS = ("conv2d", "matmul", "dense")
"""Tasks whose fused kernel contains one of these ops are tuned; elementwise kernels are not."""


@dataclass(frozen=True)
class TuningDevice:
    """The device candidates are measured on, over TVM RPC: the server at ``rpc``
    (``HOST:PORT``, with its ``key`` if it has one) or the servers of ``key`` behind ``tracker``
    (``HOST:PORT``; all of them measure in parallel). ``name`` names the device in the database
    key (default: the key, else the server address)."""

    rpc: str | None = None
    tracker: str | None = None
    key: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if (self.rpc is None) == (self.tracker is None):
            raise MpqError("tuning on a device needs either --rpc HOST:PORT or --tracker HOST:PORT --key K")
        if self.tracker is not None and not self.key:
            raise MpqError(f"--tracker {self.tracker} needs --key (the server key to request)")
        from targets.rpc.net import parse_address

        parse_address(self.rpc or self.tracker, "--rpc" if self.rpc is not None else "--tracker")  # before any work

    @property
    def database_name(self) -> str:
        """The device's part of the database folder name."""
        name = self.name or self.key or f"rpc-{self.rpc}"
        return re.sub(r"[^A-Za-z0-9._-]", "_", name)

    def describe(self) -> str:
        """``tracker 127.0.0.1:9190 key 'rasp4'`` / ``RPC server 10.0.0.5:9090``."""
        if self.tracker is not None:
            return f"tracker {self.tracker} key '{self.key}'"
        return f"RPC server {self.rpc}" + (f" key '{self.key}'" if self.key else "")


@dataclass(frozen=True)
class TuningOptions:
    """MetaSchedule settings: ``trials`` per new task (0: apply the database only),
    ``root`` of the per-target databases, ``kernels``: apply :mod:`tvm_mpq.kernels` rules,
    ``device``: measure on this device over RPC (None: on this host)."""

    trials: int = 0
    root: Path = DEFAULT_TUNING_ROOT
    kernels: bool = True
    verbose: bool = True
    strategy: str = "evolutionary"
    """MetaSchedule search strategy (``evolutionary``; ``replay-trace`` samples without a model)."""
    cost_model: str = "xgb"
    """MetaSchedule cost model (``xgb``: XGBoost; ``random`` for smoke runs)."""
    device: TuningDevice | None = None
    device_timeout_s: float = DEVICE_TIMEOUT_S
    """On a device: the bound on one measurement (session, upload, load, timing) and on the wait
    for a free server of the key."""
    trials_per_batch: int = 64
    """Candidates built and measured per round (MetaSchedule's ``num_trials_per_iter``); the
    database gets a round's records when the round is measured."""


def target_key(target: tvm.target.Target) -> str:
    """A readable, stable folder name for ``target`` (kind, cpu/arch and a hash of the rest)."""
    attrs = {k: str(v) for k, v in target.attrs.items() if k not in ("num-cores",)}
    kind = str(target.kind.name)
    cpu = attrs.get("mcpu") or attrs.get("arch") or attrs.get("mtriple") or "generic"
    digest = hashlib.sha1(json.dumps([kind, sorted(attrs.items())]).encode()).hexdigest()[:10]
    return f"{kind}-{cpu}-{digest}".replace("/", "_")


def tuning_dir(target: tvm.target.Target, root: Path | str = DEFAULT_TUNING_ROOT,
               device: TuningDevice | None = None) -> Path:
    """The MetaSchedule database folder for ``target`` (on ``device``; None: this host) under ``root``."""
    name = target_key(target)
    return Path(root) / (f"{name}@{device.database_name}" if device is not None else name)


def database(work_dir: Path):
    """The JSON database at ``work_dir`` (created when missing)."""
    from tvm.s_tir import meta_schedule as ms

    work_dir.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(path_workload=str(work_dir / "database_workload.json"),
                                    path_tuning_record=str(work_dir / "database_tuning_record.json"))


def check_tuning(target: tvm.target.Target, options: TuningOptions) -> None:
    """MpqError for tuning options the build cannot honour (before anything is compiled)."""
    if options.trials < 0:
        raise MpqError(f"--tune-trials must be >= 0 (got {options.trials})")
    if options.device_timeout_s <= 0:
        raise MpqError(f"--tune-timeout must be positive (got {options.device_timeout_s:g})")
    if options.trials <= 0:
        return
    if str(target.kind.name) != "llvm":
        raise MpqError(f"--tune-trials is implemented for CPU (llvm) targets; '{target.kind.name}' "
                       "builds use tvm-mpq's and TVM's default GPU schedules (dlight)")
    host = target_arch(tvm.target.Target({"kind": "llvm"}))
    if target_arch(target) != host and options.device is None:
        raise MpqError(f"--tune-trials for {target_arch(target)} measures candidates on the device: give "
                       "--rpc HOST:PORT or --tracker HOST:PORT --key K (e.g. a server started with "
                       f"`tvm-mpq rpc-server --target {target_arch(target)}`)")
    if options.device is None:  # measured here (the same architecture, by the check above)
        from tvm_mpq.runtime.executor import extensions_this_host_lacks

        lacking = extensions_this_host_lacks(target)
        if lacking:
            cpu = target.attrs.get("mcpu", "this target")
            raise MpqError(f"--tune-trials measures candidates on this host, which lacks {', '.join(lacking)} of "
                           f"--mcpu {cpu} (they would die on an illegal instruction): tune on such a machine "
                           "over --rpc / --tracker, or build without --tune-trials")


def untuned_tasks(mod: tvm.IRModule, target: tvm.target.Target, work_dir: Path) -> tuple[list, list]:
    """(MAC tasks that no kernel rule scheduled and the database at ``work_dir`` lacks, all such tasks)."""
    from tvm.s_tir import meta_schedule as ms

    tasks = [t for t in ms.relax_integration.extract_tasks(mod, target)
             if any(m in t.task_name for m in MAC_TASK_MARKERS) and not is_scheduled(t.dispatched[0]["main"])]
    db = database(work_dir)
    missing = [t for t in tasks if db.query_tuning_record(t.dispatched[0], target, t.task_name) is None]
    return missing, tasks


TENSOR_INTRIN_PACKAGE = "tvm.s_tir.tensor_intrin"
TENSOR_INTRIN_MODULES = {"llvm": ("x86", "arm_cpu"), "cuda": ("cuda",)}
"""The modules of TVM's tensor intrinsics that MetaSchedule's search space may tensorize with,
per target kind."""


def load_tensor_intrinsics(target_kind: str) -> None:
    """Register the tensor intrinsics a MetaSchedule tuning for ``target_kind`` may use.

    A ``TuneContext`` imports all of ``tvm.s_tir.tensor_intrin``, which parses every intrinsic
    of every target from TVMScript: ~31 s on a 2-core machine, 21 s of it CUDA's, for a CPU
    tuning that never uses them (``python -X importtime -c "import tvm.s_tir.tensor_intrin"``).
    So, before a TuneContext is made, the package is entered in ``sys.modules`` without running
    its ``__init__`` (which only imports its submodules) and the submodules of this target kind
    (:data:`TENSOR_INTRIN_MODULES`) are imported into it; the TuneContext's import then finds
    the package. Another kind later in the same process imports its own submodules here; an
    unknown kind, or code that imports a submodule by name, gets it the usual way.
    """
    package = sys.modules.get(TENSOR_INTRIN_PACKAGE)
    if package is not None and not getattr(package, "_tvm_mpq_partial", False):
        return  # TVM's own import ran: everything is registered
    names = TENSOR_INTRIN_MODULES.get(target_kind)
    if names is None and package is None:
        importlib.import_module(TENSOR_INTRIN_PACKAGE)  # all of them, as the TuneContext would
        return
    if names is None:  # after a partial load: the rest, as the package's __init__ would
        names = ("cuda", "arm_cpu", "x86", "rocm", "hexagon", "riscv_cpu")
    if package is None:
        spec = importlib.util.find_spec(TENSOR_INTRIN_PACKAGE)
        assert spec is not None
        package = importlib.util.module_from_spec(spec)
        package._tvm_mpq_partial = True  # type: ignore[attr-defined]
        sys.modules[TENSOR_INTRIN_PACKAGE] = package
        import tvm.s_tir

        tvm.s_tir.tensor_intrin = package  # type: ignore[attr-defined]
    for name in names:
        importlib.import_module(f"{TENSOR_INTRIN_PACKAGE}.{name}")


def run_tuning(tasks: list, options: TuningOptions, work_dir: Path, **measure) -> None:
    """``ms.tune_tasks`` on the extracted ``tasks``, ``options.trials`` each, into the database at
    ``work_dir``; ``measure``: MetaSchedule's ``builder``, ``runner``, ``measure_callbacks``."""
    from tvm.s_tir import meta_schedule as ms

    for kind in {str(t.target.kind.name) for t in tasks}:
        load_tensor_intrinsics(kind)
    with _unnamed_log_handlers_detached():
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(tasks, str(work_dir),
                                                                                  strategy=options.strategy)
    ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir),
                  max_trials_global=options.trials * len(tasks), max_trials_per_task=options.trials,
                  num_trials_per_iter=min(options.trials_per_batch, max(options.trials, 1)),
                  database=database(work_dir), cost_model=options.cost_model, **measure)


@contextmanager
def _unnamed_log_handlers_detached() -> Iterator[None]:
    """MetaSchedule's logger without its unnamed handlers while MetaSchedule configures it:
    its ``create_loggers`` lists the logger's handlers by name and fails on one without a name
    (pytest's log capture attaches such handlers)."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    unnamed = [h for h in logger.handlers if h.get_name() is None]
    for handler in unnamed:
        logger.removeHandler(handler)
    try:
        yield
    finally:
        for handler in unnamed:
            logger.addHandler(handler)
