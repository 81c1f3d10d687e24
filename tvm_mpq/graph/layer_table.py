"""The layer table: every MAC op of a stage-A model with a stable name, weight, MACs and topology.

A *layer* is one multiply-accumulate op: ``conv2d`` (incl. depthwise / grouped), ``conv1d``,
``conv2d_transpose`` or ``matmul`` (linear, or activation x activation). Layers are identified
in the Relax graph by the name of the variable their call is bound to (``var``); users see
``name`` (ONNX node name or torch module path, taken from the weight that the op consumes).
Not layers: a MAC no output reads, one on integers, and a one-hot row times a weight (a row
lookup, :mod:`tvm_mpq.graph.one_hot`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant

from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.one_hot import one_hot_codes

MAC_OPS = ("relax.nn.conv2d", "relax.nn.conv1d", "relax.nn.conv2d_transpose", "relax.matmul")
# Ops that only re-lay out a weight; a MAC op's weight is traced back through them.
_WEIGHT_VIEW_OPS = ("relax.permute_dims", "relax.reshape", "relax.astype", "relax.expand_dims")


@dataclass
class Layer:
    """One MAC op.

    ``var`` names the binding of the op in Relax function ``function`` of the stage-A module;
    ``data_var``/``weight_var`` are the Relax names of the op's two operands (the variable or
    parameter they are bound to); ``weight_param`` is the parameter the weight comes from (None
    for activation x activation matmul). ``channel_axis`` is the output-channel axis of the
    weight *operand* (per-channel quantization axis).
    """

    name: str
    kind: str
    var: str
    index: int
    macs: int
    data_var: str
    weight_var: str
    weight_param: str | None
    weight_shape: tuple[int, ...]
    channel_axis: int
    output_shape: tuple[int, ...]
    weight_view: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    function: str = "main"
    """The Relax function of the module that binds ``var``."""
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)

    @property
    def has_constant_weight(self) -> bool:
        return self.weight_param is not None

    def weight_operand(self, params: dict[str, np.ndarray]) -> np.ndarray:
        """The weight as the MAC op sees it: the parameter with ``weight_view`` applied."""
        if self.weight_param is None:
            raise ValueError(f"layer {self.name} has no constant weight")
        value = params[self.weight_param]
        for op, arg in self.weight_view:
            value = np.transpose(value, arg) if op == "permute_dims" else np.reshape(value, arg)
        return value


@dataclass
class LayerTable:
    """MAC layers in topological order, with lookups by stable name and by Relax variable."""

    layers: list[Layer]

    def __post_init__(self) -> None:
        self.by_name = {layer.name: layer for layer in self.layers}
        self.by_var = {layer.var: layer for layer in self.layers}

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def nearest_producer(self, layer: Layer) -> Layer | None:
        """The quantizable producer with the highest topological index (QuantuneV2 Eq. 16's p)."""
        if not layer.producers:
            return None
        return max((self.by_name[p] for p in layer.producers), key=lambda p: p.index)

    def activation_operands(self) -> list[str]:
        """Relax names of every tensor an activation quantizer sits on: each layer's data operand,
        plus the second operand of activation x activation matmuls (sorted, unique)."""
        names = {layer.data_var for layer in self.layers}
        names |= {layer.weight_var for layer in self.layers if layer.weight_param is None}
        return sorted(n for n in names if n)

    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)


def _shape(expr: relax.Expr) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape)


def iter_bindings(func: relax.Function):
    """Every VarBinding of ``func`` in program order."""
    for block in func.body.blocks:
        for binding in block.bindings:
            yield binding


def transpose_conv_kind(attrs) -> str:
    """A ``conv2d_transpose``'s layer kind: ``conv2d_transpose`` (one group, no dilation: the
    kind with an integer kernel), else ``grouped_conv2d_transpose`` / ``dilated_conv2d_transpose``."""
    if int(attrs.groups) != 1:
        return "grouped_conv2d_transpose"
    return "dilated_conv2d_transpose" if any(int(d) != 1 for d in attrs.dilation) else "conv2d_transpose"


def _macs(kind: str, call: relax.Call, out_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> int:
    if kind.endswith("conv2d_transpose"):
        # Each input pixel is scattered over the kernel: in_elems x (O/groups) x KH x KW.
        # weight IOHW = [I, O/groups, KH, KW]
        return math.prod(_shape(call.args[0])) * math.prod(w_shape[1:])
    if kind.endswith("conv2d") or kind.endswith("conv1d"):
        # out elems x (I/groups) x K...: the weight's dims after the first are exactly that.
        return math.prod(out_shape) * math.prod(w_shape[1:])
    return math.prod(out_shape) * w_shape[-2]  # matmul: out elems x K


def build_layer_table(graph: ModelGraph) -> LayerTable:
    """Scan ``graph.mod["main"]`` and list its MAC ops (see module docstring)."""
    definitions, order, raw = _mac_calls(graph.mod["main"])

    def trace_param(expr: relax.Expr) -> tuple[str | None, list[tuple[str, tuple[int, ...]]]]:
        """The parameter behind a weight operand and the view ops from it (param first)."""
        view: list[tuple[str, tuple[int, ...]]] = []
        while True:
            if isinstance(expr, relax.Var) and expr.name in graph.params:
                return expr.name, view[::-1]
            if isinstance(expr, relax.Var) and expr.name in definitions:
                expr = definitions[expr.name]
                continue
            if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name in _WEIGHT_VIEW_OPS:
                name = expr.op.name.removeprefix("relax.")
                if name == "permute_dims":
                    axes = expr.attrs.axes
                    ndim = len(expr.args[0].ty.shape)
                    view.append((name, tuple(int(a) for a in axes) if axes is not None else tuple(range(ndim))[::-1]))
                elif name in ("reshape", "expand_dims"):
                    view.append(("reshape", _shape(expr)))
                expr = expr.args[0]
                continue
            return None, []

    # a MAC on integers is not a layer (``MatMulInteger`` of a model quantized before: its own
    # integer arithmetic, nothing to decide); nor a one-hot row times a weight (a row lookup:
    # :mod:`tvm_mpq.graph.one_hot`)
    raw = [(name, call) for name, call in raw
           if _on_floats(call) and not _one_hot_product(call, definitions, graph.params)]
    mac_vars = {name for name, _ in raw}
    used_names: set[str] = set()
    layers: list[Layer] = []
    for index, (var, call) in enumerate(raw):
        op = call.op.name.removeprefix("relax.").removeprefix("nn.")
        data, weight = call.args[0], call.args[1]
        param, view = trace_param(weight)
        w_shape = _shape(weight)
        out_shape = tuple(int(d) for d in definitions[var].ty.shape) if hasattr(definitions[var], "ty") else ()
        if op == "conv2d":
            groups = int(call.attrs.groups)
            kind = "conv2d" if groups == 1 else ("depthwise_conv2d" if groups == _shape(data)[1] else "grouped_conv2d")
            axis = 0
        elif op == "conv1d":
            kind, axis = "conv1d", 0
        elif op == "conv2d_transpose":
            kind, axis = transpose_conv_kind(call.attrs), 1
        else:
            kind = "dense" if param is not None else "matmul"
            axis = len(w_shape) - 1
        name = _stable_name(graph, param, kind, index, used_names)
        layers.append(Layer(
            name=name, kind=kind, var=var, index=index,
            macs=int(_macs(kind, call, out_shape, w_shape)),
            data_var=data.name if isinstance(data, relax.Var) else "",
            weight_var=weight.name if isinstance(weight, relax.Var) else "",
            weight_param=param, weight_shape=w_shape, channel_axis=axis, output_shape=out_shape,
            weight_view=view,
        ))

    by_var = {layer.var: layer for layer in layers}
    for layer in layers:
        producers = _producers(definitions, layer, mac_vars, graph.params, by_var)
        layer.producers = [by_var[v].name for v in sorted(producers, key=order.__getitem__)]
        for p in layer.producers:
            next(lay for lay in layers if lay.name == p).consumers.append(layer.name)
    return LayerTable(layers)


def model_macs(graph: ModelGraph) -> int:
    """The multiply-accumulates of one run of ``graph``: every MAC op that reaches an output,
    the table's layers and the products it leaves out alike (a ``MatMulInteger`` of a model
    quantized before it arrives, a one-hot row lookup). What a build for many runs costs, where
    :meth:`LayerTable.total_macs` counts what the precision decision covers: traceforge's T5
    encoder has 0.03 G MACs of layers (its attention products) and 1.23 G in all."""
    total = 0
    for _, call in _mac_calls(graph.mod["main"])[2]:
        op = call.op.name.removeprefix("relax.").removeprefix("nn.")
        kind = transpose_conv_kind(call.attrs) if op == "conv2d_transpose" else op
        total += int(_macs(kind, call, _shape(call), _shape(call.args[1])))
    return total


def _mac_calls(func: relax.Function) -> tuple[dict[str, relax.Expr], dict[str, int], list[tuple[str, relax.Call]]]:
    """``func``'s bindings by variable name, each one's place in program order, and its MAC ops
    (:data:`MAC_OPS`) whose result reaches an output, in program order. A MAC no output reads is
    not run: the compile removes it (onnxruntime's dynamically quantized ensembles carry such
    products)."""
    definitions: dict[str, relax.Expr] = {}
    order: dict[str, int] = {}
    calls: list[tuple[str, relax.Call]] = []
    for position, binding in enumerate(iter_bindings(func)):
        name, value = binding.var.name, binding.value
        definitions[name] = value
        order[name] = position
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in MAC_OPS:
            calls.append((name, value))
    reaching = _reaching_outputs(func.body.body, definitions)
    return definitions, order, [(name, call) for name, call in calls if name in reaching]


def _on_floats(call: relax.Call) -> bool:
    """Whether a MAC's data operand is floating point."""
    dtype = str(getattr(getattr(call.args[0], "ty", None), "dtype", "float32"))
    return dtype.startswith("float") or dtype.startswith("bfloat")


def _one_hot_product(call: relax.Call, definitions: dict[str, relax.Expr], params: dict[str, np.ndarray]) -> bool:
    """Whether ``call`` is ``matmul(astype(equal(x, codes)), w)`` with one-hot rows."""
    def bound(expr: relax.Expr) -> relax.Expr:
        while isinstance(expr, relax.Var) and expr.name in definitions:
            expr = definitions[expr.name]
        return expr

    def value(expr: relax.Expr) -> np.ndarray | None:
        if isinstance(expr, relax.Var) and expr.name in params:
            return params[expr.name]
        expr = bound(expr)
        return expr.value.numpy() if isinstance(expr, Constant) else None

    cast = bound(call.args[0])
    if call.op.name != "relax.matmul" or not _is_op(cast, "relax.astype"):
        return False
    equal = bound(cast.args[0])
    if not _is_op(equal, "relax.equal"):
        return False
    weight = tensor_shape(call.args[1])
    return any(one_hot_codes(tensor_shape(x), str(getattr(x.ty, "dtype", "")), value(codes), weight) is not None
               for x, codes in (equal.args, equal.args[::-1]))


def tensor_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    """Static shape of a tensor-typed expression (``None``: not a tensor with a known shape)."""
    try:
        ty = expr.ty
    except Exception:  # noqa: BLE001 - an expression not normalized yet has no type
        return None
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape)
    except (TypeError, ValueError):
        return None


def _is_op(expr: relax.Expr, name: str) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name


def _reaching_outputs(output: relax.Expr, definitions: dict[str, relax.Expr]) -> set[str]:
    """The bound variables the function's output is computed from."""
    reached: set[str] = set()
    stack = _var_operands(output)
    while stack:
        name = stack.pop()
        if name in reached or name not in definitions:
            continue
        reached.add(name)
        stack.extend(_var_operands(definitions[name]))
    return reached


def _stable_name(graph: ModelGraph, param: str | None, kind: str, index: int, used: set[str]) -> str:
    if param is not None:
        base = graph.layer_names.get(param) or param.removesuffix(".weight").removesuffix("_weight")
    else:
        base = f"{kind}_{index}"
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}#{k}"
    used.add(name)
    return name


def _producers(definitions: dict[str, relax.Expr], layer: Layer, mac_vars: set[str],
               params: dict[str, np.ndarray], by_var: dict[str, Layer]) -> set[str]:
    """MAC layers reached backwards from ``layer``'s activation operand(s) through non-MAC ops."""
    starts = [layer.data_var] + ([layer.weight_var] if layer.weight_param is None else [])
    found: set[str] = set()
    seen: set[str] = set()
    stack = [s for s in starts if s]
    while stack:
        name = stack.pop()
        if name in seen or name in params:
            continue
        seen.add(name)
        if name in mac_vars:
            found.add(name)
            continue
        value = definitions.get(name)
        if value is None:
            continue  # a model input
        stack.extend(_var_operands(value))
    return found


def _var_operands(expr: relax.Expr) -> list[str]:
    if isinstance(expr, relax.Var):
        return [expr.name]
    if isinstance(expr, relax.Call):
        return [n for a in expr.args for n in _var_operands(a)]
    if isinstance(expr, relax.Tuple):
        return [n for f in expr.fields for n in _var_operands(f)]
    if isinstance(expr, relax.TupleGetItem):
        return _var_operands(expr.tuple_value)
    return []
