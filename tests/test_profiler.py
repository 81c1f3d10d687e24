"""The per-kernel profilers (tvm_mpq.runtime.profiler) on a real build: the in-model profile
and the isolated one see the same kernels, call counts and kinds."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tvm_mpq.compiler.build import build_module
from tvm_mpq.runtime.executor import host_target
from tvm_mpq.runtime.profiler import KINDS, profile_kernels, profile_kernels_isolated


def _two_convs() -> tvm.IRModule:
    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 12, 12), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = x
            for _ in range(2):  # the same conv shape twice: one kernel, two calls
                w = rng.normal(size=(8, 8, 3, 3)).astype("float32")
                y = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(y, relax.const(w), padding=1)))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def test_isolated_and_in_model_profiles_agree_on_the_kernels():
    executable, info = build_module(_two_convs(), host_target())
    x = np.random.default_rng(1).normal(size=(1, 8, 12, 12)).astype("float32")
    in_model = {r.name: r for r in profile_kernels(executable, [x], info["kernels"], 3) if r.kind != "VM"}
    isolated = {r.name: r for r in profile_kernels_isolated(executable, [x], info["kernels"], runs=3, rounds=2)}
    assert set(isolated) == set(in_model) and isolated
    for name, row in isolated.items():
        assert row.calls == in_model[name].calls and row.kind == in_model[name].kind in KINDS
        assert row.ms > 0
    assert any(r.kind.startswith("MAC") for r in isolated.values())
