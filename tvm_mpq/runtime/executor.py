"""Build a :class:`ModelGraph` with TVM for the host CPU and run it on numpy feeds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

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


VECTOR_EXTENSIONS = ("avx", "amx", "fma", "f16c", "gfni", "vaes", "vpclmulqdq")
"""LLVM x86 features (by name prefix) that are instruction-set extensions a kernel may use."""


def _flag_key(name: str) -> str:
    """LLVM's ``avx512vnni`` / ``amx-int8`` and Linux's ``avx512_vnni`` / ``amx_int8`` as one key."""
    return name.replace("-", "").replace("_", "").replace(".", "").lower()


def masked_features(model_features: Iterable[str], cpu_flags: Iterable[str]) -> list[str]:
    """The vector extensions of an LLVM CPU model (``model_features``) that ``cpu_flags`` (a
    ``/proc/cpuinfo`` flags line) does not list, sorted."""
    present = {_flag_key(f) for f in cpu_flags}
    return sorted(f for f in model_features if f.startswith(VECTOR_EXTENSIONS) and _flag_key(f) not in present)


HIDE_FLAGS_ENV = "TVM_MPQ_HIDE_CPU_FLAGS"
"""Comma-separated prefixes of CPU flags to treat as absent (``avx512,amx``: this machine seen
as an AVX2-only CPU): host builds, the ISA paths the kernels take and the tests' "runs here"
checks all follow, so one machine can run the suite as a CPU of fewer extensions would."""


def hidden_flag_prefixes() -> tuple[str, ...]:
    """The prefixes :data:`HIDE_FLAGS_ENV` names (empty: none)."""
    return tuple(p.strip() for p in os.environ.get(HIDE_FLAGS_ENV, "").split(",") if p.strip())


def cpuinfo_flags() -> list[str] | None:
    """The CPU flags Linux reports (``/proc/cpuinfo``) less those :data:`HIDE_FLAGS_ENV`
    hides, None where Linux reports none."""
    hidden = hidden_flag_prefixes()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("flags"):
                    return [f for f in line.split(":", 1)[1].split() if not f.startswith(hidden)]
    except OSError:
        pass
    return None


def extensions_this_host_lacks(target: tvm.target.Target) -> list[str]:
    """The vector extensions of an x86 ``target`` (its ``mcpu`` model and ``mattr``) that this
    machine does not report (``[]`` where ``/proc/cpuinfo`` is unreadable): code built for it may
    die here on an illegal instruction."""
    from tvm.target import codegen

    flags = cpuinfo_flags()
    return [] if flags is None else masked_features(codegen.llvm_get_cpu_features(target), flags)


def host_mattr(cpu: str | None) -> list[str]:
    """``-mattr`` entries for a build for this host's ``cpu`` (LLVM's name of it).

    Off (``-``): the extensions LLVM's model of ``cpu`` has but this machine does not report:
    LLVM names an AMD CPU by family and model, and a virtual machine may hide some of that
    model's extensions (AVX-512, AMX); built with them, a library would die on an illegal
    instruction. AMX int8 (:data:`tvm_mpq.kernels.cpu_amx.AMX_FEATURES`) where the machine
    reports it: on (``+``) where the model lacks it (a virtual machine may name a Xeon with AMX
    by an older client model: ``rocketlake`` on 2026-12-03) and Linux grants the process its
    tile state (:func:`tvm_mpq.kernels.cpu_amx.request_amx`), off where the model has it but
    the grant fails (a tile instruction would die). Empty where nothing applies or
    ``/proc/cpuinfo`` is unreadable."""
    from tvm.target import codegen

    from tvm_mpq.kernels.cpu_amx import AMX_FEATURES, request_amx

    flags = cpuinfo_flags()
    if not cpu or flags is None:
        return []
    model = list(codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": cpu})))
    mattr = [f"-{f}" for f in masked_features(model, flags)]
    present = {_flag_key(f) for f in flags}
    if all(_flag_key(f) in present for f in AMX_FEATURES):
        in_model, granted = all(f in model for f in AMX_FEATURES), request_amx()
        if in_model and not granted:
            mattr += [f"-{f}" for f in AMX_FEATURES]
        elif granted and not in_model:
            mattr += [f"+{f}" for f in AMX_FEATURES]
    return mattr


def host_target() -> tvm.target.Target:
    """An ``llvm`` target for this machine with its CPU (``mcpu``: without it LLVM emits plain
    x86-64 SSE2 code, no AVX2/FMA), less any extension the machine hides, plus AMX where the
    machine has it and LLVM's CPU model does not (:func:`host_mattr`), and the LLVM tuning
    the kernels want (:func:`tvm_mpq.kernels.cpu_isa.with_llvm_tuning`).
    TVM 0.27 takes targets as JSON dicts."""
    from tvm_mpq.kernels.cpu_isa import with_llvm_tuning

    target: dict = {"kind": "llvm", "num-cores": os.cpu_count() or 1}
    cpu = host_cpu()
    if cpu:
        target["mcpu"] = cpu
        mattr = host_mattr(cpu)
        if mattr:
            target["mattr"] = mattr
    return tvm.target.Target(with_llvm_tuning(target))


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
    built_by: str = "TVM's default pipeline"
    """How the executable was built (``compile_graph``: TVM's default pipeline, unscheduled loops)."""

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
