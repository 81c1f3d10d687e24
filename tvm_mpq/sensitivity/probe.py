"""PrecisionProbe: one compiled module of a model in which every layer's precision is set at run time.

Methods that score many precision assignments (Top-1 one layer at a time, Pandey et al.'s phase 1
and Pareto walk) would otherwise compile one simulated model per assignment. The probe compiles
the model once:

* every activation quantizer site (each MAC op's data operand, and the second operand of an
  activation x activation matmul) gets a quantize-dequantize chain whose scale, zero point,
  ``qmax`` and an on/off switch are extra runtime parameters of ``main``; "off" selects the
  fp32 tensor (``where``), so an fp32 layer computes exactly what the fp32 model computes;
* weights are parameters already (stage A detaches them), so a weight bit-width is a swap of the
  parameter's value for its fake-quantized copy (computed with ``quantizers.fake_quant_weight``,
  the same float32 arithmetic as ``SimulateQuantization``).

The arithmetic matches ``relay_passes.SimulateQuantization`` op for op; ``tests/test_methods.py``
checks that a probe run and a SimulateQuantization compile of the same assignment agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import tvm
from tvm import relax

from tvm_mpq.allocation.bops import FP32, Precision
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import Layer, LayerTable
from tvm_mpq.quantization.quantizers import ActQParams, fake_quant_weight
from tvm_mpq.runtime.executor import compile_graph, flatten_outputs
from tvm_mpq.zoo.registry import Feed

QParamsFn = Callable[[str, int], ActQParams]
"""``(relax_var, bits) -> ActQParams``: the calibrated quantizer of an activation tensor."""

_FIELDS = ("s", "zp", "qmax", "on")


@dataclass(frozen=True)
class _Site:
    """One activation quantizer inside a MAC op: ``operand`` 0 (data) or 1 (matmul's B)."""

    layer: str
    tensor: str
    operand: int

    def param_names(self, var: str) -> list[str]:
        """Names of the site's runtime parameters (scale, zero point, qmax, on) in ``main``."""
        return [f"mpq_probe_{var}_{self.operand}_{f}" for f in _FIELDS]


def _scalar(name: str, dtype: str = "float32") -> relax.Var:
    return relax.Var(name, relax.TensorType((), dtype))


@relax.expr_functor.mutator
class _SwitchableQDQ(relax.PyExprMutator):
    """Insert a switchable QDQ chain before every site of every MAC op in ``sites``."""

    def __init__(self, mod: tvm.IRModule, sites: dict[str, list[tuple[_Site, list[relax.Var]]]]):
        super().__init__(mod)
        self.sites = sites

    def _qdq(self, x: relax.Expr, params: list[relax.Var], name: str) -> relax.Expr:
        s, zp, qmax, on = params
        bb = self.builder_
        steps = [
            lambda v: relax.op.divide(v, s),
            relax.op.round,
            lambda v: relax.op.add(v, zp),
            lambda v: relax.op.maximum(v, relax.const(np.float32(0.0))),
            lambda v: relax.op.minimum(v, qmax),
            lambda v: relax.op.subtract(v, zp),
            lambda v: relax.op.multiply(v, s),
            lambda v: relax.op.where(on, v, x),
        ]
        y = x
        for k, step in enumerate(steps):
            y = bb.emit(step(y), f"{name}{k}")
        return y

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        entries = self.sites.get(binding.var.name)
        if entries is None:
            super().visit_var_binding_(binding)
            return
        call = self.visit_expr(binding.value)
        args = list(call.args)
        for site, params in entries:
            args[site.operand] = self._qdq(args[site.operand], params, f"mpq_probe_{binding.var.name}_{site.operand}_")
        new_call = relax.Call(call.op, args, call.attrs, call.ty_args)
        if isinstance(binding.var, relax.DataflowVar):
            new_var = self.builder_.emit(new_call, name_hint=binding.var.name)
        else:
            new_var = self.builder_.emit_output(new_call, name_hint=binding.var.name)
        self.set_var_remap(binding.var, new_var)


def _switchable_module(graph: ModelGraph, table: LayerTable) -> tuple[tvm.IRModule, dict[str, list[str]]]:
    """``graph.mod`` with a switchable QDQ at every site, and the new parameter names per site."""
    sites: dict[str, list[tuple[_Site, list[relax.Var]]]] = {}
    names: dict[str, list[str]] = {}
    extra: list[relax.Var] = []
    for layer in table:
        layer_sites = [_Site(layer.name, layer.data_var, 0)]
        if layer.weight_param is None:
            layer_sites.append(_Site(layer.name, layer.weight_var, 1))
        for site in layer_sites:
            pnames = site.param_names(layer.var)
            pvars = [_scalar(n, "bool" if n.endswith("_on") else "float32") for n in pnames]
            sites.setdefault(layer.var, []).append((site, pvars))
            names[f"{layer.name}:{site.operand}"] = pnames
            extra.extend(pvars)
    mod = relax.transform.Normalize()(graph.mod)
    rewriter = _SwitchableQDQ(mod, sites)
    main = rewriter.visit_expr(mod["main"])
    func = relax.Function(list(main.params) + extra, main.body, ret_ty=main.ret_ty, attrs=main.attrs)
    new_mod = mod.clone()
    new_mod["main"] = func
    return relax.transform.Normalize()(new_mod), names


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

    ``precisions`` maps layer names to :class:`Precision`; layers not named (and ``FP32``
    entries) run in fp32. ``Precision(w, a)``: weights per-channel symmetric at ``w`` bits (the
    B operand of an activation x activation matmul: asymmetric at ``w`` bits), the data operand
    asymmetric at ``a`` bits; ``a >= 32`` leaves activations fp32 (weight-only), ``w >= 32``
    leaves the weight fp32.
    """

    def __init__(self, graph: ModelGraph, table: LayerTable, qparams: QParamsFn):
        self.graph, self.table, self.qparams = graph, table, qparams
        mod, self._site_params = _switchable_module(graph, table)
        self._compiled = compile_graph(graph.with_module(mod))
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
        args = self.arguments(precisions)
        outputs = []
        for feed in feeds:
            self.graph.check_inputs(feed)
            inputs = [self._tensor(feed[s.name]) for s in self.graph.inputs]
            outputs.append(flatten_outputs(self._compiled.vm["main"](*inputs, *args)))
        self.runs += 1
        return outputs
