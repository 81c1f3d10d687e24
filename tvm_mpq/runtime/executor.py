"""Build a :class:`ModelGraph` with TVM for the host CPU and run it on numpy feeds."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.types import Feed


def host_cpu() -> str | None:
    """LLVM's name for this machine's CPU (``znver3``, ``skylake-avx512``), or None when LLVM
    only knows it as ``generic`` or the host is not x86-64."""
    import platform

    from tvm.target import codegen

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    cpu = str(codegen.llvm_get_system_cpu())
    return None if cpu in ("", "generic") else cpu


def host_target() -> tvm.target.Target:
    """An ``llvm`` target for this machine with its CPU (``mcpu``: without it LLVM emits plain
    x86-64 SSE2 code, no AVX2/FMA). TVM 0.27 takes targets as JSON dicts."""
    target: dict = {"kind": "llvm", "num-cores": os.cpu_count() or 1}
    cpu = host_cpu()
    if cpu:
        target["mcpu"] = cpu
    return tvm.target.Target(target)


def host_tensor(value: np.ndarray, device: tvm.runtime.Device | None = None) -> tvm.runtime.Tensor:
    """``value`` as a C-contiguous TVM tensor of the same rank (``np.ascontiguousarray`` would
    turn a 0-d scalar into shape ``(1,)``, which a rank-0 argument rejects)."""
    return tvm.runtime.tensor(np.require(value, requirements="C"), device or tvm.cpu())


def flatten_outputs(value: object) -> list[np.ndarray]:
    if hasattr(value, "numpy"):  # a tvm.runtime.Tensor
        return [value.numpy()]
    out: list[np.ndarray] = []
    for item in value:  # an ffi Array (tuple output)
        out.extend(flatten_outputs(item))
    return out


@dataclass
class CompiledGraph:
    """A compiled model: ``run(feed)`` returns the flattened outputs of ``main`` as numpy."""

    graph: ModelGraph
    vm: relax.VirtualMachine
    device: tvm.runtime.Device
    param_tensors: list

    def run(self, feed: Feed) -> list[np.ndarray]:
        self.graph.check_inputs(feed)
        args = [host_tensor(feed[s.name], self.device) for s in self.graph.inputs]
        return flatten_outputs(self.vm["main"](*args, *self.param_tensors))


def compile_graph(graph: ModelGraph, target: tvm.target.Target | None = None) -> CompiledGraph:
    """Compile ``graph.mod`` (parameters stay runtime arguments) for the host CPU."""
    target = target or host_target()
    executable = tvm.compile(graph.mod, target=target)
    device = tvm.cpu()
    vm = relax.VirtualMachine(executable, device)
    params = [host_tensor(v, device) for v in graph.params.values()]
    return CompiledGraph(graph, vm, device, params)
