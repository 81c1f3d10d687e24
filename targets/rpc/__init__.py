"""TVM RPC helpers: local servers (x86 native, aarch64 under QEMU), a local tracker, sessions,
and running/timing an exported model on a remote device.

Modules: ``net`` (addresses, ports), ``process`` (managed process groups), ``server``
(:class:`LocalRpcServer`), ``tracker`` (:class:`LocalTracker`, :class:`TrackerClient`),
``session`` (:func:`connect`), ``endpoint`` (:func:`open_session`: a server or a tracker), ``runner`` (:class:`RemoteModel`).
"""

from targets.rpc.net import parse_address
from targets.rpc.runner import LatencyStats, RemoteModel, RemoteRun, check_library_for_server, run_on_server
from targets.rpc.server import LocalRpcServer, server_arch, start_servers
from targets.rpc.endpoint import open_session
from targets.rpc.session import RemoteSession, connect, remote_machine, remote_triple
from targets.rpc.tracker import LocalTracker, TrackerClient, connect_tracker

__all__ = [
    "LatencyStats", "LocalRpcServer", "LocalTracker", "RemoteModel", "RemoteRun", "RemoteSession", "TrackerClient", "check_library_for_server",
    "connect", "connect_tracker", "open_session", "parse_address", "remote_machine", "remote_triple",
    "run_on_server", "server_arch", "start_servers",
]
