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

from relay_passes import ExposeIntermediates, InjectTensors, LoweringTrace
from relay_passes.inject_tensors import INJECTED_ATTR
from tvm_mpq.compiler.pipeline import lower_model
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.runtime.executor import flatten_outputs, host_target, host_tensor
from tvm_mpq.types import Feed


def _run(mod: tvm.IRModule, args: list[np.ndarray]) -> list[np.ndarray]:
    vm = relax.VirtualMachine(tvm.compile(mod, target=host_target()), tvm.cpu())
    return flatten_outputs(vm["main"](*[host_tensor(a) for a in args]))


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
    int_trace, sim_trace = LoweringTrace(), LoweringTrace()
    int_mod, _ = lower_model(graph, config, stage, trace=int_trace)
    sim_mod, _ = lower_model(graph, config, stage, simulate=True, trace=sim_trace)
    keys = sorted(set(int_trace.quantized) & set(sim_trace.quantized))
    int_names = [int_trace.quantized[k][0] for k in keys]
    sim_names = [sim_trace.quantized[k][0] for k in keys]
    exposed_int = ExposeIntermediates(int_names)(int_mod)
    forced = InjectTensors(sim_names)(sim_mod)
    order = [str(name) for name in forced["main"].attrs[INJECTED_ATTR]]
    exposed_sim = ExposeIntermediates(sim_names)(forced)
    position = {n: i for i, n in enumerate(sim_names)}
    worst: dict[str, list[float]] = {k: [0.0, 0.0] for k in keys}
    for feed in feeds:
        inputs = [feed[s.name] for s in graph.inputs]
        codes = _run(exposed_int, inputs)[-len(keys):]
        dequantized = [((c.astype(np.float32) - np.float32(sim_trace.quantized[k][1].zero_point))
                        * np.float32(sim_trace.quantized[k][1].scale)) for k, c in zip(keys, codes)]
        forced_inputs = [dequantized[position[n]] for n in order]
        values = _run(exposed_sim, inputs + forced_inputs)[-len(keys):]
        for k, c, v in zip(keys, codes, values):
            qp = sim_trace.quantized[k][1]
            diff = np.abs(np.round(v.astype(np.float64) / qp.scale) + qp.zero_point - c.astype(np.float64))
            worst[k][0] = max(worst[k][0], float(diff.max()))
            worst[k][1] = max(worst[k][1], float((diff > 0).mean()))
    return Agreement({k: (d, f) for k, (d, f) in worst.items()})
