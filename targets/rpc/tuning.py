"""What MetaSchedule's builder and RPC runner worker processes run when candidates are measured
on a device: link a candidate with the target's (cross) compiler, and open the device's session
from ``--rpc HOST:PORT`` or ``--tracker HOST:PORT --key K`` with a bounded wait.

The functions are module-level so that TVM's ``PopenPoolExecutor`` workers receive them by
reference (``LocalBuilder(f_build=..., f_export=...)``, ``RPCRunner(f_create_session=...)``);
this module imports nothing heavier than TVM itself.
"""

from __future__ import annotations

import os
import platform
import tempfile
from typing import Any

from tvm_mpq.errors import MpqError

from targets.elf import arch_machine


def candidate_compiler(target: Any) -> str | None:
    """The C++ compiler that links a candidate for the ``llvm`` ``target`` on this host: None
    (TVM's default) for this host's architecture, ``aarch64-linux-gnu-g++`` for aarch64
    (MpqError naming ``tvm-mpq setup-aarch64`` when it is missing)."""
    triple = str(target.attrs.get("mtriple", "") or "")
    if not triple or arch_machine(triple) == arch_machine(platform.machine()):
        return None
    if arch_machine(triple) == arch_machine("aarch64"):
        from targets.aarch64_sysroot import require_cross_compiler

        return require_cross_compiler()
    raise MpqError(f"no cross compiler known for {triple} candidates")


def build_candidate(mod: Any, target: Any, _params: Any = None) -> Any:
    """MetaSchedule's default build of a scheduled candidate (weight-layout rewrite blocks
    dropped, ``tvm.build``), without importing ``tvm.s_tir.tensor_intrin``: a scheduled
    candidate has its intrinsics inlined already, and that import costs ~40 s in every builder
    worker on a loaded 2-core machine."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm.build(mod, target=target)


def export_candidate(compiler: str | None, mod: Any) -> str:
    """Link a built candidate into a shared library the device loads as it is (``compiler``:
    the cross g++; None: this host's); returns its path. MetaSchedule's default export is a
    ``.tar`` the server would have to link itself, with a compiler a board may lack."""
    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="tvm-mpq-candidate-"), "candidate.so")
    mod.export_library(path, fcompile=cc.cross_compiler(compiler) if compiler else None)
    return path


def open_device_session(rpc: str | None, tracker: str | None, key: str | None, timeout_s: float,
                        session_timeout_s: float = 0, _rpc_config: Any = None) -> Any:
    """A ``tvm.rpc`` session on the device: the server at ``rpc``, or a free server of ``key``
    from ``tracker``, waiting at most ``timeout_s`` seconds for one (TVM's own tracker request
    waits forever); MpqError (one line) when there is none. The server ends the session after
    ``session_timeout_s`` seconds (0: never). As ``RPCRunner``'s ``f_create_session`` (bound
    with ``functools.partial``) its ``RPCConfig`` argument is not used."""
    from targets.rpc.endpoint import open_session

    remote = open_session(rpc, tracker, key, request_timeout=timeout_s,
                          session_timeout=session_timeout_s)
    return remote.rpc
