"""The MetaSchedule builder of tvm-mpq's tuning: TVM's ``LocalBuilder`` with candidates built
without importing ``tvm.s_tir.tensor_intrin`` and linked into a shared library with the
target's compiler (the cross g++ for aarch64): :mod:`targets.rpc.tuning`'s worker functions.
Its worker processes live for the whole tuning (:class:`CandidateBuilder`)."""

from __future__ import annotations

from functools import partial

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, LocalBuilder
from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

from targets.rpc.tuning import build_candidate, export_candidate

BUILD_TIMEOUT_S = 300.0
"""MetaSchedule's LocalBuilder default (30 s) times out on a loaded 2-core machine while its
worker processes import TVM."""

WORKER_USES = 64
"""Candidates a builder worker process builds before it is replaced (``PopenPoolExecutor``'s
``maximum_process_uses``): TVM's reason to restart its pool at every batch is a memory leak of
workers after many uses; replacing each worker after this many builds bounds it the same way."""


@derived_object
class CandidateBuilder(LocalBuilder._cls):  # type: ignore[name-defined,misc]
    """TVM's ``LocalBuilder`` building with :func:`~targets.rpc.tuning.build_candidate` and
    linking with :func:`~targets.rpc.tuning.export_candidate` and ``compiler`` (None: this
    host's), without LocalBuilder's start-up check (a worker process importing TVM only to find
    these two module-level functions). Each round's workers skip the ~40 s import of
    ``tvm.s_tir.tensor_intrin`` TVM's default build does.

    ``LocalBuilder.build`` starts a new pool of worker processes for every batch of candidates
    and shuts it down after: each worker imports TVM again, 6-9 s per batch on a 2-core machine
    (``PopenPoolExecutor`` of 2 workers mapping ``x + 1``), more than building a small
    kernel's candidates takes, and a tuning makes one batch per task and search iteration.
    This builder keeps one pool from its first batch until :meth:`close`, each worker replaced
    after :data:`WORKER_USES` builds; a worker that times out is killed and restarted by the
    pool, as in LocalBuilder."""

    def __init__(self, compiler: str | None) -> None:
        super().__init__(f_build=build_candidate, f_export=partial(export_candidate, compiler),
                         timeout_sec=BUILD_TIMEOUT_S)
        self.pool: PopenPoolExecutor | None = None

    def _sanity_check(self) -> None:
        pass

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        """LocalBuilder's ``build`` on the builder's lasting pool."""
        if self.pool is None:
            self.pool = PopenPoolExecutor(max_workers=self.max_workers, timeout=self.timeout_sec,
                                          maximum_process_uses=WORKER_USES)
        work = [(self.f_build, self.f_export, b.mod, b.target, _serialize_params(b.params)) for b in build_inputs]
        results = []
        for outcome in self.pool.map_with_error_catching(lambda args: _worker_func(*args), work):
            if outcome.status == StatusKind.COMPLETE:
                results.append(BuilderResult(outcome.value, None))
            elif outcome.status == StatusKind.TIMEOUT:
                results.append(BuilderResult(None, f"LocalBuilder: Timeout, killed after {self.timeout_sec} seconds"))
            else:
                results.append(BuilderResult(None, f"LocalBuilder: An exception occurred\n{outcome.value}"))
        return results

    def close(self) -> None:
        """Stop the worker processes (the next :meth:`build` starts new ones)."""
        if self.pool is not None:
            self.pool.shutdown(wait=False)
            self.pool = None
