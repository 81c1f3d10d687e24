"""The precision of a layer, written into the IR: ``R.mpq.precision(x, layer=..., ...)``.

Every MAC op (conv2d / conv1d / conv2d_transpose / matmul) that a precision decision applies to
reads its data operand through one call of the annotation op ``relax.mpq.precision``. The call
returns its input unchanged and carries, as call attributes:

* ``layer``: the layer table's stable name (ONNX node / torch module path);
* ``w_bits`` / ``a_bits``: 32 for fp32, else the weight and activation bit-widths;
* ``act_scale`` / ``act_zero_point``: the data operand's quantizer (asymmetric, ``a_bits``):
  numbers, or for a per-channel quantizer (a depthwise conv's input) tensors, one per channel;
* ``weight_scales``: per output channel of a constant weight (symmetric, ``w_bits``), a tensor;
* ``b_scale`` / ``b_zero_point``: the second operand's quantizer of an activation x activation
  matmul (asymmetric, ``w_bits``).

It sits directly before its layer, so ``mod.script()`` shows the decision next to each
conv/matmul::

    lv3 = R.mpq.precision(lv2, a_bits=8, act_scale=0.0235, act_zero_point=128, layer="conv1",
                          w_bits=8, weight_scales=metadata["ffi.Tensor"][0])
    lv4 = R.nn.conv2d(lv3, metadata["relax.expr.Constant"][0], ...)

Being an ordinary call (pure, type of its input), it survives TVM's rewrites (``FoldConstant``,
``CanonicalizeBindings``, ``DeadCodeElimination``, DPL rewrites that match the MAC op with a
wildcard input) and ``tvm.ir.save_json`` / ``load_json`` (import this module before loading).
Legalized on its own it is the identity, so an annotated module still builds as fp32. The
precision passes (:class:`~relay_passes.lower_to_integer.LowerToInteger`,
:class:`~relay_passes.simulate_quantization.SimulateQuantization`, ...) consume the annotations
and leave none behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np
import tvm
from tvm import relax

from tvm_mpq.graph.layer_table import MAC_OPS
from tvm_mpq.quantization.quantizers import ActQParams, weight_scales

OP_NAME = "relax.mpq.precision"
FP32_BITS = 32
"""``w_bits`` / ``a_bits`` of an operand left in fp32."""


def _register_op() -> tvm.ir.Op:
    tvm.ir.register_op_attr(OP_NAME, "FInferType", lambda call, _bb: call.args[0].ty)
    tvm.ir.register_op_attr(OP_NAME, "FPurity", True)
    tvm.ir.register_op_attr(OP_NAME, "FLegalize", lambda _bb, call: call.args[0])
    return tvm.ir.Op.get(OP_NAME)


PRECISION_OP = _register_op()


@dataclass(frozen=True, eq=False)
class PrecisionAnnotation:
    """One layer's precision as the annotation op carries it (see the module docstring)."""

    layer: str
    w_bits: int = FP32_BITS
    a_bits: int = FP32_BITS
    act: ActQParams | None = None
    weight_scales: np.ndarray | None = None
    weight_act: ActQParams | None = None

    @staticmethod
    def fp32(layer: str) -> "PrecisionAnnotation":
        """``layer`` left in fp32 (the annotation then only names the layer)."""
        return PrecisionAnnotation(layer)

    @property
    def is_fp32(self) -> bool:
        return self.w_bits >= FP32_BITS and self.a_bits >= FP32_BITS

    def as_fp32(self) -> "PrecisionAnnotation":
        """The same layer, fp32."""
        return PrecisionAnnotation.fp32(self.layer)

    def with_weight_scales(self, scales: np.ndarray | None) -> "PrecisionAnnotation":
        return replace(self, weight_scales=None if scales is None else np.asarray(scales, np.float32))

    def describe(self) -> str:
        """``fp32`` or e.g. ``w8a8``."""
        return "fp32" if self.is_fp32 else f"w{self.w_bits}a{self.a_bits}"

    def to_attrs(self) -> tvm.ir.Attrs:
        fields: dict[str, object] = {"layer": self.layer, "w_bits": int(self.w_bits), "a_bits": int(self.a_bits)}
        if self.act is not None and self.act.per_channel:  # one entry per channel, as tensors
            fields.update(act_scale=tvm.runtime.tensor(np.asarray(self.act.scale, np.float64)),
                          act_zero_point=tvm.runtime.tensor(np.asarray(self.act.zero_point, np.int32)))
        elif self.act is not None:
            fields.update(act_scale=float(self.act.scale), act_zero_point=int(self.act.zero_point))
        if self.weight_scales is not None:
            fields["weight_scales"] = tvm.runtime.tensor(np.ascontiguousarray(self.weight_scales, np.float32))
        if self.weight_act is not None:
            fields.update(b_scale=float(self.weight_act.scale), b_zero_point=int(self.weight_act.zero_point))
        return tvm.ir.make_node("ir.DictAttrs", **fields)

    @staticmethod
    def from_attrs(attrs: tvm.ir.Attrs) -> "PrecisionAnnotation":
        w_bits, a_bits = int(attrs["w_bits"]), int(attrs["a_bits"])
        act = _act_from_attrs(attrs["act_scale"], attrs["act_zero_point"], a_bits) if "act_scale" in attrs else None
        scales = attrs["weight_scales"].numpy().astype(np.float32) if "weight_scales" in attrs else None
        weight_act = (ActQParams(float(attrs["b_scale"]), int(attrs["b_zero_point"]), w_bits)
                      if "b_scale" in attrs else None)
        return PrecisionAnnotation(str(attrs["layer"]), w_bits, a_bits, act, scales, weight_act)


def _act_from_attrs(scale: object, zero_point: object, bits: int) -> ActQParams:
    if hasattr(scale, "numpy"):  # per channel
        return ActQParams(tuple(float(v) for v in scale.numpy()), tuple(int(v) for v in zero_point.numpy()), bits)
    return ActQParams(float(scale), int(zero_point), bits)


def annotate(data: relax.Expr, annotation: PrecisionAnnotation) -> relax.Call:
    """``data`` wrapped in the annotation op (the expression a MAC op reads as its data)."""
    return relax.Call(PRECISION_OP, [data], annotation.to_attrs())


def read_annotation(expr: relax.Expr) -> PrecisionAnnotation | None:
    """The annotation ``expr`` carries, if it is a call of the annotation op."""
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.same_as(PRECISION_OP):
        return PrecisionAnnotation.from_attrs(expr.attrs)
    return None


def reannotate_for_weight(data: relax.Expr, weight: np.ndarray, channel_axis: int,
                          var2val: Mapping[relax.Var, relax.Expr] | None = None) -> relax.Expr:
    """The data operand for a MAC op whose weight a pass replaces by ``weight``.

    An annotation's weight scales are those of the weight the layer runs with, so a pass that
    changes a weight (folding a batch-norm or a scale into it) passes the layer's data operand
    through here: when it is annotated with weight scales (``data`` the annotation call, or a
    variable bound to one in ``var2val``), the result is the same annotation with the scales of
    ``weight``; otherwise ``data`` itself."""
    bound = var2val.get(data, data) if var2val is not None and isinstance(data, relax.Var) else data
    annotation = read_annotation(bound)
    if annotation is None or annotation.weight_scales is None:
        return data
    return annotate(bound.args[0], annotation.with_weight_scales(weight_scales(weight, annotation.w_bits, channel_axis)))


def is_mac(expr: relax.Expr) -> bool:
    """True for a call of a MAC op (the layer table's ops)."""
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name in MAC_OPS


def op_name(expr: relax.Expr | None) -> str:
    """The name of the Relax op ``expr`` calls (``"relax.add"``), or ``""`` for anything else."""
    return expr.op.name if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) else ""


def bound_constant(expr: relax.Expr, var2val: Mapping[relax.Var, relax.Expr]) -> np.ndarray | None:
    """The value of ``expr`` when it is a constant, directly or through variables bound in
    ``var2val`` (a MAC op's weight, a bias after ``BindParams``); None otherwise."""
    while isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    value = getattr(expr, "value", None)
    return value.numpy() if hasattr(value, "numpy") else None


def weight_channel_axis(call: relax.Call) -> int:
    """The output-channel axis of a MAC op's weight operand (its per-channel scales' axis)."""
    if call.op.name == "relax.matmul":
        return len(call.args[1].ty.shape) - 1
    return str(call.attrs.kernel_layout).index("O")


def relax_functions(mod: tvm.IRModule) -> Iterator[tuple[tvm.ir.GlobalVar, relax.Function]]:
    """Every Relax function of ``mod`` that is not a fused primitive."""
    for gvar, func in mod.functions.items():
        if isinstance(func, relax.Function) and not (func.attrs is not None and func.attrs.get("Primitive")):
            yield gvar, func


def mutate_every_function(mod: tvm.IRModule, make_mutator, count, wants=None) -> tuple[tvm.IRModule, int]:
    """``mod`` with every Relax function (:func:`relax_functions`; only those ``wants(func)``
    accepts, when given) re-emitted by a fresh ``make_mutator(module so far, func)``, kept where
    ``count(mutator)`` (what it rewrote) is above 0, and the summed count. When anything changed,
    bindings left unused are removed (``DeadCodeElimination``): the body of a module pass whose
    rewrites need a ``PyExprMutator``'s builder."""
    out, total = mod, 0
    for gvar, func in relax_functions(mod):
        if wants is not None and not wants(func):
            continue
        mutator = make_mutator(out, func)
        new_func = mutator.visit_expr(func)
        if count(mutator):
            total += count(mutator)
            mutator.builder_.update_func(gvar, new_func)
            out = mutator.builder_.get()
    return (relax.transform.DeadCodeElimination()(out) if total else mod), total


@relax.expr_functor.mutator
class _CallRewriter(relax.PyExprMutator):
    """Each call, its arguments rewritten first, replaced by what ``rewrite(builder, call)``
    returns for it (``None``: kept); ``n_rewritten`` counts the replacements."""

    def __init__(self, mod: tvm.IRModule, rewrite: Callable[[relax.BlockBuilder, relax.Call], relax.Expr | None]) -> None:
        super().__init__(mod)
        self.rewrite_call = rewrite
        self.n_rewritten = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        new = self.rewrite_call(self.builder_, call)
        if new is None:
            return call
        self.n_rewritten += 1
        return new


def rewrite_calls(mod: tvm.IRModule, rewrite: Callable[[relax.BlockBuilder, relax.Call], relax.Expr | None]) -> tvm.IRModule:
    """``mod`` with every call of every Relax function that ``rewrite(builder, call)`` returns an
    expression for replaced by it (arguments first; the builder emits what the replacement needs,
    e.g. ``builder.call_te``), through :func:`mutate_every_function`: the body of a module pass that
    swaps single ops for TE computes."""
    return mutate_every_function(mod, lambda m, _f: _CallRewriter(m, rewrite), lambda r: r.n_rewritten)[0]


def rewrite_every_function(mod: tvm.IRModule, *rules: tuple) -> tvm.IRModule:
    """``mod`` with each ``(pattern, rewriter)`` of ``rules`` applied, in turn, by
    ``relax.dpl.rewrite_call`` to every Relax function (:func:`relax_functions`): the body of a
    module pass whose rewrites are local to one matched call. Each rewriter is handed calls only:
    after a rewriter keeps a call as it is, ``rewrite_call`` may offer the variable bound to it
    (the pattern matches through the binding), which is kept as it is here."""
    out = mod.clone()
    for gvar, func in relax_functions(mod):
        for pattern, rewriter in rules:
            func = relax.dpl.rewrite_call(pattern, _calls_only(rewriter), func)
        out[gvar] = func
    return out


def _calls_only(rewriter: Callable) -> Callable:
    def rewrite(expr: relax.Expr, matches: Mapping) -> relax.Expr:
        return rewriter(expr, matches) if isinstance(expr, relax.Call) else expr

    return rewrite


def annotated_layers(func: relax.Function) -> Iterator[tuple[relax.VarBinding, PrecisionAnnotation]]:
    """Each MAC binding of ``func`` whose data operand is an annotation, with that annotation."""
    var2val = relax.analysis.get_var2val(func)
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if is_mac(value) and isinstance(value.args[0], relax.Var):
                annotation = read_annotation(var2val.get(value.args[0]))
                if annotation is not None:
                    yield binding, annotation


def layer_annotations(mod: tvm.IRModule) -> dict[str, PrecisionAnnotation]:
    """Every annotated layer of ``mod`` (all Relax functions), by stable name."""
    return {annotation.layer: annotation for _, func in relax_functions(mod)
            for _, annotation in annotated_layers(func)}


@relax.expr_functor.mutator
class _MapAnnotations(relax.PyExprMutator):
    def __init__(self, fn: Callable[[PrecisionAnnotation], PrecisionAnnotation]):
        super().__init__()
        self.fn = fn

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        new = super().visit_call_(call)
        annotation = read_annotation(new)
        return new if annotation is None else annotate(new.args[0], self.fn(annotation))


def map_annotations(func: relax.Function,
                    fn: Callable[[PrecisionAnnotation], PrecisionAnnotation]) -> relax.Function:
    """``func`` with each precision annotation replaced by ``fn(annotation)``: the body of a
    pass that edits precisions, e.g. ``map_annotations(f, lambda a: a.as_fp32() if a.layer ==
    "conv1" else a)`` keeps layer conv1 in fp32."""
    return _MapAnnotations(fn).visit_expr(func)


@relax.expr_functor.mutator
class _Detach(relax.PyExprMutator):
    """Drop every annotation call (its uses read its input) and remember, per MAC binding of
    the new function, the annotation its data operand carried."""

    def __init__(self, mod: tvm.IRModule | None):
        super().__init__(mod)
        self.pending: dict[relax.Var, PrecisionAnnotation] = {}
        self.by_mac: dict[relax.Var, PrecisionAnnotation] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        annotation = read_annotation(value)
        if annotation is not None:
            source = self.visit_expr(value.args[0])
            if not isinstance(source, relax.Var):
                source = self._emit_like(binding.var, source)
            self.pending[binding.var] = annotation
            self.set_var_remap(binding.var, source)
            return
        if is_mac(value) and isinstance(value.args[0], relax.Var) and value.args[0] in self.pending:
            new_var = self._emit_like(binding.var, self.visit_expr(value))
            self.set_var_remap(binding.var, new_var)
            self.by_mac[new_var] = self.pending[value.args[0]]
            return
        super().visit_var_binding_(binding)

    def _emit_like(self, var: relax.Var, value: relax.Expr) -> relax.Var:
        if isinstance(var, relax.DataflowVar):
            return self.builder_.emit(value, name_hint=var.name)
        return self.builder_.emit_output(value, name_hint=var.name)


def detach_annotations(func: relax.Function,
                       mod: tvm.IRModule | None = None) -> tuple[relax.Function, dict[relax.Var, PrecisionAnnotation]]:
    """``func`` without annotation calls, and the annotation of each MAC binding (keyed by the
    binding's variable in the returned function; bindings keep their names)."""
    detach = _Detach(mod)
    new_func = detach.visit_expr(func)
    return new_func, detach.by_mac


@relax.transform.function_pass(opt_level=0, name="RemovePrecisionAnnotations")
class RemovePrecisionAnnotations:
    """Drop every precision annotation (each reader reads the annotated tensor itself): the
    module as it was before :class:`~relay_passes.annotate_precision.AnnotatePrecision`."""

    def transform_function(self, func: relax.Function, mod: tvm.IRModule,
                           _ctx: tvm.transform.PassContext) -> relax.Function:
        if func.attrs is not None and func.attrs.get("Primitive"):
            return func
        return detach_annotations(func, mod)[0]
