"""Tutorial 4 (edge deployment, tuning): tune an aarch64 model's kernels on the devices behind an
RPC tracker once, then build every configuration from the tuned database.

    python tutorials/04_edge_tuning.py       # outputs in $TVM_MPQ_TUTORIAL_OUT or ./out/tutorial4

The workflow of an edge team, with small numbers so that it runs in CI:

1. a tracker and two aarch64 RPC servers registered under one key. Here both are QEMU-backed
   servers on loopback; on real hardware each board runs
   ``tvm-mpq rpc-server --target aarch64 --host 0.0.0.0 --tracker HOST:9190 --key rk3588`` and
   the tracker is ``python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190``;
2. ``tvm-mpq sweep --tune-trials N --tracker HOST:PORT --key K``: every point is built here;
   MetaSchedule tunes the MAC kernels the database lacks, cross-compiling its candidates and
   timing them on the servers of the key, both at once; the database
   (``--tuning-db``/``llvm-aarch64-...@<key>``) is the target's and the device's. The report
   says per point how many kernels were tuned and how many reused (here the points are 50 and
   100%: MTCNN's RNet is already fully int8 at 50%, so the second point finds every kernel the
   first one tuned; the fp32 baseline the points are timed against is built, and tuned, too);
3. ``tvm-mpq compile`` of a configuration whose kernels are in the database: every kernel is
   reused, nothing is measured, the device is not even contacted.

tvm-mpq's own kernel rules schedule every conv/dense of this model already (an untuned build is
fast); ``--no-kernels`` hands them all to MetaSchedule here, to show the tuning. Without it only
the MAC kernels no rule covers are tuned. ``--tune-trials 2 --tune-strategy replay-trace``
(random samples of the design space, no cost model) keeps it short; real tuning takes the
default evolutionary search and tens to hundreds of trials per kernel. Timings under QEMU are
emulation times: the tuned schedules are the fastest for the emulator, which need not rank
candidates as a real Arm core would. Tune on the board for the board.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from targets.aarch64_sysroot import setup_aarch64
from targets.rpc import LocalRpcServer, LocalTracker, start_servers

OUT = Path(os.environ.get("TVM_MPQ_TUTORIAL_OUT", "out/tutorial4"))
OUT.mkdir(parents=True, exist_ok=True)
MODEL, KEY, TRIALS = "mtcnn-rnet", "qemu-a64", "2"
COMMON = ["--target", "aarch64", "--no-kernels", "--tune-trials", TRIALS, "--tune-strategy", "replay-trace",
          "--tuning-db", str(OUT / "tuning"), "--cache-dir", str(OUT / "cache")]


def tvm_mpq(*args: str) -> None:
    print("   $ tvm-mpq", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "tvm_mpq.cli", *args], check=True)


setup_aarch64()  # cross g++ + QEMU + the arm64 sysroot the servers run in (cached)
with LocalTracker() as tracker:
    servers = start_servers(*(LocalRpcServer("aarch64", tracker=tracker.address, key=KEY) for _ in range(2)))
    try:
        print(f"1. tracker {tracker.address}: {len(servers)} aarch64 servers (QEMU) under key '{KEY}'")

        print("2. sweep, tuning the kernels on the devices as the points are built:")
        tvm_mpq("sweep", MODEL, "--rates", "50,100", "--tracker", tracker.address, "--key", KEY, *COMMON,
                "--eval-size", "4", "--rounds", "2", "-o", str(OUT / "sweep.json"))
        report = json.loads((OUT / "sweep.json").read_text())
        tuning = report["tuning"]
        print(f"   tuned on {tuning['device']}, database {tuning['database']}:")
        for row in tuning["per_point"]:
            point = report["points"][row["point"]]
            print(f"   point {row['point'] + 1} (rate {point['requested_rate']:g}%): {row['tasks']} kernel(s), "
                  f"{row['tuned']} tuned, {row['reused']} reused from the database ({row['seconds']:.0f} s)")
        if tuning["baseline"]:  # no rate-0 point: the sweep builds the fp32 timing baseline, tuned the same way
            row = tuning["baseline"]
            print(f"   fp32 baseline: {row['tasks']} kernel(s), {row['tuned']} tuned, {row['reused']} reused "
                  f"({row['seconds']:.0f} s)")
        assert tuning["tuned"] > 0, "nothing was tuned"
        sessions = [server.sessions_served() for server in servers]
        assert all(n > 0 for n in sessions), f"a server measured nothing: {sessions}"

        print("3. compile rate 100% again: every kernel from the database, no device contacted:")
        tvm_mpq("compile", MODEL, "--rate", "100", "--tracker", tracker.address, "--key", KEY, *COMMON,
                "-o", str(OUT / "rnet100.so"))
        again = json.loads((OUT / "rnet100.compile.json").read_text())["build"]["tuning"]
        assert again["tuned"] == 0 and again["reused"] == again["tasks"] > 0, again
        assert [server.sessions_served() for server in servers] == sessions, "the rebuild contacted a device"
        print(f"   {again['reused']} of {again['tasks']} kernel(s) reused, 0 tuned; library {OUT / 'rnet100.so'}")
        (OUT / "result.json").write_text(json.dumps({
            "servers": len(servers), "sessions": sessions, "sweep_tuning": tuning, "rebuild_tuning": again,
            "library": str(OUT / "rnet100.so")}, indent=1))
    finally:
        for server in servers:
            server.stop()
print("done")
