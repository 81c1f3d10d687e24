"""The host builds the analysis runs: a model with fixed weights, run on many samples.

Calibration, the sensitivity passes, the per-channel and bias measurements and the fp32
reference run a model (often with intermediates exposed) once per sample. Built by TVM's
default pipeline (:func:`tvm_mpq.runtime.compile_graph`) their loops are not scheduled: one
thread, no vector kernels. On large models that is most of the analysis time: a 640x640
YOLOv8-seg export (16.5 G MACs) ran 18 s a pass that way and 0.08 s with the kernels below, and
``tvm-mpq compile slider.onnx --rate 100`` took 25.5 minutes before, 2.5 minutes after (2-core
AMD EPYC Zen 5, 2026-12-03). :func:`compile_for_runs` builds such a
model, weights bound as constants, with the CPU kernels of the compile itself
(:mod:`tvm_mpq.target_build.passes`) when the model is large enough for the kernel build's
longer compile to pay off (:data:`KERNEL_BUILD_MACS`), and with TVM's default pipeline otherwise.
Both compute the same fp32 function; the kernels' accumulation order (and Winograd's transforms)
differ from the default loops' by float rounding (1e-5 of a tensor's range).

A model whose weights change between runs (the sensitivity probe swaps each layer's weight for
its fake-quantized copy: :class:`~tvm_mpq.sensitivity.probe.PrecisionProbe`) cannot bind them.
:func:`parameter_build` builds it with the same kernels all the same: the weights' layout changes
(channels-last ``HWIO``, each kernel's prepacked tiles) are lifted out of ``main`` into
``main_transform_params`` (TVM's ``LiftTransformParams``), which runs once per parameter set,
and ``main`` reads the transformed weights as layout-free parameters. efficientnet-lite0's probe,
2026-12-07 (2-core AMD EPYC, `avx2 avx512f avx512_vnni`, cores shared): 10 ms a run on the
kernels against 520 ms on TVM's default loops, 20 s to build against 12 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import model_macs
from tvm_mpq.runtime.executor import CompiledGraph, compile_graph, flatten_outputs, host_target, host_tensor
from tvm_mpq.target_build.passes import (KernelRules, codegen, fusion_and_marking_passes, graph_passes, kernel_passes,
                                         rules_used, scheduling_passes)

KERNEL_BUILD_MACS = 1_000_000_000
"""Models with at least this many multiply-accumulates get the kernel build. Measured 2026-12-03
on efficientnet-lite0 (0.39 G MACs, 50 tensors exposed, 2 threads, AMD EPYC Zen 5): TVM's default
build 4.4 s to compile and 254 ms a run, the kernel build 13-17 s and 11 ms; a calibration pass is
16 runs, so the kernel build pays off from about 1 G MACs (its compile grows with the model too:
29 s on the 16.5 G MACs above). A whole QuantuneV2 analysis with the defaults
(``python benchmarks/analysis_builds.py``): efficientnet-lite0 56.1 s on the default build, 97.9 s
on the kernel build; resnet18 (1.8 G MACs) 93.0 s and 37.0 s."""


def kernel_build(graph: ModelGraph, target: tvm.target.Target | None = None) -> CompiledGraph:
    """``graph`` with its weights bound, built with the target's graph passes, fusion, kernel
    rules and prepacked weights (:func:`~tvm_mpq.target_build.passes.kernel_passes`; no tuning
    database: a build for a few runs), for this host by default."""
    target = target or host_target()
    device = tvm.cpu()
    params = {name: host_tensor(value, device) for name, value in graph.params.items()}
    passes = [relax.transform.BindParams("main", params), *kernel_passes(target, KernelRules(target))]
    with target, tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(passes, name="tvm_mpq.kernel_build")(graph.mod)
    by_rules = sum(rules_used(mod).values())
    return CompiledGraph(graph, relax.VirtualMachine(codegen(mod, target), device), device, [],
                         built_by=f"tvm-mpq kernel rules ({by_rules} kernels)")


@dataclass
class ParameterBuild:
    """A module built with its parameters (those after its inputs) as run-time arguments.

    ``prepare(parameters)`` gives what ``main`` reads for one parameter set (the lifted transforms
    run once: :func:`parameter_build`); ``run(inputs, prepared)`` the flattened outputs."""

    vm: relax.VirtualMachine
    device: tvm.runtime.Device
    lifted: bool
    built_by: str
    rules: dict[str, int]
    """How many kernels each kernel rule scheduled (empty: TVM's default build)."""

    def prepare(self, parameters: list) -> list:
        return list(self.vm["main_transform_params"](parameters)) if self.lifted else list(parameters)

    def run(self, inputs: list, prepared: list) -> list[np.ndarray]:
        return flatten_outputs(self.vm["main"](*inputs, *prepared))


def parameter_build(mod: tvm.IRModule, kernels: bool = True,
                    target: tvm.target.Target | None = None) -> ParameterBuild:
    """``mod`` (its ``main`` with a ``num_input`` attribute: the parameters after the inputs are
    weights that change between runs) built for this host: with ``kernels``, the target's graph
    passes, the weights' transforms lifted out of ``main``, fusion, the kernel rules and
    prepacking, the prepacking lifted too; without, TVM's default build (unscheduled loops)."""
    target = target or host_target()
    device = tvm.cpu()
    if not kernels:
        return ParameterBuild(relax.VirtualMachine(tvm.compile(mod, target=target), device), device, False,
                              "TVM's default pipeline", {})
    lift = relax.transform.LiftTransformParams()
    passes = [*graph_passes(target), lift, *fusion_and_marking_passes(target), *scheduling_passes(KernelRules(target)),
              lift]
    with target, tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(passes, name="tvm_mpq.parameter_build")(mod)
    lifted = any(gv.name_hint == "main_transform_params" for gv in mod.functions)
    rules = rules_used(mod)
    return ParameterBuild(relax.VirtualMachine(codegen(mod, target), device), device, lifted,
                          f"tvm-mpq kernel rules ({sum(rules.values())} kernels), weights as lifted parameters", rules)


def kernels_pay_off(total_macs: int) -> bool:
    """Whether a build for a few calibration passes should be on the CPU kernels: at least
    :data:`KERNEL_BUILD_MACS` multiply-accumulates (read at each call, so a benchmark can move it)."""
    return total_macs >= KERNEL_BUILD_MACS


def compile_for_runs(graph: ModelGraph, kernels: bool | None = None) -> CompiledGraph:
    """``graph`` built for many runs on this host: :func:`kernel_build` when ``kernels`` (None:
    when :func:`kernels_pay_off` for the model's MACs, :func:`~tvm_mpq.graph.layer_table.model_macs`),
    else TVM's default build."""
    if kernels is None:
        kernels = kernels_pay_off(model_macs(graph))
    return kernel_build(graph) if kernels else compile_graph(graph)
