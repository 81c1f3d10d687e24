"""MetaSchedule tuning for aarch64 over RPC, for real: a loopback tracker with two aarch64 TVM RPC
servers under QEMU, small int8 convolutions cross-compiled here and measured there.

Each test tunes its own kernel (a one-conv int8 model of its own shape, built with
``kernels=False`` so that MetaSchedule, not a kernel rule, schedules the conv) with the
``replay-trace`` strategy and the random cost model, 4 trials in rounds of 2: the point is the
path (builder, RPC runner, tracker, database), not the search. The module shares one tracker
and two servers; the tests that kill a server run last. The CPU tensor intrinsics MetaSchedule
needs (:func:`load_tensor_intrinsics`) are loaded while the servers boot.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tvm_mpq.compiler import compile_model
from tvm_mpq.compiler.tuning import TuningDevice, TuningOptions, load_tensor_intrinsics, tuning_dir
from tvm_mpq.errors import MpqError

from targets import get_target
from targets.aarch64_sysroot import setup_aarch64
from targets.rpc import LocalRpcServer, LocalTracker, open_session, run_on_server
from targets.rpc.net import free_port

KEY = "qemu-a64"
TRIALS = dict(trials=4, trials_per_batch=2, kernels=False, strategy="replay-trace", cost_model="random",
              verbose=False)


class OneConv(torch.nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def int8_conv(channels: int, groups: int, size: int):
    """(graph, fully int8 config, sample feed) of a one-conv model: one small int8 kernel."""
    from tvm_mpq.allocation import allocate_by_rate
    from tvm_mpq.calibration import calibrate
    from tvm_mpq.config.build import build_config
    from tvm_mpq.frontends.torch_frontend import from_module
    from tvm_mpq.graph import build_layer_table

    feed = {"x": np.random.default_rng(0).normal(size=(1, channels, size, size)).astype(np.float32)}
    graph = from_module(OneConv(channels, groups), feed, f"conv{channels}g{groups}s{size}")
    table = build_layer_table(graph)
    ranges = {v: r[8] for v, r in calibrate(graph, [feed], table.activation_operands(), "minmax").items()}
    config = build_config(graph, table, allocate_by_rate(table, table.names(), 100), ranges, {"requested_rate": 100})
    return graph, config, feed


def build(graph, config, tuning: TuningOptions):
    target = get_target("aarch64")
    with target.build_context():
        return compile_model(graph, config, target.tvm_target, tuning=tuning)


def record_lines(work_dir: Path) -> list[str]:
    path = work_dir / "database_tuning_record.json"
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def pool():
    """(tracker, [server A, server B]): two aarch64 servers under QEMU with key ``KEY``."""
    _, sysroot = setup_aarch64()
    with LocalTracker() as tracker:
        servers = [LocalRpcServer("aarch64", sysroot=sysroot, tracker=tracker.address, key=KEY) for _ in range(2)]
        try:
            for server in servers:
                server.launch()
            load_tensor_intrinsics("llvm")  # while the servers boot

            for server in servers:
                server.wait_ready()
            yield tracker, servers
        finally:
            for server in servers:
                server.stop()


@pytest.fixture(scope="module")
def db_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tuning")


def test_no_server_of_the_key_and_no_free_server_are_one_line_errors(pool, db_root):
    tracker, _ = pool
    graph, config, _ = int8_conv(8, 2, 8)
    wrong = TuningOptions(**TRIALS, root=db_root, device=TuningDevice(tracker=tracker.address, key="nope"))
    with pytest.raises(MpqError, match=rf"RPC tracker {tracker.address} has no server with key 'nope' \(keys: {KEY}\)"):
        build(graph, config, wrong)
    held = [open_session(tracker=tracker.address, key=KEY) for _ in range(2)]  # both servers busy
    try:
        busy = TuningOptions(**TRIALS, root=db_root, device=TuningDevice(tracker=tracker.address, key=KEY),
                             device_timeout_s=3.0)
        with pytest.raises(MpqError, match=rf"no free '{KEY}' server at tracker {tracker.address} within 3 s"):
            build(graph, config, busy)
    finally:
        del held
        gc.collect()  # end the sessions
    port = free_port()
    direct = TuningOptions(**TRIALS, root=db_root, device=TuningDevice(rpc=f"127.0.0.1:{port}"))
    with pytest.raises(MpqError, match=rf"RPC server 127.0.0.1:{port} unreachable: connection refused"):
        build(graph, config, direct)


def test_tunes_an_int8_kernel_on_two_qemu_servers_once_then_reuses_it(pool, db_root):
    tracker, servers = pool
    graph, config, feed = int8_conv(8, 2, 8)
    device = TuningDevice(tracker=tracker.address, key=KEY)
    tuning = TuningOptions(**TRIALS, root=db_root, device=device)
    work_dir = tuning_dir(get_target("aarch64").tvm_target, db_root, device)
    assert work_dir.name.endswith(f"@{KEY}")

    first = build(graph, config, tuning).stats["build"]
    assert first["tuning"]["tasks"] == 1 and first["tuning"]["tuned"] == 1 and first["tuning"]["reused"] == 0
    assert len(record_lines(work_dir)) == TRIALS["trials"]
    assert all(server.sessions_served() > 0 for server in servers), "both servers measured candidates"
    conv = next(name for name in first["kernels"] if "conv2d" in name)
    assert first["kernels"][conv] == "database"

    sessions = [server.sessions_served() for server in servers]
    again = [build(graph, config, tuning) for _ in range(2)]
    for compiled in again:
        info = compiled.stats["build"]
        assert info["tuning"] == {**info["tuning"], "tasks": 1, "tuned": 0, "reused": 1, "seconds": 0.0}
        assert info["kernels"][conv] == "database"
    assert [server.sessions_served() for server in servers] == sessions, "a reusing build connected to the device"
    assert len(record_lines(work_dir)) == TRIALS["trials"], "a reusing build measured again"

    library = get_target("aarch64").export(again[-1], work_dir.parent / "tuned.so")
    run = run_on_server(library, [feed], get_target("aarch64"), tracker=tracker.address, key=KEY, measure=False)
    untuned = build(graph, config, TuningOptions(kernels=False, root=db_root / "empty"))
    local = get_target("aarch64").export(untuned, work_dir.parent / "untuned.so")
    ref = run_on_server(local, [feed], get_target("aarch64"), tracker=tracker.address, key=KEY, measure=False)
    np.testing.assert_array_equal(run.outputs[0][0], ref.outputs[0][0])


def test_a_timeout_stops_tuning_with_one_line_and_keeps_the_database(pool, db_root):
    tracker, servers = pool
    graph, config, _ = int8_conv(8, 4, 8)
    device = TuningDevice(tracker=tracker.address, key=KEY)
    work_dir = tuning_dir(get_target("aarch64").tvm_target, db_root, device)
    before = record_lines(work_dir)
    tuning = TuningOptions(**TRIALS, root=db_root, device=device, device_timeout_s=0.2)
    with pytest.raises(MpqError) as err:
        build(graph, config, tuning)
    message = str(err.value)
    assert "\n" not in message
    assert f"tuning on tracker {tracker.address} key '{KEY}' stopped: none of 2 candidate(s)" in message
    assert "Timeout, killed after 1 seconds" in message and f"keeps its {len(before)} measured record(s)" in message
    assert record_lines(work_dir)[:len(before)] == before
    with tracker.client() as client:  # the servers outlive the killed sessions (TVM's own would exit)
        client.wait_for_servers(KEY, count=2, timeout=120)
    assert all(server.process.alive() for server in servers)


def _kill_after_first_round(server: LocalRpcServer, work_dir: Path, records: int, kept: list[str],
                            done: threading.Event) -> None:
    """Once the database has ``records`` records (the first round's are in), SIGKILL ``server``
    (a crash, not a clean stop) as soon as it accepts its next session; ``kept``: the records
    seen before."""
    deadline = time.monotonic() + 600
    while len(record_lines(work_dir)) < records and time.monotonic() < deadline and not done.is_set():
        time.sleep(0.05)
    kept += record_lines(work_dir)
    sessions = server.sessions_served()
    later = time.monotonic() + 60  # or after a minute, should the next round not reach this server
    while server.sessions_served() == sessions and time.monotonic() < later and not done.is_set():
        time.sleep(0.02)
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)


def test_killing_a_server_mid_tuning_finishes_on_the_other(pool, db_root):
    tracker, (victim, survivor) = pool
    graph, config, _ = int8_conv(8, 2, 6)
    device = TuningDevice(tracker=tracker.address, key=KEY)
    work_dir = tuning_dir(get_target("aarch64").tvm_target, db_root, device)
    base = len(record_lines(work_dir))
    kept: list[str] = []
    done = threading.Event()
    killer = threading.Thread(target=_kill_after_first_round, args=(victim, work_dir, base + 2, kept, done),
                              daemon=True)
    killer.start()
    survivor_before = survivor.sessions_served()
    try:
        info = build(graph, config, TuningOptions(**TRIALS, root=db_root, device=device)).stats["build"]
    finally:
        done.set()
        killer.join(timeout=10)
    assert not victim.process.alive()
    conv = next(name for name in info["kernels"] if "conv2d" in name)
    assert info["tuning"]["tuned"] == 1 and info["kernels"][conv] == "database"
    lines = record_lines(work_dir)
    assert len(kept) >= base + 2 and lines[:len(kept)] == kept, "records measured before the kill were lost"
    assert len(lines) == base + TRIALS["trials"]
    assert survivor.sessions_served() > survivor_before


def test_the_last_server_dying_stops_with_one_line_and_keeps_the_records(pool, db_root):
    tracker, (_, last) = pool
    assert last.process is not None and last.process.alive()
    graph, config, _ = int8_conv(4, 1, 6)
    device = TuningDevice(tracker=tracker.address, key=KEY)
    work_dir = tuning_dir(get_target("aarch64").tvm_target, db_root, device)
    kept: list[str] = []
    done = threading.Event()
    base = len(record_lines(work_dir))
    killer = threading.Thread(target=_kill_after_first_round, args=(last, work_dir, base + 2, kept, done), daemon=True)
    killer.start()
    try:
        with pytest.raises(MpqError) as err:
            build(graph, config, TuningOptions(**TRIALS, root=db_root, device=device, device_timeout_s=60.0))
    finally:
        done.set()
        killer.join(timeout=10)
    message = str(err.value)
    assert "\n" not in message and "stopped: none of" in message and "could be measured" in message
    assert len(kept) >= base + 2 and record_lines(work_dir)[:len(kept)] == kept
