"""The persistent per-target tuning database: tune once, reuse for every config.

Tuning for speed runs only in benchmarks (benchmarks/kernels.py --tune-trials N): it takes
minutes per kernel on 2 cores. The fast tests here check which kernels a build asks to tune, the
target keying and the errors. The database round trip (fill it with a real MetaSchedule
run, then check that builds of this and other configs reuse the records instead of tuning, with
unchanged results) of real models takes minutes on 2 cores (TVM 0.27's tuner imports
``tvm.s_tir.tensor_intrin``, 40-70 s), so it is a benchmark: ``python benchmarks/tuning_reuse.py``
(exits 1 if a reuse check fails). One small int8 kernel tuned on aarch64 over RPC, then reused,
is tests/test_tuning_rpc.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import tvm

from tvm_mpq.compiler import compile_model
from tvm_mpq.compiler.build import TuningOptions, schedule_kernels, target_key, untuned_tasks
from tvm_mpq.compiler.pipeline import lower_model
from tvm_mpq.errors import MpqError
from tvm_mpq.runtime.executor import host_target


def test_build_asks_to_tune_only_mac_kernels_no_rule_covers(tmp_path):
    """A grouped conv (no kernel rule takes it) is the one task; the conv the rules schedule and
    the elementwise kernels are not tuned."""
    import numpy as np
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 12, 12), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(np.ones((16, 8, 3, 3), "float32")), padding=1))
            y = bb.emit(relax.op.nn.relu(y))
            y = bb.emit_output(relax.op.nn.conv2d(y, relax.const(np.ones((16, 4, 3, 3), "float32")), groups=4))
        bb.emit_func_output(y)
    mod = bb.get()
    target = host_target()
    fused = schedule_kernels(mod, target)
    plain = schedule_kernels(mod, target, kernels=False)
    missing, tasks = untuned_tasks(fused, target, tmp_path)
    _, all_tasks = untuned_tasks(plain, target, tmp_path)
    assert len(tasks) == 1 and len(missing) == 1  # empty database: the grouped conv is missing
    assert "conv2d" in tasks[0].task_name
    assert len(all_tasks) == 2  # without the kernel rules both convs would be tuned


def test_database_is_keyed_by_target():
    x86 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3"})
    arm = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    assert target_key(x86) != target_key(arm) and target_key(x86).startswith("llvm-znver3-")
    assert target_key(x86) == target_key(tvm.target.Target({"kind": "llvm", "mcpu": "znver3", "num-cores": 7}))


def test_tuning_for_another_architecture_is_refused(small_graph, small_configs, tmp_path):
    config = small_configs[100]
    arm = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    with pytest.raises(MpqError, match="give --rpc HOST:PORT or --tracker HOST:PORT --key K"):
        compile_model(small_graph, config, arm, tuning=TuningOptions(trials=2, root=tmp_path))


def test_cli_rejects_negative_trials(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tvm_mpq.cli", "compile", "mtcnn-rnet", "--rate", "100",
                           "--tune-trials", "-1", "-o", str(tmp_path / "m.so")], capture_output=True, text=True)
    assert proc.returncode == 2 and "--tune-trials must be >= 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_database_is_keyed_by_device_too(tmp_path):
    from tvm_mpq.compiler.tuning import TuningDevice, tuning_dir

    arm = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    host = tuning_dir(arm, tmp_path)
    pool = tuning_dir(arm, tmp_path, TuningDevice(tracker="10.0.0.1:9190", key="rk3588"))
    board = tuning_dir(arm, tmp_path, TuningDevice(rpc="10.0.0.7:9090"))
    assert host.name == target_key(arm) and pool.name == f"{target_key(arm)}@rk3588"
    assert board.name == f"{target_key(arm)}@rpc-10.0.0.7_9090"
    with pytest.raises(MpqError, match="needs --key"):
        TuningDevice(tracker="10.0.0.1:9190")
    with pytest.raises(MpqError, match="either --rpc HOST:PORT or --tracker"):
        TuningDevice(rpc="a:1", tracker="b:2", key="k")


def test_cli_needs_a_device_to_tune_for_aarch64_before_any_work(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tvm_mpq.cli", "compile", "mtcnn-rnet", "--rate", "100",
                           "--target", "aarch64", "--tune-trials", "2", "-o", str(tmp_path / "m.so")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "--tune-trials for aarch64 measures candidates on the device: give --rpc HOST:PORT" in proc.stderr
    assert "analyzing" not in proc.stdout


def test_cpu_tuning_loads_only_the_cpu_tensor_intrinsics():
    """A TuneContext for a CPU target, in a fresh interpreter, after load_tensor_intrinsics: the
    x86 and Arm intrinsics MetaSchedule tensorizes with are registered, CUDA's are not parsed."""
    code = """
import sys
from tvm_mpq.compiler.tuning import load_tensor_intrinsics
load_tensor_intrinsics("llvm")
import tvm
from tvm.s_tir import TensorIntrin, meta_schedule as ms
ms.TuneContext(target=tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2}))
assert TensorIntrin.get("dot_16x4_vnni") is not None and TensorIntrin.get("dot_4x4_i8i8s32_sdot") is not None
assert "tvm.s_tir.tensor_intrin.cuda" not in sys.modules, "CUDA intrinsics parsed for a CPU tuning"
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_tuning_here_for_a_cpu_this_host_cannot_run_is_refused(small_graph, small_configs, tmp_path):
    """Measuring candidates built for a CPU model with extensions this host lacks would kill the
    measuring process (illegal instruction): refused with one line naming them, before any work."""
    from tvm_mpq.compiler.tuning import check_tuning
    from tvm_mpq.runtime.executor import extensions_this_host_lacks

    # a model with an extension this host lacks: Sapphire Rapids (AVX512-FP16, AMX) on AMD, Granite
    # Rapids (AMX-FP16) or Zen 5 (AVX512-VP2INTERSECT) on a Sapphire Rapids-class Xeon
    candidates = [tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": 2})
                  for cpu in ("sapphirerapids", "graniterapids", "znver5")]
    lacking_by_cpu = [(t, lacking) for t in candidates if (lacking := extensions_this_host_lacks(t))]
    if not lacking_by_cpu:
        pytest.skip("this host runs every extension of sapphirerapids, graniterapids and znver5")
    spr, lacking = lacking_by_cpu[0]
    with pytest.raises(MpqError, match=f"lacks {lacking[0]}.*--mcpu {spr.attrs['mcpu']}"):
        check_tuning(spr, TuningOptions(trials=2, root=tmp_path))
    check_tuning(spr, TuningOptions(trials=0, root=tmp_path))  # applying a database only: fine
    host = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v2", "num-cores": 2})
    assert extensions_this_host_lacks(host) == []
    check_tuning(host, TuningOptions(trials=2, root=tmp_path))
