"""Where a sweep's points run: every target goes through TVM RPC.

* ``--rpc HOST:PORT``: that server (a board, a GPU host, or a server started by ``tvm-mpq
  rpc-server``);
* ``--tracker HOST:PORT --key K``: one session per server of the tracker's pool of key ``K``
  (as many as are free, up to one per point), held while the sweep times: the points are dealt
  out over those devices and each device times its own points interleaved;
* neither: a server this process starts on loopback: natively for x86 (and CUDA when this
  machine has a GPU), under QEMU for aarch64. CUDA without a GPU here is compiled and exported
  only: the runs are skipped with the reason in the report.

The server is checked before any analysis (reachable, key accepted, CPU matches the target,
CUDA device present), so a wrong address or key fails in seconds with one line.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvm_mpq.errors import MpqError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MORE_DEVICES_WAIT_S = 30.0
"""How long a tracker request for a further device may wait (servers just released re-register
with the tracker within seconds); after that the sweep times on the devices it has."""


@dataclass
class Execution:
    """The RPC path of a sweep (see the module docstring); :meth:`open_devices` opens the sessions
    the points run and are timed in.

    ``mode``: ``local-server``, ``rpc``, ``tracker`` or ``compile-only``; ``device`` describes
    the machine for the report; ``emulated``: latencies are QEMU emulation times;
    ``skip_reason``: why points are not run (compile-only).
    """

    mode: str
    device: str
    emulated: bool = False
    address: str | None = None
    key: str | None = None
    skip_reason: str | None = None
    servers_used: list[str] = field(default_factory=list)
    _server: Any = field(default=None, repr=False)
    _ready: bool = field(default=False, repr=False)

    def ready(self) -> None:
        """Wait for a server this process launched (a no-op otherwise)."""
        if self._server is not None and not self._ready:
            self._server.wait_ready()
            self._ready = True

    def open_devices(self, wanted: int, request_timeout: float = 600.0,
                     log: Callable[[str], None] = print) -> list[Any]:
        """``RemoteSession`` s on the devices that run and time the points: the server (``--rpc``,
        local server), or up to ``wanted`` servers of the tracker's key, each session held until
        the caller drops it (a server serves one session at a time, so while the first is held
        the tracker hands out another server). Empty for compile-only."""
        from targets.rpc import connect_tracker, open_session

        if self.skip_reason is not None:
            return []
        self.ready()
        if self.mode != "tracker":
            sessions = [open_session(rpc_address=self.address, key=self.key, request_timeout=request_timeout)]
        else:
            assert self.address is not None and self.key is not None
            with connect_tracker(self.address) as client:
                count = max(1, min(wanted, client.check_key(self.key)))
                sessions = [client.request(self.key, timeout=request_timeout)]
                while len(sessions) < count:
                    try:
                        sessions.append(client.request(self.key, timeout=MORE_DEVICES_WAIT_S))
                    except MpqError:
                        log(f"tracker {self.address}: {len(sessions)} of {count} '{self.key}' server(s) free within "
                            f"{MORE_DEVICES_WAIT_S:g} s; timing on those")
                        break
        for session in sessions:
            if session.address not in self.servers_used:
                self.servers_used.append(session.address)
        return sessions

    def tuning_device(self) -> Any:
        """The :class:`~tvm_mpq.compiler.tuning.TuningDevice` MetaSchedule measures candidates on
        (and whose database the builds use): the ``--rpc`` server, the tracker's servers of the
        key, or the local QEMU server (database name ``qemu-local``); None for this host (the
        local x86 server) and compile-only."""
        from tvm_mpq.compiler.tuning import TuningDevice

        if self.mode == "rpc":
            return TuningDevice(rpc=self.address, key=self.key)
        if self.mode == "tracker":
            return TuningDevice(tracker=self.address, key=self.key)
        if self.mode == "local-server" and self.emulated:
            return TuningDevice(rpc=self.address, name="qemu-local")
        return None

    def to_json(self) -> dict:
        """The report's ``rpc`` object."""
        d: dict[str, Any] = {"mode": self.mode, "address": self.address, "servers_used": self.servers_used}
        if self.key:
            d["key"] = self.key
        if self.skip_reason:
            d["runs_skipped"] = self.skip_reason
        return d

    def close(self) -> None:
        """Stop a server this process started (idempotent)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> Execution:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def host_cpu_name() -> str:
    """This machine's CPU model (``/proc/cpuinfo``), or its architecture when unknown."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or "unknown CPU"


def local_gpu_name() -> str | None:
    """The name of this machine's CUDA GPU 0, or None when there is none (or no driver)."""
    try:
        import tvm

        dev = tvm.cuda(0)
        return str(dev.device_name) if dev.exist else None
    except Exception:  # no CUDA runtime in this TVM build / no driver
        return None


def open_execution(target: Any, rpc: str | None = None, tracker: str | None = None, key: str | None = None,
                   setup: bool = True, log: Callable[[str], None] = print) -> Execution:
    """Check the given server or tracker (or launch a local server) for ``target``.

    A local server is launched without waiting for it (the QEMU one takes ~20 s to import TVM
    while the analysis runs); :meth:`Execution.run` waits for it.
    """
    if rpc is not None and tracker is not None:
        raise MpqError("give --rpc or --tracker, not both")
    if tracker is not None:
        return _tracker_execution(target, tracker, key)
    if rpc is not None:
        return _rpc_execution(target, rpc, key)
    if key:
        raise MpqError("--key needs --rpc (the server's key) or --tracker (the key to request)")
    return _local_execution(target, setup, log)


def _local_execution(target: Any, setup: bool, log: Callable[[str], None]) -> Execution:
    from targets.rpc import LocalRpcServer

    cpu = host_cpu_name()
    if target.device_kind == "cuda":
        gpu = local_gpu_name()
        if gpu is None:
            reason = ("no GPU reachable: no CUDA device on this machine and no --rpc/--tracker given; the CUDA "
                      "libraries are compiled and exported, runs skipped (give --rpc HOST:PORT of a GPU host's "
                      "`tvm-mpq rpc-server` to run them)")
            log(f"cuda: {reason}")
            return Execution("compile-only", f"none ({reason.split(';')[0]})", skip_reason=reason)
        server = LocalRpcServer("x86").launch()
        return Execution("local-server", f"{gpu} (CUDA) on {cpu}, via a local RPC server", False,
                         f"{server.host}:{server.port}", _server=server)
    if target.server_arch == "aarch64":
        from targets.aarch64_sysroot import load_sysroot, setup_aarch64

        sysroot = setup_aarch64(log=log)[1] if setup else load_sysroot()
        target.check_toolchain()
        server = LocalRpcServer("aarch64", sysroot=sysroot).launch()
        return Execution("local-server", f"AArch64 under QEMU user-mode emulation (qemu-aarch64, -cpu max) on {cpu}, "
                         "via a local RPC server: latencies are emulation times, compare only ratios", True,
                         f"{server.host}:{server.port}", _server=server)
    server = LocalRpcServer("x86").launch()
    return Execution("local-server", f"{cpu} ({os.cpu_count()} cores), via a local RPC server", False,
                     f"{server.host}:{server.port}", _server=server)


def _inspect_server(take_session: Callable[[], Any], target: Any) -> tuple[str, str]:
    """``(triple, device name)`` of the server behind the session ``take_session()`` hands over;
    the session is closed (its last reference dropped) before returning."""
    session = take_session()
    try:
        return _check_server(session, target), _device_name(session, target)
    finally:
        del session
        gc.collect()


def _rpc_execution(target: Any, address: str, key: str | None) -> Execution:
    from targets.rpc import open_session

    triple, device = _inspect_server(lambda: open_session(rpc_address=address, key=key), target)
    host = address.rpartition(":")[0].strip("[]")
    emulated = _is_emulated(host, triple)
    return Execution("rpc", _describe(device, triple, f"RPC server {address}", emulated), emulated, address, key or None)


def _tracker_execution(target: Any, address: str, key: str | None) -> Execution:
    from targets.rpc import connect_tracker

    if not key:
        raise MpqError(f"--tracker {address} needs --key (the server key to request)")
    with connect_tracker(address) as client:
        count = client.check_key(key)
        hosts = {h for h, _ in client.servers()[key]}
        pending = [client.request(key, timeout=120.0)]
    triple, device = _inspect_server(pending.pop, target)
    emulated = all(_is_emulated(h, triple) for h in hosts)
    where = f"{count} server(s) of key '{key}' at tracker {address}"
    return Execution("tracker", _describe(device, triple, where, emulated), emulated, address, key)


def _check_server(session: Any, target: Any) -> str | None:
    """The server's LLVM triple; MpqError when its CPU cannot run ``target``'s libraries or a CUDA
    target meets a server without a GPU."""
    from targets.elf import machine_name
    from targets.rpc import remote_machine, remote_triple

    triple = remote_triple(session)
    machine = remote_machine(session)
    if machine is not None and machine != target.elf_machine:
        raise MpqError(f"{session.address} runs on {machine_name(machine)}, but target {target.name} builds "
                       f"{machine_name(target.elf_machine)} libraries: give a server for {target.name}")
    if target.device_kind == "cuda" and not session.rpc.cuda(0).exist:
        raise MpqError(f"RPC server {session.address} has no CUDA device: give a GPU host's server for --target cuda")
    return triple


def _device_name(session: Any, target: Any) -> str | None:
    if target.device_kind != "cuda":
        return None
    try:
        return str(session.rpc.cuda(0).device_name)
    except Exception:  # older servers lack the attribute query
        return None


def _is_emulated(host: str, triple: str | None) -> bool:
    """A loopback server whose CPU is not this machine's runs under emulation (QEMU)."""
    import platform

    from targets.elf import arch_machine

    if host not in LOOPBACK or not triple:
        return False
    return arch_machine(triple) != arch_machine(platform.machine())


def _describe(device: str | None, triple: str | None, where: str, emulated: bool) -> str:
    what = device or triple or "unknown machine"
    text = f"{what} ({triple}) on {where}" if device and triple else f"{what} on {where}"
    if emulated:
        text += ": under QEMU emulation on this machine, latencies are emulation times"
    return text
