"""Tune a fused module's uncovered MAC kernels on this host or on a device: the one entry point
that picks :func:`~tvm_mpq.compiler.tuning.run_tuning` with the candidate builder
(:mod:`~tvm_mpq.compiler.tuning_builder`) and the local runner, or
:func:`~tvm_mpq.compiler.tuning_rpc.tune_on_device` (cross-compiled candidates, RPC runner)."""

from __future__ import annotations

import time

import tvm

from tvm_mpq.compiler.tuning import TuningOptions, run_tuning, tuning_dir, untuned_tasks
from tvm_mpq.compiler.tuning_builder import CandidateBuilder
from tvm_mpq.compiler.tuning_rpc import tune_on_device

from targets.rpc.tuning import candidate_compiler


def tune(mod: tvm.IRModule, target: tvm.target.Target, options: TuningOptions) -> dict:
    """Tune, with MetaSchedule and the XGBoost cost model, every MAC kernel of the fused ``mod``
    that no kernel rule covers and that the database of the target and device lacks; return
    counts (``tasks``, newly ``tuned``, ``reused``, ``seconds``, ``database``, ``device``).

    On a device, a measurement round in which no candidate could be measured (the server or
    the tracker's pool gone, every session timing out) stops the tuning with an MpqError; the
    records measured before stay in the database."""
    work_dir = tuning_dir(target, options.root, options.device)
    missing, tasks = untuned_tasks(mod, target, work_dir)
    where = options.device.describe() if options.device is not None else "this host"
    info = {"tasks": len(tasks), "tuned": len(missing), "reused": len(tasks) - len(missing),
            "trials_per_task": options.trials, "database": str(work_dir), "device": where, "seconds": 0.0}
    if options.verbose:
        print(f"  tuning: {len(tasks)} kernel(s) to tune, {info['reused']} already in the database {work_dir}, "
              f"{len(missing)} to tune x {options.trials} trials on {where}", flush=True)
    if not missing:
        return info
    start = time.perf_counter()
    if options.device is None:
        builder = CandidateBuilder(candidate_compiler(target))
        try:
            run_tuning(missing, options, work_dir, builder=builder)
        finally:
            builder.close()
    else:
        tune_on_device(missing, target, options, work_dir)
    info["seconds"] = round(time.perf_counter() - start, 1)
    return info
