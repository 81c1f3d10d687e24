"""The persistent per-target tuning database: tune once, reuse for every config.

Tuning for speed runs only in benchmarks (benchmarks/kernels.py --tune-trials N): it takes
minutes per kernel on 2 cores. The fast tests here check which kernels a build asks to tune, the
target keying and the errors. The database round trip (fill it with a real MetaSchedule
run, then check that builds of this and other configs reuse the records instead of tuning, with
unchanged results) takes ~5 minutes on 2 cores (TVM 0.27 imports ``tvm.s_tir.tensor_intrin``,
~70 s, in the tuner and in every builder worker), so it is a benchmark:
``python benchmarks/tuning_reuse.py`` (exits 1 if a reuse check fails).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import tvm

from test_compile import _config
from tvm_mpq.compiler import compile_model
from tvm_mpq.compiler.build import TuningOptions, schedule_kernels, target_key, untuned_tasks
from tvm_mpq.compiler.pipeline import lower_model
from tvm_mpq.errors import MpqError
from tvm_mpq.runtime.executor import host_target


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
