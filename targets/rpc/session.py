"""Open RPC sessions (direct or through a tracker) and ask a session what machine it runs on."""

from __future__ import annotations

import threading
from typing import Any

from tvm_mpq.errors import MpqError

from targets.elf import arch_machine
from targets.rpc.net import parse_address, probe


def _last_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


def connect(host: str, port: int, key: str = "", timeout: float = 10.0, session_timeout: float = 0,
            handshake_timeout: float = 120.0) -> Any:
    """A ``tvm.rpc`` session with the server at ``host:port``.

    MpqError naming ``HOST:PORT`` when nothing answers (refused or ``timeout``), when the peer is
    not a TVM RPC server, when it rejects ``key``, or when it accepts the connection but does not
    complete the handshake within ``handshake_timeout`` s (a TVM server serves one session at a
    time: it is busy with another client; use a tracker to share servers).
    """
    from tvm import rpc

    probe(host, port, timeout=timeout, what="RPC server")
    result: dict[str, Any] = {}

    def attempt() -> None:
        try:
            result["session"] = rpc.connect(host, port, key=key, session_timeout=session_timeout)
        except Exception as err:  # TVM raises InternalError/RuntimeError with C++ context
            result["error"] = err

    worker = threading.Thread(target=attempt, name=f"rpc-connect-{host}:{port}", daemon=True)
    worker.start()
    worker.join(handshake_timeout)
    if worker.is_alive():
        raise MpqError(f"RPC server {host}:{port} accepted the connection but did not answer within "
                       f"{handshake_timeout:g} s (busy with another session?)")
    if "error" in result:
        msg = _last_line(result["error"])
        if "mismatch" in msg.lower() or "key" in msg.lower():
            raise MpqError(f"RPC server {host}:{port} rejected key '{key}': {msg}")
        raise MpqError(f"RPC server {host}:{port}: {msg}")
    return result["session"]


def open_session(rpc_address: str | None = None, tracker: str | None = None, key: str | None = None,
                 timeout: float = 10.0, request_timeout: float = 600.0) -> Any:
    """A session from ``--rpc HOST:PORT`` or from ``--tracker HOST:PORT --key K`` (exactly one)."""
    if (rpc_address is None) == (tracker is None):
        raise MpqError("give either an RPC server address or a tracker address with a key")
    if rpc_address is not None:
        host, port = parse_address(rpc_address, "RPC server address")
        return connect(host, port, key or "", timeout=timeout)
    if not key:
        raise MpqError(f"--tracker {tracker} needs --key (the server key to request)")
    from targets.rpc.tracker import connect_tracker

    with connect_tracker(tracker, timeout=timeout) as client:  # type: ignore[arg-type]
        return client.request(key, timeout=request_timeout)


def remote_triple(session: Any) -> str | None:
    """The LLVM host triple of the machine behind ``session`` (``aarch64-unknown-linux-gnu``).

    Asks the server's TVM (``target.llvm_get_system_triple``); None if its TVM has no LLVM
    (a runtime-only build), in which case the machine cannot be checked.
    """
    try:
        return str(session.get_function("target.llvm_get_system_triple")())
    except Exception:  # the function is missing on runtime-only servers
        return None


def remote_machine(session: Any) -> int | None:
    """``e_machine`` of the server's CPU (see :func:`remote_triple`), or None when unknown."""
    triple = remote_triple(session)
    return arch_machine(triple) if triple else None
