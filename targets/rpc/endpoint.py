"""Opening a session the way the CLI asks for one: ``--rpc HOST:PORT`` (a server directly) or
``--tracker HOST:PORT --key K`` (a server of that key from a tracker)."""

from __future__ import annotations

from tvm_mpq.errors import MpqError

from targets.rpc.net import parse_address
from targets.rpc.session import HANDSHAKE_TIMEOUT_S, RemoteSession, connect
from targets.rpc.tracker import connect_tracker


def open_session(rpc_address: str | None = None, tracker: str | None = None, key: str | None = None,
                 timeout: float = 10.0, request_timeout: float = 600.0, session_timeout: float = 0) -> RemoteSession:
    """A session from ``--rpc HOST:PORT`` or from ``--tracker HOST:PORT --key K`` (exactly one).
    ``session_timeout``: seconds after which the server ends the session (0: never)."""
    if (rpc_address is None) == (tracker is None):
        raise MpqError("give either an RPC server address or a tracker address with a key")
    if rpc_address is not None:
        host, port = parse_address(rpc_address, "RPC server address")
        return RemoteSession(connect(host, port, key or "", timeout=max(timeout, HANDSHAKE_TIMEOUT_S),
                                     session_timeout=session_timeout),
                             f"{host}:{port}", key or "")
    if not key:
        raise MpqError(f"--tracker {tracker} needs --key (the server key to request)")
    with connect_tracker(tracker, timeout=timeout) as client:  # type: ignore[arg-type]
        return client.request(key, timeout=request_timeout, session_timeout=session_timeout)
