"""PrecisionProbe: one compiled module of a model in which every layer's precision is set at run time.

Methods that score many precision assignments (Top-1 one layer at a time, Pandey et al.'s phase 1
and Pareto walk) would otherwise compile one simulated model per assignment. The probe compiles
the model once:

* every activation quantizer site (each MAC op's data operand, and the second operand of an
  activation x activation matmul) gets a quantize-dequantize chain whose scale, zero point,
  ``qmax`` and an on/off switch are extra runtime parameters of ``main``
  (:class:`relay_passes.InsertSwitchableQDQ`, layers found by their precision annotations);
  "off" selects the fp32 tensor, so an fp32 layer computes exactly what the fp32 model computes;
* weights are parameters already (stage A detaches them), so a weight bit-width is a swap of the
  parameter's value for its fake-quantized copy (computed with ``quantizers.fake_quant_weight``,
  the same float32 arithmetic as ``SimulateQuantization``).

The arithmetic matches ``relay_passes.SimulateQuantization`` op for op (one QDQ step chain,
:mod:`relay_passes.qdq_steps`); ``tests/test_methods.py`` checks that a probe run and a
SimulateQuantization compile of the same assignment agree (bit for bit on TVM's default build).

The probe runs on the CPU kernels of the compile itself (``kernels=True``, the default:
:func:`tvm_mpq.target_build.parameter_build`, the weights' layout changes lifted into a
transform run once per assignment): efficientnet-lite0 10 ms a run there against 520 ms on TVM's
default loops (a Top-1 order is 51 runs over 6 samples, ``quantunev2-e2e`` 51 over 16). The
kernels sum in another order than the default loops, so outputs differ by float rounding (and a
fake-quantized tensor that lands on a rounding tie by a code).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import tvm
from tvm import relax

from relay_passes import AnnotatePrecision, ExposeIntermediates, InsertSwitchableQDQ, PrecisionAnnotation
from tvm_mpq.allocation.bops import FP32, Precision
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import Layer, LayerTable
from tvm_mpq.quantization.quantizers import ActQParams, fake_quant_weight
from tvm_mpq.target_build.runs import parameter_build
from tvm_mpq.types import Feed

KERNELS = True
"""Whether a probe built without saying is built on the CPU kernels (``benchmarks/probe_builds.py``
times both)."""

QParamsFn = Callable[[str, int], ActQParams]
"""``(relax_var, bits) -> ActQParams``: the calibrated quantizer of an activation tensor."""


def quantizer_sites(table: LayerTable) -> dict[str, tuple[int, ...]]:
    """Each layer's activation quantizer operands: the data operand (0), and the second operand
    (1) of an activation x activation matmul."""
    return {layer.name: (0,) if layer.weight_param is not None else (0, 1) for layer in table}


def switchable_module(graph: ModelGraph, table: LayerTable) -> tvm.IRModule:
    """``graph.mod`` with a switchable QDQ at every site of :func:`quantizer_sites` (their
    parameters after the model's, in table order)."""
    markers = {layer.name: PrecisionAnnotation.fp32(layer.name) for layer in table}
    seq = tvm.transform.Sequential([relax.transform.Normalize(), AnnotatePrecision(markers, table),
                                    InsertSwitchableQDQ(quantizer_sites(table))], name="tvm_mpq.probe")
    return seq(graph.mod)


def weight_in_param_layout(layer: Layer, params: dict[str, np.ndarray], bits: int) -> np.ndarray:
    """The layer's parameter with its weight operand fake-quantized at ``bits`` (views undone)."""
    value = params[layer.weight_param]
    shapes = [value.shape]
    for op, arg in layer.weight_view:
        value = np.transpose(value, arg) if op == "permute_dims" else np.reshape(value, arg)
        shapes.append(value.shape)
    value = fake_quant_weight(value, bits, layer.channel_axis)
    for (op, arg), shape in zip(reversed(layer.weight_view), reversed(shapes[:-1])):
        value = np.transpose(value, np.argsort(arg)) if op == "permute_dims" else np.reshape(value, shape)
    return np.ascontiguousarray(value, dtype=np.float32)


class PrecisionProbe:
    """Run ``graph`` under any per-layer precision assignment, compiled once.

    ``kernels``: built on the CPU kernels or TVM's default loops (the reference); None: :data:`KERNELS`.
    ``expose``: variables of the model made extra outputs after the model's own (as
    :class:`relay_passes.ExposeIntermediates` does), for :meth:`assignment` runs.
    ``precisions`` maps layer names to :class:`Precision`; layers not named (and ``FP32``
    entries) run in fp32. ``Precision(w, a)``: weights per-channel symmetric at ``w`` bits (the
    B operand of an activation x activation matmul: asymmetric at ``w`` bits), the data operand
    asymmetric at ``a`` bits; ``a >= 32`` leaves activations fp32 (weight-only), ``w >= 32``
    leaves the weight fp32.
    """

    def __init__(self, graph: ModelGraph, table: LayerTable, qparams: QParamsFn, kernels: bool | None = None,
                 expose: list[str] | None = None):
        self.graph, self.table, self.qparams = graph, table, qparams
        module = switchable_module(graph, table)
        if expose:
            module = ExposeIntermediates(expose)(module)
        self._compiled = parameter_build(module, KERNELS if kernels is None else kernels)
        self._device = self._compiled.device
        self._base = {name: self._tensor(value) for name, value in graph.params.items()}
        self._weights: dict[tuple[str, int], object] = {}
        self._sites: dict[tuple[str, int], list] = {}
        self._off = [self._tensor(np.float32(1.0)), self._tensor(np.float32(0.0)),
                     self._tensor(np.float32(255.0)), self._tensor(np.bool_(False))]
        shared: dict[str, list[str]] = {}
        for layer in table:
            if layer.weight_param is not None:
                shared.setdefault(layer.weight_param, []).append(layer.name)
        self._shared = {p: names for p, names in shared.items() if len(names) > 1}
        self.runs = 0

    def _tensor(self, value: np.ndarray | np.generic) -> object:
        array = np.asarray(value)  # keeps 0-d scalars 0-d (ascontiguousarray would make them 1-d)
        return tvm.runtime.tensor(array if array.flags.c_contiguous else array.copy(), self._device)

    def _weight(self, layer: Layer, bits: int) -> object:
        key = (layer.name, bits)
        if key not in self._weights:
            self._weights[key] = self._tensor(weight_in_param_layout(layer, self.graph.params, bits))
        return self._weights[key]

    def _site(self, tensor: str, bits: int) -> list:
        key = (tensor, bits)
        if key not in self._sites:
            qp = self.qparams(tensor, bits)
            self._sites[key] = [self._tensor(np.float32(qp.scale)), self._tensor(np.float32(qp.zero_point)),
                                self._tensor(np.float32(qp.qmax)), self._tensor(np.bool_(True))]
        return self._sites[key]

    def arguments(self, precisions: Mapping[str, Precision]) -> list:
        """The parameter tensors of the switchable ``main`` for one assignment."""
        params = dict(self._base)
        sites: list = []
        unknown = [n for n in precisions if n not in self.table.by_name]
        if unknown:
            raise KeyError(f"PrecisionProbe: no layer named {unknown[:5]}")
        for param, names in self._shared.items():
            bits = {precisions.get(n, FP32).w_bits for n in names}
            if len(bits) > 1:
                raise ValueError(f"layers {names} share weight '{param}' but were given weight bits {sorted(bits)}")
        for layer in self.table:
            p = precisions.get(layer.name, FP32)
            if layer.weight_param is not None and p.w_bits < 32:
                params[layer.weight_param] = self._weight(layer, p.w_bits)
            sites.extend(self._site(layer.data_var, p.a_bits) if p.a_bits < 32 else self._off)
            if layer.weight_param is None:
                sites.extend(self._site(layer.weight_var, p.w_bits) if p.w_bits < 32 else self._off)
        return list(params.values()) + sites

    def run(self, precisions: Mapping[str, Precision], feeds: list[Feed]) -> list[list[np.ndarray]]:
        """Flattened model outputs for every feed under ``precisions``."""
        assignment = self.assignment(precisions)
        return [assignment.run(feed) for feed in feeds]

    def assignment(self, precisions: Mapping[str, Precision]) -> "ProbeAssignment":
        """The probe set to ``precisions``, run one feed at a time (what
        :func:`tvm_mpq.calibration.calibrate.run_exposed` takes as ``compiled``)."""
        self.runs += 1
        return ProbeAssignment(self, self._compiled.prepare(self.arguments(precisions)))

    def _run_prepared(self, prepared: list, feed: Feed) -> list[np.ndarray]:
        self.graph.check_inputs(feed)
        inputs = [self._tensor(feed[s.name]) for s in self.graph.inputs]
        return self._compiled.run(inputs, prepared)


class ProbeAssignment:
    """One precision assignment of a :class:`PrecisionProbe`: ``run(feed)`` gives the flattened
    outputs (the exposed tensors last)."""

    def __init__(self, probe: PrecisionProbe, prepared: list):
        self._probe, self._prepared = probe, prepared

    def run(self, feed: Feed) -> list[np.ndarray]:
        return self._probe._run_prepared(self._prepared, feed)
