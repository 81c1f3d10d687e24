"""The persistent per-target tuning database: tune once, reuse for every config.

Tuning for speed runs only in benchmarks (benchmarks/kernels.py --tune-trials N): it takes
minutes per kernel on 2 cores. The fast tests here check which kernels a build asks to tune, the
target keying and the errors. The database round trip (fill it with the cheapest real
MetaSchedule run, one replayed trace per kernel, then check that builds of this and other
configs reuse the records instead of tuning, with unchanged results) needs MetaSchedule's
TuneContext, whose first use imports ``tvm.s_tir.tensor_intrin``: TVMScript-parsing ~500
intrinsics takes ~70 s per process here, and each builder worker pays it again (~5 minutes in
all on 2 cores). It runs when ``TVM_MPQ_TUNING_TESTS=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tvm

from test_compile import _config
from tvm_mpq.compiler import compile_model
from tvm_mpq.compiler.build import TuningOptions, schedule_kernels, target_key, tuning_dir, untuned_tasks
from tvm_mpq.compiler.pipeline import lower_model
from tvm_mpq.errors import MpqError
from tvm_mpq.runtime.executor import host_target


def _seed(graph, config, target, root) -> int:
    """Fill the database for every kernel the build of ``config`` would tune, with the cheapest
    real MetaSchedule run (one random replayed trace per kernel, no cost model); how many."""
    options = TuningOptions(trials=1, root=root, strategy="replay-trace", cost_model="random", verbose=False)
    info = compile_model(graph, config, target, tuning=options).stats["build"]["tuning"]
    assert info["tuned"] == info["tasks"] >= 1 and info["reused"] == 0
    return info["tasks"]


ROUND_TRIP = pytest.mark.skipif(
    os.environ.get("TVM_MPQ_TUNING_TESTS") != "1",
    reason="MetaSchedule database round trip takes ~5 minutes on 2 cores (TVM 0.27 imports "
           "tvm.s_tir.tensor_intrin in every tuning process); set TVM_MPQ_TUNING_TESTS=1")


@pytest.fixture(scope="module")
def seeded(small_graph, small_feeds, tmp_path_factory):
    root = tmp_path_factory.mktemp("tuning")
    config = _config(small_graph, small_feeds, 100)
    n = _seed(small_graph, config, host_target(), root)
    return root, config, n


def test_build_asks_to_tune_only_mac_kernels_no_rule_covers(small_graph, small_feeds, tmp_path):
    config = _config(small_graph, small_feeds, 100)
    mod, _ = lower_model(small_graph, config)
    target = host_target()
    fused = schedule_kernels(mod, target)
    plain = schedule_kernels(mod, target, kernels=False)
    missing, tasks = untuned_tasks(fused, target, tmp_path)
    _, all_tasks = untuned_tasks(plain, target, tmp_path)
    assert len(tasks) >= 1 and len(missing) == len(tasks)  # empty database: everything is missing
    assert all(any(m in t.task_name for m in ("conv2d", "matmul")) for t in tasks)
    assert len(all_tasks) > len(tasks)  # without the kernel rules every MAC kernel would be tuned


@ROUND_TRIP
def test_seeded_kernels_are_reused_not_tuned(small_graph, small_feeds, seeded):
    root, config, n = seeded
    cm = compile_model(small_graph, config, tuning=TuningOptions(trials=1, root=root, verbose=False))
    info = cm.stats["build"]["tuning"]
    assert info == {**info, "tasks": n, "tuned": 0, "reused": n, "seconds": 0.0}
    assert cm.stats["build"]["scheduled_by"]["database"] == n
    assert cm.stats["build"]["scheduled_by"]["kernel_rules"] >= 1
    reference = compile_model(small_graph, config, tuning=TuningOptions(root=root / "empty"))
    assert reference.stats["build"]["scheduled_by"]["database"] == 0
    for feed in small_feeds[:2]:  # integer kernels: a tuned schedule gives the same codes
        a, b = cm.run(feed)[0], reference.run(feed)[0]
        assert np.abs(a - b).max() <= 1e-5 * max(1.0, float(np.abs(b).max()))


@ROUND_TRIP
def test_other_rates_reuse_what_is_shared(small_graph, small_feeds, seeded):
    root, _, _ = seeded
    mixed = _config(small_graph, small_feeds, 50)
    cm = compile_model(small_graph, mixed, tuning=TuningOptions(trials=0, root=root))
    assert "tuning" not in cm.stats["build"]  # trials 0: the database is applied, nothing is tuned
    target = host_target()
    mod, _ = lower_model(small_graph, mixed)
    missing, tasks = untuned_tasks(schedule_kernels(mod, target), target, tuning_dir(target, root))
    shared = [t for t in tasks if t not in missing]
    assert len(missing) < len(tasks) or not tasks, "a mixed config must reuse the kernels it shares"
    assert cm.stats["build"]["scheduled_by"]["database"] == len(shared)


def test_database_is_keyed_by_target():
    x86 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3"})
    arm = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    assert target_key(x86) != target_key(arm) and target_key(x86).startswith("llvm-znver3-")
    assert target_key(x86) == target_key(tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 7}))


def test_tuning_for_another_architecture_is_refused(small_graph, small_feeds, tmp_path):
    config = _config(small_graph, small_feeds, 100)
    arm = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    with pytest.raises(MpqError, match="RPC runner"):
        compile_model(small_graph, config, arm, tuning=TuningOptions(trials=2, root=tmp_path))


def test_cli_rejects_negative_trials(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tvm_mpq.cli", "compile", "mtcnn-rnet", "--rate", "100",
                           "--tune-trials", "-1", "-o", str(tmp_path / "m.so")], capture_output=True, text=True)
    assert proc.returncode == 2 and "--tune-trials must be >= 0" in proc.stderr
    assert "Traceback" not in proc.stderr
