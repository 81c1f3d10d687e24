"""Does the integer model compute what its QDQ simulation computes? Layer by layer, on the same inputs.

End to end, a deep int8 network amplifies single rounding flips (an fp32 QDQ model accumulates in
float, the integer model exactly), so the outputs of the two drift apart by a few steps even when
every kernel is right. The check that isolates the kernels is *teacher-forced*: run the integer
model and record every quantized tensor (uint8 codes); then run the QDQ model with each of its
quantized tensors replaced, for its consumers, by the integer model's codes, and compare each
tensor it computes itself with the integer one. Every integer group then sees exactly the inputs
its QDQ twin sees, and the codes must agree to within one step (a float rounding at a .5 tie).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from relay_passes.expose_intermediates import ExposeIntermediates
from tvm_mpq.compiler.pipeline import lower_with_stats
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.runtime.executor import flatten_outputs, host_target
from tvm_mpq.zoo.registry import Feed


@relax.expr_functor.mutator
class _InjectTensors(relax.PyExprMutator):
    """After each binding named in ``names``, later uses read a new function parameter instead."""

    def __init__(self, mod: tvm.IRModule, names: list[str]):
        super().__init__(mod)
        self.names = set(names)
        self.params: dict[str, relax.Var] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        super().visit_var_binding_(binding)
        if binding.var.name in self.names:
            param = relax.Var(f"forced_{binding.var.name}", binding.var.ty)
            self.params[binding.var.name] = param
            self.set_var_remap(binding.var, param)


def _inject(mod: tvm.IRModule, names: list[str]) -> tuple[tvm.IRModule, list[str]]:
    func = mod["main"]
    injector = _InjectTensors(mod, names)
    body = injector.visit_expr(func.body)
    order = [n for n in names if n in injector.params]
    new = relax.Function(list(func.params) + [injector.params[n] for n in order], body, func.ret_ty,
                         func.is_pure, func.attrs)
    out = mod.clone()  # keep the module's other functions (PrimFuncs from the importer)
    out["main"] = new.with_attr("num_input", len(func.params) + len(order))
    return out, order


def _run(mod: tvm.IRModule, args: list[np.ndarray]) -> list[np.ndarray]:
    vm = relax.VirtualMachine(tvm.compile(mod, target=host_target()), tvm.cpu())
    return flatten_outputs(vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args]))


@dataclass
class Agreement:
    """Per quantized tensor: the largest code difference and the fraction of codes that differ."""

    tensors: dict[str, tuple[float, float]]

    @property
    def max_code_diff(self) -> float:
        return max((d for d, _ in self.tensors.values()), default=0.0)

    @property
    def differing_fraction(self) -> float:
        return float(np.mean([f for _, f in self.tensors.values()])) if self.tensors else 0.0


def layerwise_agreement(graph: ModelGraph, config: PrecisionConfig, feeds: list[Feed],
                        stage: str = "A->C") -> Agreement:
    """Teacher-forced comparison of every quantized tensor (see the module docstring)."""
    int_mod, _, int_stats = lower_with_stats(graph, config, stage)
    sim_mod, _, sim_stats = lower_with_stats(graph, config, stage, simulate=True)
    keys = sorted(set(int_stats.quantized) & set(sim_stats.quantized))
    int_names = [int_stats.quantized[k][0] for k in keys]
    sim_names = [sim_stats.quantized[k][0] for k in keys]
    exposed_int = ExposeIntermediates(int_names)(int_mod)
    forced, order = _inject(sim_mod, sim_names)
    exposed_sim = ExposeIntermediates(sim_names)(forced)
    position = {n: i for i, n in enumerate(sim_names)}
    worst: dict[str, list[float]] = {k: [0.0, 0.0] for k in keys}
    for feed in feeds:
        inputs = [feed[s.name] for s in graph.inputs]
        codes = _run(exposed_int, inputs)[-len(keys):]
        dequantized = [((c.astype(np.float32) - np.float32(sim_stats.quantized[k][1].zero_point))
                        * np.float32(sim_stats.quantized[k][1].scale)) for k, c in zip(keys, codes)]
        forced_inputs = [dequantized[position[n]] for n in order]
        values = _run(exposed_sim, inputs + forced_inputs)[-len(keys):]
        for k, c, v in zip(keys, codes, values):
            qp = sim_stats.quantized[k][1]
            diff = np.abs(np.round(v.astype(np.float64) / qp.scale) + qp.zero_point - c.astype(np.float64))
            worst[k][0] = max(worst[k][0], float(diff.max()))
            worst[k][1] = max(worst[k][1], float((diff > 0).mean()))
    return Agreement({k: (d, f) for k, (d, f) in worst.items()})
