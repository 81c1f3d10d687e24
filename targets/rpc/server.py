"""Local TVM RPC servers (TVM's ``tvm.rpc`` server), natively (x86) or under QEMU (aarch64).

Every target goes through the same RPC path: the x86 server runs this environment's Python; the
aarch64 server runs the arm64 Python of the sysroot (:mod:`targets.aarch64_sysroot`) under
``qemu-aarch64 -L SYSROOT``. The server loop runs in the started Python itself
(no ``PopenWorker``: one TVM import instead of two). Anything that spawns ``sys.executable``
would exec an arm64 binary the host kernel cannot run, so under QEMU ``sys.executable`` points
at a host wrapper script that re-enters QEMU.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from tvm_mpq.errors import MpqError
from tvm_mpq.kernels.cpu_amx import ARCH_PRCTL_AMX

from targets.rpc.net import check_port_free, free_port, parse_address
from targets.rpc.process import ManagedProcess
from targets.rpc.session import HANDSHAKE_TIMEOUT_S

ARCH_ALIASES = {"x86": "x86_64", "x86_64": "x86_64", "x86-64": "x86_64", "cuda": "x86_64",
                "aarch64": "aarch64", "aarch64-dotprod": "aarch64", "arm64": "aarch64"}
START_TIMEOUT = {"x86_64": 60.0, "aarch64": 300.0}
"""Seconds to wait for a server to listen (importing TVM takes ~15 s under QEMU, ~4 s natively)."""

_BOOT = f"ARCH_PRCTL_AMX = {ARCH_PRCTL_AMX!r}\n" + """
import logging, os, socket, sys
wrapper, host, port, tracker, key = sys.argv[1:6]
if wrapper:
    sys.executable = wrapper
logging.basicConfig(level=logging.INFO)
import ctypes, platform
if platform.system() == "Linux" and platform.machine().lower() in ("x86_64", "amd64"):
    try:  # AMX tile state for this process (tvm_mpq.kernels.cpu_amx.request_amx)
        ctypes.CDLL(None).syscall(*ARCH_PRCTL_AMX)
    except (OSError, AttributeError):
        pass
tracker_addr = None
if tracker:
    t_host, t_port = tracker.rsplit(":", 1)
    tracker_addr = (t_host, int(t_port))
try:
    from tvm.rpc import base
    from tvm.rpc.server import _listen_loop
except ImportError:
    import runpy
    sys.argv = ["rpc_server", "--host", host, "--port", port, "--port-end", str(int(port) + 1), "--key", key]
    sys.argv += ["--tracker", tracker] if tracker else []
    runpy.run_module("tvm.exec.rpc_server", run_name="__main__", alter_sys=True)
else:
    sock = socket.socket(base.get_addr_family((host, int(port))), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(1)
    log = logging.getLogger("RPCServer")
    log.info("bind to %s:%s", host, port)
    home = os.getcwd()
    while True:
        try:
            _listen_loop(sock, int(port), key, tracker_addr, None, None)
        except RuntimeError as err:
            if "exited unsuccessfully" not in str(err):
                raise
            os.chdir(home)  # _serving left the session's (deleted) directory as the cwd
            log.warning("%s; serving on", err)
"""
"""The server process: TVM's RPC server loop (``tvm.rpc.server._listen_loop``) run on this
process's main thread. ``tvm.exec.rpc_server`` would import TVM a second time in a
``PopenWorker`` child (~5 s natively, ~15 s under QEMU), and ``PopenRPCServerState`` runs the
loop on a second thread: every session is a ``fork`` of the server, and forking a
multi-threaded guest under ``qemu-user`` intermittently left the session child hung before its
handshake (a CI run saw "accepted the connection but did not answer within 60 s"). With one
thread the fork is of a single-threaded process - provided nothing else starts a thread: numpy's
OpenBLAS starts ``nproc - 1`` worker threads when TVM imports it, so the server runs with
``OPENBLAS_NUM_THREADS=1`` (:data:`SERVER_ENV`; a CI run saw a fresh QEMU server's first session
hang with them). ``sys.executable`` points at the QEMU wrapper for anything that spawns a Python.

A session whose client vanished mid-call (a MetaSchedule measurement killed at its timeout)
ends its child with an error, and TVM's ``_serving`` then raises out of ``_listen_loop``: TVM's
own server exits. This one logs it and listens again (re-registering with its tracker)."""


SERVER_ENV = {"OPENBLAS_NUM_THREADS": "1"}
"""Set in every server's environment: the server process stays single-threaded, so each
session's ``fork`` copies one thread (TVM's own thread pool starts in the session child, and its
size is not affected)."""


def server_arch(target: Any) -> str:
    """``x86_64`` or ``aarch64`` for a target name, a :class:`DeployTarget` or an arch name."""
    name = getattr(target, "server_arch", None) or str(target)
    if name not in ARCH_ALIASES:
        raise MpqError(f"no local RPC server for target '{name}' (have x86, aarch64)")
    return ARCH_ALIASES[name]


class LocalRpcServer:
    """A TVM RPC server on this machine, as a managed process group (a context manager).

    ``arch``: ``x86`` (this Python) or ``aarch64`` (the sysroot's Python under QEMU).
    ``port``: fixed port, or None for a free one. ``tracker`` (``HOST:PORT``) and ``key``:
    register with a tracker under ``key`` (the server then only accepts sessions the tracker
    hands out); without a tracker, ``key`` is the key clients must present.
    """

    def __init__(self, arch: Any = "x86", host: str = "127.0.0.1", port: int | None = None,
                 tracker: str | tuple[str, int] | None = None, key: str | None = None,
                 sysroot: Any = None, start_timeout: float | None = None) -> None:
        self.arch = server_arch(arch)
        self.host = host
        self.port = port
        self._fixed_port = port is not None
        if isinstance(tracker, str):
            tracker = parse_address(tracker, "tracker address")
        if tracker is not None and not key:
            raise MpqError("a server registered with a tracker needs a --key")
        self.tracker = tracker
        self.key = key or ""
        self._sysroot = sysroot
        self.start_timeout = start_timeout or START_TIMEOUT[self.arch]
        self.process: ManagedProcess | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server listens on (after :meth:`start`)."""
        return self.host, int(self.port or 0)

    def __str__(self) -> str:
        return f"{self.arch} RPC server {self.host}:{self.port}"

    def start(self) -> LocalRpcServer:
        """Start the server; return once it listens (and is registered with the tracker)."""
        return self.launch().wait_ready()

    def launch(self) -> LocalRpcServer:
        """Start the server process without waiting (see :meth:`wait_ready`, :func:`start_servers`)."""
        if self._fixed_port:
            check_port_free(self.host, int(self.port or 0))
        else:
            self.port = free_port(self.host)
        self._workdir = tempfile.TemporaryDirectory(prefix="tvm-mpq-rpc-")
        try:
            argv, env = self._command(Path(self._workdir.name))
            self.process = ManagedProcess(argv, str(self), env=env, cwd=Path(self._workdir.name))
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> LocalRpcServer:
        """Wait until the launched server listens (and shows in its tracker); stop it on failure."""
        assert self.process is not None, "launch() first"
        try:
            self.process.wait_for_log(rf"bind to \S+:{self.port}\b", self.start_timeout, "listening")
            if self.tracker is not None:
                from targets.rpc.tracker import TrackerClient

                with TrackerClient(*self.tracker) as client:
                    client.wait_for_servers(self.key, ports={int(self.port or 0)}, timeout=self.start_timeout)
        except BaseException:
            self.stop(keep_log=True)
            raise
        return self

    def _command(self, workdir: Path) -> tuple[list[str], dict[str, str] | None]:
        tracker = f"{self.tracker[0]}:{self.tracker[1]}" if self.tracker is not None else ""
        if self.arch == "x86_64":
            return ([sys.executable, "-c", _BOOT, "", self.host, str(self.port), tracker, self.key],
                    {**os.environ, **SERVER_ENV})
        from targets.aarch64_sysroot import load_sysroot, require_qemu

        qemu = require_qemu()
        sysroot = self._sysroot if self._sysroot is not None else load_sysroot()
        wrapper = sysroot.write_python_wrapper(workdir, qemu)
        argv = [*sysroot.python_argv(qemu), "-c", _BOOT, str(wrapper), self.host, str(self.port), tracker, self.key]
        return argv, {**sysroot.env(), **SERVER_ENV}

    def log_text(self) -> str:
        """Everything the server wrote so far (it logs each session)."""
        return self.process.log_text() if self.process else ""

    def sessions_served(self) -> int:
        """How many sessions the server has accepted so far (counted from its log)."""
        return self.log_text().count("connected from")

    def connect(self, timeout: float = HANDSHAKE_TIMEOUT_S) -> Any:
        """A direct RPC session with this server (not through the tracker)."""
        from targets.rpc.session import connect

        return connect(self.host, int(self.port or 0), key=self.key, timeout=timeout)

    def stop(self, keep_log: bool = False) -> None:
        """Stop the server and everything it started (idempotent)."""
        if self.process is not None:
            self.process.stop(remove_log=not keep_log)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> LocalRpcServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_servers(*servers: LocalRpcServer) -> tuple[LocalRpcServer, ...]:
    """Launch several servers at once and wait for all (their start-ups overlap); on any
    failure every one of them is stopped."""
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers
