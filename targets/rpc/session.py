"""Open RPC sessions (direct or through a tracker) and ask a session what machine it runs on."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from tvm_mpq.errors import MpqError, last_line

from targets.elf import arch_machine
from targets.rpc.net import probe


@dataclass
class RemoteSession:
    """An open RPC session and the server that holds it (``address`` ``HOST:PORT``, tracker ``key``).

    Drop every reference (and the :class:`~targets.rpc.runner.RemoteModel` built on it) to end
    the session: a TVM server serves one session at a time.
    """

    rpc: Any
    address: str
    key: str = ""


HANDSHAKE_TIMEOUT_S = 180.0
"""Seconds a server may take to answer a new session: a server under QEMU forks an emulated
process per session, which on a loaded 2-core machine is slow (natively it takes ~0.2 s)."""


def connect(host: str, port: int, key: str = "", timeout: float = HANDSHAKE_TIMEOUT_S,
            session_timeout: float = 0) -> Any:
    """A ``tvm.rpc`` session with the server at ``host:port``.

    MpqError naming ``HOST:PORT`` when nothing answers (refused, or no answer within ``timeout``
    s), when the peer is not a TVM RPC server, when it rejects ``key``, or when it accepts the
    connection but does not complete the handshake (a TVM server serves one session at a time:
    it is busy with another client; share servers through a tracker).

    The server is not probed before connecting: a bare TCP connect makes a tracker-registered
    server drop its tracker connection and re-register under a new match key, which would
    invalidate the key a tracker just handed out.
    """
    from tvm import rpc

    result: dict[str, Any] = {}

    def attempt() -> None:
        try:
            result["session"] = rpc.connect(host, port, key=key, session_timeout=session_timeout)
        except Exception as err:  # TVM raises InternalError/RuntimeError with C++ context
            result["error"] = err

    worker = threading.Thread(target=attempt, name=f"rpc-connect-{host}:{port}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        probe(host, port, timeout=5.0, what="RPC server")  # unreachable: a clear error naming the address
        raise MpqError(f"RPC server {host}:{port} accepted the connection but did not answer within "
                       f"{timeout:g} s (busy with another session?)")
    if "error" not in result:
        return result["session"]
    msg = last_line(result["error"])
    if "Connect to" in msg and "failed" in msg:
        probe(host, port, timeout=5.0, what="RPC server")
    if "is not TVM RPC server" in msg:
        raise MpqError(f"{host}:{port} is not a TVM RPC server")
    if "key" in msg.lower():
        raise MpqError(f"RPC server {host}:{port} rejected key '{key}': {msg}")
    raise MpqError(f"RPC server {host}:{port}: {msg}")


def remote_triple(session: Any) -> str | None:
    """The LLVM host triple of the machine behind ``session`` (``aarch64-unknown-linux-gnu``).

    Asks the server's TVM (``target.llvm_get_system_triple``); None if its TVM has no LLVM
    (a runtime-only build), in which case the machine cannot be checked.
    """
    session = getattr(session, "rpc", session)
    try:
        return str(session.get_function("target.llvm_get_system_triple")())
    except Exception:  # the function is missing on runtime-only servers
        return None


def remote_machine(session: Any) -> int | None:
    """``e_machine`` of the server's CPU (see :func:`remote_triple`), or None when unknown."""
    triple = remote_triple(session)
    return arch_machine(triple) if triple else None
