"""The TVM RPC tracker: start one on this machine, ask one what it serves, request a session.

A tracker pools RPC servers by *key*; ``request(key)`` hands out a free server of that key, so
a sweep that requests one session per point spreads the points over the pool.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from typing import Any

from tvm_mpq.errors import MpqError

from targets.rpc.net import free_port, check_port_free, parse_address, probe
from targets.rpc.process import ManagedProcess
from targets.rpc.session import RemoteSession, connect


def _session_error(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__


class TrackerClient:
    """A connection to a tracker at ``host:port`` (MpqError if nothing listens there)."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        from tvm import rpc

        self.host, self.port, self.timeout = host, port, timeout
        probe(host, port, timeout=timeout, what="RPC tracker")
        try:
            self._session = rpc.connect_tracker(host, port)
        except Exception as err:  # tvm raises RuntimeError / OSError variants
            raise MpqError(f"{host}:{port} is not a TVM RPC tracker: {_session_error(err)}") from None
        if self._session._sock is not None:
            self._session._sock.settimeout(timeout)

    @property
    def address(self) -> str:
        """``HOST:PORT`` of the tracker."""
        return f"{self.host}:{self.port}"

    def summary(self) -> dict[str, Any]:
        """The tracker's summary: ``{"queue_info": {key: {free, pending}}, "server_info": [...]}``."""
        try:
            return self._session.summary()
        except OSError as err:
            raise MpqError(f"RPC tracker {self.address} did not answer: {err}") from None

    def servers(self) -> dict[str, list[tuple[str, int]]]:
        """Registered servers by key: ``{key: [(host, port), ...]}``."""
        found: dict[str, list[tuple[str, int]]] = {}
        for info in self.summary().get("server_info", []):
            key = str(info.get("key", "")).split(":", 1)[-1]
            addr = info.get("addr") or [None, None]
            found.setdefault(key, []).append((str(addr[0]), int(addr[1])))
        return found

    def check_key(self, key: str) -> int:
        """How many servers have ``key``; MpqError naming the keys the tracker has when none."""
        servers = self.servers()
        if key not in servers:
            have = ", ".join(sorted(servers)) or "none"
            raise MpqError(f"RPC tracker {self.address} has no server with key '{key}' (keys: {have})")
        return len(servers[key])

    def request(self, key: str, timeout: float = 600.0, priority: int = 1,
                session_timeout: float = 0) -> RemoteSession:
        """A session on a free server of ``key``, waiting up to ``timeout`` s while all are busy.

        The key is checked against the tracker's summary first: a key no server has is an
        MpqError at once (TVM's own request would wait forever).
        """
        from tvm.rpc import base

        self.check_key(key)
        sock = self._session._sock
        try:
            sock.settimeout(timeout)
            base.sendjson(sock, [base.TrackerCode.REQUEST, key, "", priority])
            value = base.recvjson(sock)
            sock.settimeout(self.timeout)
        except OSError as err:
            self._session.close()  # drop the queued request with the connection
            self._session._connect()
            if isinstance(err, TimeoutError) or "timed out" in str(err):
                raise MpqError(f"no free '{key}' server at tracker {self.address} within {timeout:g} s") from None
            raise MpqError(f"tracker {self.address} failed while requesting '{key}': {err}") from None
        if value[0] != base.TrackerCode.SUCCESS:
            raise MpqError(f"tracker {self.address} refused the request for '{key}': {value}")
        host, port, matchkey = value[1]
        session = connect(str(host), int(port), key=str(matchkey), session_timeout=session_timeout)
        return RemoteSession(session, f"{host}:{port}", key)

    def wait_for_servers(self, key: str, count: int = 1, timeout: float = 60.0,
                         ports: set[int] | None = None) -> None:
        """Wait until ``count`` servers of ``key`` (or the servers on ``ports``) are registered."""
        deadline = time.monotonic() + timeout
        while True:
            registered = self.servers().get(key, [])
            if ports is not None:
                if ports <= {port for _, port in registered}:
                    return
            elif len(registered) >= count:
                return
            if time.monotonic() > deadline:
                raise MpqError(f"servers with key '{key}' did not register at tracker {self.address} within {timeout:g} s")
            time.sleep(0.2)

    def close(self) -> None:
        """Close the connection to the tracker."""
        self._session.close()

    def __enter__(self) -> TrackerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_tracker(address: str | tuple[str, int], timeout: float = 10.0) -> TrackerClient:
    """A :class:`TrackerClient` for ``"HOST:PORT"`` or ``(host, port)``."""
    host, port = parse_address(address, "tracker address") if isinstance(address, str) else address
    return TrackerClient(host, port, timeout)


_BOOT = """
import logging, sys
host, port = sys.argv[1], int(sys.argv[2])
logging.basicConfig(level=logging.INFO)
from tvm.rpc.tracker import PopenTrackerServerState
PopenTrackerServerState(host, port, port + 1).thread.join()
"""
"""The tracker process: TVM's tracker loop in this process (``tvm.exec.rpc_tracker`` would import
TVM again in a ``PopenWorker`` child)."""


class LocalTracker:
    """TVM's RPC tracker on this machine as a managed subprocess.

    Use as a context manager: the tracker stops on exit, whatever happens inside.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, start_timeout: float = 60.0) -> None:
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self.process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        """``HOST:PORT`` (after :meth:`start`)."""
        return f"{self.host}:{self.port}"

    def start(self) -> LocalTracker:
        """Start the tracker and wait until it answers a summary request."""
        if self.port is None:
            self.port = free_port(self.host)
        else:
            check_port_free(self.host, self.port)
        if importlib.util.find_spec("tornado") is None:
            raise MpqError("the TVM RPC tracker needs the tornado package: pip install tornado")
        argv = [sys.executable, "-c", _BOOT, self.host, str(self.port)]
        self.process = ManagedProcess(argv, f"RPC tracker {self.address}")
        try:
            self.process.wait_for_log(r"bind to \S+:\d+", self.start_timeout, "listening")
            client = self.process.wait_for(self._try_client, self.start_timeout, "answering")
            client.close()  # type: ignore[union-attr]
        except BaseException:
            self.process.stop(remove_log=False)
            raise
        return self

    def _try_client(self) -> TrackerClient | None:
        try:
            return TrackerClient(self.host, self.port or 0, timeout=2.0)
        except MpqError:
            return None

    def client(self, timeout: float = 10.0) -> TrackerClient:
        """A new :class:`TrackerClient` for this tracker."""
        return TrackerClient(self.host, self.port or 0, timeout)

    def stop(self) -> None:
        """Stop the tracker process (idempotent)."""
        if self.process is not None:
            self.process.stop()

    def __enter__(self) -> LocalTracker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
