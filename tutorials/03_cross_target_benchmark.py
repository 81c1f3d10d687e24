"""Tutorial 3 (benchmarking): one sweep on x86 and on aarch64 through a TVM RPC tracker, and the
plot of latency against the BOPs reduction rate for both targets.

    python tutorials/03_cross_target_benchmark.py     # outputs in $TVM_MPQ_TUTORIAL_OUT or ./out/tutorial3

What it does: starts a tracker and registers two device pools on it (an x86 RPC server under key
``x86``, an aarch64 RPC server under QEMU under key ``aarch64``: on real hardware these are your
boards running ``tvm-mpq rpc-server --target aarch64 --tracker HOST:PORT --key aarch64``), runs
``tvm-mpq sweep`` once per target through the tracker (every point is built and exported with
the target's compiler, then uploaded, checked against fp32 and timed with ``time_evaluator``
round-robin with the fp32 point for a few rounds), and draws both targets' latency relative to
their own fp32 point, the ratio taken within each round (``ratio_to_fp32``: a machine that slows
down between rounds moves both), against the BOPs reduction rate (QEMU times are emulation
times: only ratios compare). CUDA joins the same way (``--target cuda``
against a GPU host's server); without a GPU it is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from targets.aarch64_sysroot import setup_aarch64  # noqa: E402
from targets.rpc import LocalRpcServer, LocalTracker, start_servers  # noqa: E402

OUT = Path(os.environ.get("TVM_MPQ_TUTORIAL_OUT", "out/tutorial3"))
OUT.mkdir(parents=True, exist_ok=True)
MODEL, RATES = "mtcnn-rnet", "0,50,100"

setup_aarch64()  # cross toolchain + arm64 sysroot for the QEMU-backed server (cached)
reports: dict[str, dict] = {}
with LocalTracker() as tracker:
    servers = [LocalRpcServer("x86", tracker=tracker.address, key="x86"),
               LocalRpcServer("aarch64", tracker=tracker.address, key="aarch64")]
    start_servers(*servers)
    try:
        print(f"1. tracker {tracker.address}: servers {[str(s) for s in servers]}")
        for target in ("x86", "aarch64"):
            out = OUT / f"sweep-{target}.json"
            cmd = [sys.executable, "-m", "tvm_mpq.cli", "sweep", MODEL, "--target", target, "--rates", RATES,
                   "--methods", "quantunev2,inorder", "--tracker", tracker.address, "--key", target,
                   "--eval-size", "16", "--rounds", "3", "--repeat", "3", "-o", str(out)]
            print("2. $", " ".join(cmd[2:]))
            subprocess.run(cmd, check=True)
            reports[target] = json.loads(out.read_text())
    finally:
        for server in servers:
            server.stop()

print("3. latency relative to fp32 (median of the within-round ratios) per BOPs reduction rate:")
fig, ax = plt.subplots(figsize=(6, 4))
for target, report in reports.items():
    for method in sorted({p["method"] for p in report["points"]}):
        points = sorted((p for p in report["points"] if p["method"] == method), key=lambda p: p["bops_reduction_rate"])
        xs = [p["bops_reduction_rate"] for p in points]
        ys = [p["ratio_to_fp32"]["median"] for p in points]
        ax.plot(xs, ys, marker="o", label=f"{target} ({report['device'][:40]}) {method}")
        print(f"   {target:8s} {method:11s} " + "  ".join(f"{x:5.1f}% -> {y:.2f}x" for x, y in zip(xs, ys))
              + f"   ({report['monotonicity'][method]['verdict']})")
ax.set_xlabel("BOPs reduction rate (%)")
ax.set_ylabel("latency / fp32 latency in the same round (median)")
ax.set_title(f"{MODEL}: x86 vs aarch64 (QEMU: emulated)")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(OUT / "latency_vs_rate.png", dpi=120)
print(f"4. plot {OUT / 'latency_vs_rate.png'}; per-target reports, tables and plots: {OUT}/sweep-*.json/.md/.png")
for target, report in reports.items():
    assert {p["server"] if "server" in p else target for p in report["points"]}, "no points"
    assert all(p["latency_ms"]["median"] > 0 and p["ratio_to_fp32"]["median"] > 0 for p in report["points"])

# what the tutorial found, for tests/test_tutorials.py
(OUT / "result.json").write_text(json.dumps({
    "model": MODEL, "rates": RATES, "plot": str(OUT / "latency_vs_rate.png"),
    "reports": {target: str(OUT / f"sweep-{target}.json") for target in reports},
    "devices": {target: report["device"] for target, report in reports.items()}}, indent=1))
print("done")
