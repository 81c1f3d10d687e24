"""RPC for real: loopback x86 servers, the aarch64 server under QEMU, a tracker pool, error cases.

Every server here is a real ``tvm.rpc`` server process; every model is compiled, exported,
uploaded and run remotely, and compared with the local fp32 run.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tvm_mpq.errors import MpqError
from tvm_mpq.runtime.executor import compile_graph

from targets import get_target
from targets.aarch64_sysroot import setup_aarch64
from targets.rpc import (LocalRpcServer, RemoteModel, connect, connect_tracker, open_session, remote_triple,
                         run_on_server)
from targets.rpc.net import free_port, is_listening
from targets.rpc.process import group_alive


@pytest.fixture(scope="module")
def reference(small_graph, small_feeds):
    model = compile_graph(small_graph)
    return [model.run(feed) for feed in small_feeds]


@pytest.fixture(scope="module")
def x86_lib(small_graph, tmp_path_factory):
    target = get_target("x86")
    return target.export(target.compile(small_graph), tmp_path_factory.mktemp("x86") / "small.so")


@pytest.fixture(scope="module")
def aarch64_setup():
    """Cross g++ + QEMU + arm64 sysroot, set up once (a no-op when cached)."""
    return setup_aarch64()


@pytest.fixture(scope="module")
def aarch64_lib(aarch64_setup, small_graph, tmp_path_factory):
    target = get_target("aarch64")
    return target.export(target.compile(small_graph), tmp_path_factory.mktemp("aarch64") / "small.so")


@pytest.fixture(scope="module")
def x86_server():
    with LocalRpcServer("x86") as server:
        yield server


@pytest.fixture(scope="module")
def aarch64_server(aarch64_setup):
    _, sysroot = aarch64_setup
    with LocalRpcServer("aarch64", sysroot=sysroot) as server:
        yield server


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_servers_fork_their_sessions_from_one_thread(x86_server, aarch64_server):
    """A session is a ``fork`` of the server; forking a multi-threaded guest under qemu-user can
    leave the child hung before its handshake (numpy's OpenBLAS threads did, in CI). The x86
    server is one thread; the QEMU one is one guest thread plus QEMU's own RCU thread."""
    assert _threads(x86_server.process.pid) == 1
    assert _threads(aarch64_server.process.pid) == 2


def test_x86_server_runs_the_model_like_the_local_build(x86_server, x86_lib, small_feeds, reference):
    session = x86_server.connect()
    assert remote_triple(session).startswith("x86_64")
    with RemoteModel(session, x86_lib, get_target("x86")) as model:
        for feed, ref in zip(small_feeds, reference):
            out = model.run(feed)
            assert len(out) == len(ref)
            np.testing.assert_allclose(out[0], ref[0], rtol=1e-5, atol=1e-5)
        stats = model.time(small_feeds[0], repeat=5, max_seconds=3)
    del session
    gc.collect()
    assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert stats.repeat >= 3 and stats.number >= 1
    assert set(stats.to_json()) >= {"median", "p10", "p90"}


def test_aarch64_qemu_server_runs_the_model_like_the_local_build(aarch64_server, aarch64_lib, small_feeds, reference):
    session = aarch64_server.connect()
    assert remote_triple(session).startswith("aarch64")
    with RemoteModel(session, aarch64_lib, get_target("aarch64")) as model:
        out = model.run(small_feeds[1])
        np.testing.assert_allclose(out[0], reference[1][0], rtol=1e-4, atol=1e-5)
        stats = model.time(small_feeds[1], repeat=5, max_seconds=5)
    del session
    gc.collect()
    assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms


def test_aarch64_qemu_runs_a_zoo_model_built_with_dotprod(aarch64_server, tmp_path):
    from tvm_mpq import zoo

    entry = zoo.get("mtcnn-rnet")
    graph = entry.build_graph()
    feed = entry.calibration(1)[0]
    target = get_target("aarch64-dotprod")  # QEMU's default CPU ("max") has the dot-product extension
    lib = target.export(target.compile(graph), tmp_path / "rnet.so")
    session = aarch64_server.connect()
    with RemoteModel(session, lib, target, input_names=[s.name for s in graph.inputs]) as model:
        out = model.run(feed)
    del session
    gc.collect()
    ref = compile_graph(graph).run(feed)
    assert len(out) == len(ref) >= 1
    for got, want in zip(out, ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_library_for_another_machine_is_refused_before_upload(x86_server, aarch64_server, x86_lib, aarch64_lib):
    session = x86_server.connect()
    with pytest.raises(MpqError, match="built for AArch64, but the RPC server runs on x86-64"):
        RemoteModel(session, aarch64_lib)
    with pytest.raises(MpqError, match="built for x86-64, but target aarch64 runs AArch64"):
        RemoteModel(session, x86_lib, get_target("aarch64"))
    del session
    gc.collect()
    session = aarch64_server.connect()
    with pytest.raises(MpqError, match="built for x86-64, but the RPC server runs on AArch64"):
        RemoteModel(session, x86_lib)
    del session
    gc.collect()


def test_tracker_spreads_sessions_over_two_servers(tracker, pool, x86_lib, small_feeds, reference):
    a, b = pool
    addresses = {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}
    with tracker.client() as client:
        assert {f"{h}:{p}" for h, p in client.servers()["pool"]} == addresses
        # two sessions held at once are on different servers
        s1, s2 = client.request("pool", timeout=30), client.request("pool", timeout=30)
        assert {s1.address, s2.address} == addresses
        # a third request while both are busy waits, then is a clear error
        with pytest.raises(MpqError, match="no free 'pool' server at tracker .* within 1 s"):
            client.request("pool", timeout=1)
        del s1, s2
        gc.collect()
    used = []
    for i in range(4):  # one session per sweep point, as the harness does
        run = run_on_server(x86_lib, [small_feeds[i]], get_target("x86"), tracker=tracker.address, key="pool",
                            request_timeout=60, repeat=3, max_seconds=1)
        np.testing.assert_allclose(run.outputs[0][0], reference[i][0], rtol=1e-5, atol=1e-5)
        assert run.latency is not None and run.latency.median_ms > 0
        used.append(run.server)
    assert set(used) == addresses, used
    served = (a.sessions_served(), b.sessions_served())
    assert min(served) >= 2 and sum(served) == 6, served


def test_tracker_wrong_key_is_a_clear_error_not_a_hang(tracker, pool):
    start = time.monotonic()
    with pytest.raises(MpqError, match=r"has no server with key 'nope' \(keys: pool\)"):
        open_session(tracker=tracker.address, key="nope")
    with pytest.raises(MpqError, match="needs --key"):
        open_session(tracker=tracker.address)
    assert time.monotonic() - start < 10


def test_unreachable_server_and_tracker_name_host_and_port():
    port = free_port()
    with pytest.raises(MpqError, match=rf"RPC server 127.0.0.1:{port} unreachable: connection refused"):
        connect("127.0.0.1", port)
    with pytest.raises(MpqError, match=rf"RPC tracker 127.0.0.1:{port} unreachable: connection refused"):
        connect_tracker(f"127.0.0.1:{port}")
    with pytest.raises(MpqError, match="is not HOST:PORT"):
        open_session(rpc_address="localhost")


def test_keyed_server_wrong_key_port_in_use_and_clean_stop():
    server = LocalRpcServer("x86", key="alpha").start()
    try:
        with pytest.raises(MpqError, match=f"127.0.0.1:{server.port} rejected key 'beta'"):
            connect("127.0.0.1", server.port, key="beta")
        session = connect("127.0.0.1", server.port, key="alpha")
        assert session.cpu().exist
        del session
        gc.collect()
        with pytest.raises(MpqError, match=f"cannot listen on 127.0.0.1:{server.port}: in use"):
            LocalRpcServer("x86", port=server.port).start()
        pgid = server.process.pid
        assert group_alive(pgid)
    finally:
        server.stop()
    assert not group_alive(pgid) and not is_listening("127.0.0.1", server.port)


def test_qemu_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-aarch64 on PATH
    with pytest.raises(MpqError, match="qemu-aarch64 not found.*tvm-mpq setup-aarch64"):
        LocalRpcServer("aarch64").start()


def test_rpc_server_cli_serves_until_interrupted():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tvm_mpq.cli", "rpc-server", "--target", "x86", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "ready" in line or not line:
                break
        assert any("ready" in ln for ln in lines), lines
        session = connect("127.0.0.1", port)
        assert session.cpu().exist
        del session
        gc.collect()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not is_listening("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
