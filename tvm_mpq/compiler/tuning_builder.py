"""The MetaSchedule builder of tvm-mpq's tuning: TVM's ``LocalBuilder`` with candidates built
without importing ``tvm.s_tir.tensor_intrin`` and linked into a shared library with the
target's compiler (the cross g++ for aarch64): :mod:`targets.rpc.tuning`'s worker functions."""

from __future__ import annotations

from functools import partial

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import LocalBuilder

from targets.rpc.tuning import build_candidate, export_candidate

BUILD_TIMEOUT_S = 300.0
"""MetaSchedule's LocalBuilder default (30 s) times out on a loaded 2-core machine while its
worker processes import TVM."""


@derived_object
class CandidateBuilder(LocalBuilder._cls):  # type: ignore[name-defined,misc]
    """TVM's ``LocalBuilder`` building with :func:`~targets.rpc.tuning.build_candidate` and
    linking with :func:`~targets.rpc.tuning.export_candidate` and ``compiler`` (None: this
    host's), without LocalBuilder's start-up check (a worker process importing TVM only to find
    these two module-level functions). Each round's workers skip the ~40 s import of
    ``tvm.s_tir.tensor_intrin`` TVM's default build does."""

    def __init__(self, compiler: str | None) -> None:
        super().__init__(f_build=build_candidate, f_export=partial(export_candidate, compiler),
                         timeout_sec=BUILD_TIMEOUT_S)

    def _sanity_check(self) -> None:
        pass
