"""LowerToInteger: the precision pass. Rewrites the layers annotated int8 into integer form.

Input: a Relax module whose MAC ops carry precision annotations
(:class:`~relay_passes.annotate_precision.AnnotatePrecision`) and whose weights are bound
constants (after ``BindParams``; at stage C also after
:class:`~relay_passes.fold_batch_norm.FoldBatchNorm` and ``FoldConstant``). Layers annotated
fp32 and every op around them are left exactly as they are; every annotation is consumed.

Each Relax variable is held in the form its consumers need, decided lazily:

* an int8 MAC op takes its data operand as uint8 codes at the layer's activation quantizer,
  its weight as int8 per-channel codes at the annotation's weight scales, and accumulates in
  int32 (exact zero-point correction; padding by the code of 0.0); a matmul of two activations
  takes its second operand as codes too, at the annotation's ``b`` quantizer (per tensor);
* a bias add right after it folds into the int32 accumulator;
* elementwise ops after it (relu / clip / PReLU's greater-multiply-where / residual add ...)
  form the group's *epilogue*, computed on the rescaled accumulator inside the same fused
  kernel; the group is quantized once, at the quantizer of the next int8 consumer (QuantuneV2
  Eq. 15: the relu's output scale), so conv+bias+relu(+add) is one group with one requantize;
* layout ops that commute with quantization (max-pool, pad with 0, nearest-neighbour resize,
  reshape, permute, flatten, squeeze, expand-dims) run on uint8 codes, taking the quantizer of
  the int8 layer they feed (a per-channel quantizer, a depthwise conv's input, only through
  max-pool, resizes and spatial pads), or of their source when that is stored as codes;
* a split (channel groups, YOLO's C2f) runs on codes at the quantizer of the int8 layer one of
  its pieces feeds; the other pieces are requantized from them where they need another;
* a concat whose result feeds an int8 layer concatenates codes at that layer's quantizer: each
  input is requantized to it in its producer's epilogue (a single-use input, through its
  layout ops) or from the codes it is stored at;
* consecutive int8 groups pass uint8 tensors; a quantize is emitted only where an fp32 tensor
  enters an int8 layer and a dequantize only where an integer result leaves for an fp32 op.

``fuse=False`` lowers per layer instead (quantize input, integer op, dequantize output;
QuantuneV2's stage A): the baseline whose Q/DQ count ``n_qdq`` the fused form lowers.
``simulate=True`` emits the same quantizers as float32 quantize-dequantize (the reference the
integer model is checked against). What a run emitted is written on each function it lowered
(attribute :data:`LOWERING_ATTR`; :func:`lowering_stats` sums a module's). An annotation the
integer kernels cannot honour is a one-line MpqError naming the layer. Visits every Relax
function; usable in a ``tvm.transform.Sequential`` under a ``PassContext``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import tvm
from tvm import relax

from relay_passes.convert_layout import tensor_shape
from relay_passes.integer_support import ATTENTION_KIND, integer_problem
from relay_passes.precision_annotation import (PrecisionAnnotation, bound_constant, detach_annotations,
                                               relax_functions, weight_channel_axis)
from relay_passes.quantized_arith import Accumulator, FakeQuantArith, IntegerArith
from tvm_mpq.errors import MpqError
from tvm_mpq.graph.layer_table import transpose_conv_kind
from tvm_mpq.quantization.quantizers import ActQParams, broadcast_scales, weight_scales

# Ops whose result depends elementwise on their inputs: they join the epilogue of an int8 group.
EPILOGUE_OPS = frozenset(f"relax.{n}" for n in (
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "clip", "nn.relu", "nn.leakyrelu",
    "nn.prelu", "nn.silu", "nn.gelu", "sigmoid", "tanh", "where", "greater", "greater_equal", "less",
    "less_equal", "negative", "exp", "astype"))
# Ops that commute with per-tensor quantization: run them on uint8 codes (a pad only with 0.0, a
# resize only nearest-neighbour: :func:`is_code_layout`).
LAYOUT_OPS = frozenset(f"relax.{n}" for n in (
    "nn.max_pool2d", "nn.max_pool1d", "nn.pad", "image.resize2d", "reshape", "permute_dims", "flatten", "squeeze",
    "expand_dims", "repeat", "tile", "broadcast_to"))
LOWERING_ATTR = "mpq_lowering"
"""Function attribute: the :class:`LoweringStats` counts of the function's lowering."""
BORDERS_ATTR = "mpq_borders"
"""Function attribute: every quantize / dequantize the lowering emitted, as :class:`Border` maps."""


def check_weight_grid(layer: str, weight: np.ndarray, scales: np.ndarray, w_bits: int, axis: int) -> None:
    """MpqError when ``scales`` put ``layer``'s weight far off its ``w_bits`` grid: more than
    twice the largest code (scales made for another bit width, e.g. a config's 8-bit scales kept
    when its ``w_bits`` was edited to 3, would clip every weight to a few codes and the outputs
    come out many times too small, with no error) or not finite."""
    qmax = 2 ** (w_bits - 1) - 1
    steps = np.abs(weight.astype(np.float64) / broadcast_scales(np.asarray(scales, np.float64), weight.ndim, axis))
    worst = float(steps.max()) if steps.size else 0.0
    if not np.isfinite(worst):
        raise MpqError(f"layer '{layer}': its weight or weight scales are not finite")
    if worst > 2 * qmax + 1:
        raise MpqError(f"layer '{layer}': its weight scales put weights {worst:.0f} steps from 0, but w{w_bits} "
                       f"codes reach {qmax}: scales made for another bit width? drop \"weight_scales\" from the "
                       "config (they are computed for its w_bits) or rerun `tvm-mpq analyze`")


@dataclass(frozen=True)
class Border:
    """One quantize or dequantize left in a lowered model, and the op that forced it.

    ``kind``: ``quantize`` (an fp32 tensor enters an int8 layer) or ``dequantize`` (an integer
    result leaves for an fp32 op). ``tensor``: the source function's variable. ``op``: the op
    with no integer form on the fp32 side: the producer of a quantized tensor (``input`` for a
    model input, ``constant``), the consumer of a dequantized one (``output`` when the tensor
    is a model output)."""

    kind: str
    tensor: str
    op: str

    def to_attr(self) -> dict[str, str]:
        return {"kind": self.kind, "tensor": self.tensor, "op": self.op}


@dataclass
class LoweringStats:
    """What a lowering emitted. ``n_qdq = n_quantize + n_dequantize``: tensors that cross an
    fp32 <-> integer border; ``n_requantize``: integer -> integer rescales between groups."""

    n_layers: int = 0
    n_quantize: int = 0
    n_dequantize: int = 0
    n_requantize: int = 0
    n_bias_folded: int = 0
    n_layout_on_int: int = 0

    @property
    def n_qdq(self) -> int:
        return self.n_quantize + self.n_dequantize

    def to_attr(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def add(self, attr) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + int(attr[f.name]))


def lowering_borders(mod: tvm.IRModule) -> list[Border]:
    """The :class:`Border` s :class:`LowerToInteger` wrote on the functions of ``mod``."""
    borders: list[Border] = []
    for _, func in relax_functions(mod):
        if func.attrs is not None and BORDERS_ATTR in func.attrs:
            borders += [Border(str(b["kind"]), str(b["tensor"]), str(b["op"])) for b in func.attrs[BORDERS_ATTR]]
    return borders


def lowering_stats(mod: tvm.IRModule) -> LoweringStats:
    """The counts :class:`LowerToInteger` wrote on the functions of ``mod``, summed."""
    total = LoweringStats()
    for _, func in relax_functions(mod):
        if func.attrs is not None and LOWERING_ATTR in func.attrs:
            total.add(func.attrs[LOWERING_ATTR])
    return total


@dataclass
class LoweringTrace:
    """Filled by :class:`LowerToInteger` when the caller passes one: every quantized tensor,
    ``"<source var>@<quantizer>"`` -> (emitted binding name, quantizer). The integer and the
    simulated lowering of one annotated module produce the same keys (the layer-by-layer
    agreement check pairs them)."""

    quantized: dict[str, tuple[str, ActQParams]] = field(default_factory=dict)


@dataclass
class _Forms:
    """The forms a variable of the source function is available in, in the new function."""

    floats: relax.Expr | None = None      # fp32 value
    float_from_int: bool = False          # that fp32 value is an integer group's epilogue
    float_counted: bool = False           # its materialization was counted as a dequantize
    ints: dict[ActQParams, relax.Expr] = field(default_factory=dict)
    acc: Accumulator | None = None
    from_codes: relax.Expr | None = None  # fp32 read back from the stored uint8 codes


def _op_name(value: relax.Expr | None) -> str:
    """The op a border names: a Relax op, or for ``call_tir`` the PrimFunc it calls (a frontend's
    TE-built op such as ``call_tir(hardswish)``)."""
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        name = value.op.name.removeprefix("relax.")
        if name == "call_tir" and isinstance(value.args[0], relax.GlobalVar):
            return f"call_tir({value.args[0].name_hint})"
        return name
    return type(value).__name__


def is_zero_pad(call: relax.Call) -> bool:
    """True unless ``call`` is a pad with a non-zero value or a non-constant mode (a layout op
    that codes can pass through only when it pads with the code of 0.0)."""
    return call.op.name != "relax.nn.pad" or (float(call.attrs.pad_value) == 0.0 and call.attrs.pad_mode == "constant")


def is_code_layout(value: relax.Expr | None) -> bool:
    """True for a call of a :data:`LAYOUT_OPS` op that commutes exactly with quantization: a pad
    only with 0.0 (:func:`is_zero_pad`), a resize only nearest-neighbour (a gather; not
    ``tf_crop_and_resize``, which writes an extrapolation value)."""
    if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in LAYOUT_OPS):
        return False
    if value.op.name == "relax.image.resize2d":
        return (str(value.attrs.method) == "nearest_neighbor"
                and str(value.attrs.coordinate_transformation_mode) != "tf_crop_and_resize")
    return is_zero_pad(value)


def code_layout_source(value: relax.Expr | None, var2val: dict) -> relax.Var | None:
    """The tensor a layout op that runs on codes reads (:func:`is_code_layout`; for an item of a
    split, the split's input), or None for anything else."""
    if isinstance(value, relax.TupleGetItem) and isinstance(value.tuple_value, relax.Var):
        value = var2val.get(value.tuple_value)
        if not _is_split(value):
            return None
    elif not is_code_layout(value):
        return None
    return value.args[0] if isinstance(value.args[0], relax.Var) else None


def _is_split(value: relax.Expr | None) -> bool:
    return _op_name(value) == "split"


def keeps_channels(call: relax.Call) -> bool:
    """True for a layout op that leaves every value in its channel (axis 1): max-pooling, a
    resize, and a pad of the spatial axes only. A per-channel quantizer passes only through these."""
    if call.op.name in ("relax.nn.max_pool2d", "relax.nn.max_pool1d", "relax.image.resize2d"):
        return str(call.attrs.layout) in ("NCHW", "NCW")
    return call.op.name == "relax.nn.pad" and not any(int(p) for p in list(call.attrs.pad_width)[:4])


def _per_channel_problem(call: relax.Call, annotation: PrecisionAnnotation) -> str | None:
    """Why ``call`` cannot read its data per channel at ``annotation.act`` (None when it can: an
    NCHW depthwise conv whose input has one quantizer channel per channel)."""
    channels = annotation.act.channels
    attrs = call.attrs
    shape = tensor_shape(call.args[0])
    in_channels = shape[1] if shape is not None and len(shape) == 4 else None
    if call.op.name != "relax.nn.conv2d" or str(attrs.data_layout) != "NCHW" or in_channels is None \
            or int(attrs.groups) != in_channels:
        return (f"layer '{annotation.layer}': a per-channel activation quantizer is for the input of an NCHW "
                f"depthwise conv only")
    if channels != in_channels:
        return f"layer '{annotation.layer}': {channels} activation quantizer channels for {in_channels} input channels"
    return None


@relax.expr_functor.mutator
class IntegerLowering(relax.PyExprMutator):
    """The rewriter behind :class:`LowerToInteger` (one function without annotations at a time,
    :func:`~relay_passes.precision_annotation.detach_annotations`): :meth:`prepare` finds the
    int8 layers and the quantizer each tensor is stored at, visiting the function rewrites it.
    Public so that ``tvm_mpq.export`` reads the per-layer decisions (which tensors stay integer,
    which biases fold) from the compiler's own lowering, never a re-implementation."""

    def __init__(self, mod: tvm.IRModule, annotations: dict[relax.Var, PrecisionAnnotation],
                 arith: IntegerArith | FakeQuantArith, fuse: bool):
        super().__init__(mod)
        self.annotations = annotations
        self.arith = arith
        self.fuse = fuse
        self.forms: dict[relax.Var, _Forms] = {}
        self.var2val: dict = {}
        self.targets: dict[relax.Var, ActQParams] = {}
        self.stats = LoweringStats()
        self.quantized: dict[str, tuple[str, ActQParams]] = {}
        self.int8: dict[relax.Var, PrecisionAnnotation] = {}
        self.borders: list[Border] = []
        self.users: dict[relax.Var, list[relax.Var]] = {}
        self.split_qp: dict[relax.Var, ActQParams] = {}  # a split run on codes -> their quantizer
        self.split_codes: dict[relax.Var, relax.Var] = {}  # its emitted split of codes
        self._consumer = "output"  # the op being visited that reads fp32 (names a dequantize border)
        self._uid = 0

    # -- set-up ------------------------------------------------------------------------------
    def prepare(self, func: relax.Function) -> None:
        """Check every int8 annotation (MpqError naming the first layer the integer kernels
        cannot run), find each int8 layer's data operand and walk its quantizer back through
        layout ops."""
        self.var2val = relax.analysis.get_var2val(func)
        bindings = [b for block in func.body.blocks for b in block.bindings]
        for binding in bindings:
            for used in relax.analysis.free_vars(binding.value) if not isinstance(binding.value, relax.Var) \
                    else [binding.value]:
                self.users.setdefault(used, []).append(binding.var)
        for binding in bindings:
            annotation = self.annotations.get(binding.var)
            if annotation is not None and not annotation.is_fp32:
                self._check(binding.value, annotation)
                self.int8[binding.var] = annotation
        if not self.fuse:
            return
        for binding in bindings:
            annotation = self.int8.get(binding.var)
            if annotation is not None and isinstance(binding.value.args[0], relax.Var):
                self.targets.setdefault(binding.value.args[0], annotation.act)
            if annotation is not None and annotation.weight_act is not None and isinstance(binding.value.args[1], relax.Var):
                self.targets.setdefault(binding.value.args[1], annotation.weight_act)
        concat_chains: set[relax.Var] = set()
        for binding in reversed(bindings):
            value = binding.value
            qp = self.targets.get(binding.var)
            if qp is not None and self._is_concat(value) and not qp.per_channel:
                for tensor in value.args[0].fields:
                    concat_chains |= self._mark_concat_input(tensor, binding.var, qp)
            if qp is None or binding.var in concat_chains or not self._runs_on_codes(value, qp):
                continue
            src = value.args[0]
            if isinstance(src, relax.Var) and src not in self.targets:
                self.targets[src] = qp
        for binding in bindings:
            self._plan_split(binding, concat_chains)
        for binding in bindings:  # a layout op on a tensor stored as codes runs on them
            src = binding.value.args[0] if isinstance(binding.value, relax.Call) and binding.value.args else None
            qp = self.targets.get(src) if isinstance(src, relax.Var) else None
            if qp is not None and isinstance(binding.var, relax.DataflowVar) and binding.var not in self.targets \
                    and self._runs_on_codes(binding.value, qp):
                self.targets[binding.var] = qp

    def _plan_split(self, binding: relax.VarBinding, concat_chains: set[relax.Var]) -> None:
        """Run a split on codes when its pieces that feed int8 layers (through layout ops) want one
        quantizer, or its input is already stored as codes: the input is stored at it, every
        piece read from it."""
        value = binding.value
        items = self.users.get(binding.var, [])
        if not (_is_split(value) and isinstance(value.args[0], relax.Var) and isinstance(binding.var, relax.DataflowVar)
                and items and all(isinstance(i, relax.DataflowVar) and isinstance(self.var2val.get(i), relax.TupleGetItem)
                                  for i in items)):
            return
        src = value.args[0]
        wanted = {self.targets[i] for i in items if i in self.targets and i not in concat_chains}
        qp = self.targets.get(src)
        if qp is None and len(wanted) == 1:
            qp = next(iter(wanted))
        if qp is None or qp.per_channel:
            return
        self.targets.setdefault(src, qp)
        self.split_qp[binding.var] = qp
        for item in items:
            self.targets.setdefault(item, qp)

    def _runs_on_codes(self, value: relax.Expr, qp: ActQParams) -> bool:
        """A layout op that can run on codes of ``qp`` (per channel: one that keeps channels)."""
        return self._is_layout_op(value) and (not qp.per_channel or keeps_channels(value))

    @staticmethod
    def _is_concat(value: relax.Expr) -> bool:
        return _op_name(value) == "concat" and isinstance(value.args[0], relax.Tuple)

    def _mark_concat_input(self, tensor: relax.Expr, concat: relax.Var, qp: ActQParams) -> set[relax.Var]:
        """Store a concat input at the concat's quantizer ``qp`` when nothing but the concat reads
        it, directly or through layout ops that run on codes (YOLO's SPPF: a tensor, its max-pool,
        the max-pool of that ..., all concatenated): the input, those layout ops and the ones it
        comes through (its producer then writes codes at ``qp``; the layout ops run on them; the
        values are the ones the concat's quantizer gives). Not when the chain starts at a tensor
        already stored as codes: the concat requantizes those codes (:meth:`_concat_on_int`)."""
        marked: set[relax.Var] = set()
        while isinstance(tensor, relax.DataflowVar) and tensor not in self.targets:
            users = self._only_feeds(tensor, concat, qp)
            if users is None:
                break
            marked |= {tensor, *users}
            value = self.var2val.get(tensor)
            if not (self._runs_on_codes(value, qp) and isinstance(value.args[0], relax.Var)):
                tensor = None
                break
            tensor = value.args[0]
        if tensor is not None and tensor in self.targets:
            return set()
        for var in marked:
            self.targets[var] = qp
        return marked

    def _only_feeds(self, tensor: relax.Var, sink: relax.Var, qp: ActQParams) -> set[relax.Var] | None:
        """The layout ops through which every use of ``tensor`` reaches ``sink`` (None: some use
        does not, or is stored at a quantizer already)."""
        through: set[relax.Var] = set()
        for user in self.users.get(tensor, []):
            if user.same_as(sink):
                continue
            value = self.var2val.get(user)
            if user in self.targets or not isinstance(user, relax.DataflowVar) or not self._runs_on_codes(value, qp) \
                    or not value.args[0].same_as(tensor):
                return None
            further = self._only_feeds(user, sink, qp)
            if further is None:
                return None
            through |= {user, *further}
        return through

    def _check(self, call: relax.Call, annotation: PrecisionAnnotation) -> None:
        weight = bound_constant(call.args[1], self.var2val)
        kind = call.op.name.removeprefix("relax.").removeprefix("nn.")
        if call.op.name == "relax.matmul":
            kind = "dense" if weight is not None else "matmul"
        elif call.op.name == "relax.nn.conv2d_transpose":
            kind = transpose_conv_kind(call.attrs)
        problem = integer_problem(annotation.layer, kind, annotation.w_bits, annotation.a_bits,
                                  annotation.act is not None, annotation.weight_act is not None)
        if problem is None and kind == ATTENTION_KIND:
            return  # two activations: both read as codes, no weight to check
        if problem is None and weight is None:
            problem = f"layer '{annotation.layer}': the weight is not a constant (bind the parameters first)"
        scales = annotation.weight_scales
        if problem is None and scales is not None and scales.size != weight.shape[weight_channel_axis(call)]:
            problem = (f"layer '{annotation.layer}': {scales.size} weight scales for "
                       f"{weight.shape[weight_channel_axis(call)]} output channels")
        if problem is None and annotation.act is not None and annotation.act.per_channel:
            problem = _per_channel_problem(call, annotation)
        if problem is not None:
            raise MpqError(problem)
        if scales is not None:  # (before any rewriting: an error mid-rewrite leaves TVM's builder talking)
            check_weight_grid(annotation.layer, weight, scales, annotation.w_bits, weight_channel_axis(call))

    @staticmethod
    def _is_layout_op(value: relax.Expr) -> bool:
        return is_code_layout(value)

    def _codes_ready(self, src: relax.Expr) -> bool:
        """A layout op runs on codes when its source is an integer result or a model input (the
        input is quantized before the op: the same size, one border either way)."""
        return isinstance(src, relax.Var) and (src in self.forms or src not in self.var2val)

    def _emit(self, expr: relax.Expr, name: str) -> relax.Var:
        self._uid += 1
        return self.builder_.emit(expr, f"mpq{self._uid}_{name}")

    # -- forms ---------------------------------------------------------------------------------
    def _raw_float(self, var: relax.Var, forms: _Forms) -> relax.Expr:
        """The producer's value of ``var`` in fp32: an epilogue, the rescaled accumulator, or
        (when only codes exist) their dequantization."""
        if forms.floats is None:
            if forms.acc is not None:
                forms.floats = self.arith.acc_to_float(self._emit, forms.acc, f"{var.name}_f")
            else:
                qp, q = next(iter(forms.ints.items()))
                forms.floats = self.arith.to_float(self._emit, q, qp, f"{var.name}_f")
            forms.float_from_int = True
        return forms.floats

    def _float(self, var: relax.Expr, materialize: bool) -> relax.Expr:
        """``var`` as its consumers read it in fp32. ``materialize``: an fp32 op outside any int8
        group reads it (a dequantize border). A tensor that also feeds an int8 layer is stored
        once, as uint8 codes: every other consumer reads those codes (dequantized in its own
        kernel), so the producing group writes only uint8."""
        forms = self.forms.get(var) if isinstance(var, relax.Var) else None
        if forms is None:
            return self.visit_expr(var)
        if forms.floats is not None and not forms.float_from_int:
            return forms.floats  # a plain fp32 tensor
        qp = self.targets.get(var)
        if qp is not None:
            if forms.from_codes is None:
                forms.from_codes = self.arith.to_float(self._emit, self._int(var, qp), qp, f"{var.name}_dq")
            value = forms.from_codes
        else:
            value = self._raw_float(var, forms)
        if materialize and not forms.float_counted:
            forms.float_counted = True
            self.stats.n_dequantize += 1
            self.borders.append(Border("dequantize", var.name, self._consumer))
        return value

    def _int(self, var: relax.Expr, qp: ActQParams) -> relax.Expr:
        """``var`` as codes of quantizer ``qp`` (quantize, requantize or reuse)."""
        if not isinstance(var, relax.Var):
            self.stats.n_quantize += 1
            self.borders.append(Border("quantize", "constant", "constant"))
            return self.arith.quantize(self._emit, self.visit_expr(var), qp, "const_q")
        forms = self.forms.get(var)
        if forms is None:  # a plain fp32 tensor
            forms = self.forms[var] = _Forms(floats=self.visit_expr(var))
        if qp in forms.ints:
            return forms.ints[qp]
        if forms.floats is not None and not forms.float_from_int:
            q = self.arith.quantize(self._emit, forms.floats, qp, f"{var.name}_q")
            self.stats.n_quantize += 1
            self.borders.append(Border("quantize", var.name, self._producer(var)))
        elif forms.ints and forms.acc is None and forms.floats is None:
            src_qp, src = next(iter(forms.ints.items()))
            q = self.arith.rescale(self._emit, src, src_qp, qp, f"{var.name}_rq")
            self.stats.n_requantize += 1
        else:  # an int8 group's accumulator / epilogue: its one requantize
            q = self.arith.quantize(self._emit, self._raw_float(var, forms), qp, f"{var.name}_rq")
            self.stats.n_requantize += 1
        forms.ints[qp] = q
        self._record(var, qp, q)
        return q

    def _producer(self, var: relax.Var) -> str:
        """The op with no integer form that computed ``var`` (``input`` for a model input),
        looking back through layout ops (``"nn.avg_pool2d (then reshape)"``)."""
        chain: list[str] = []
        value = self.var2val.get(var)
        while self._is_layout_op(value) and isinstance(value.args[0], relax.Var):
            chain.append(_op_name(value))
            value = self.var2val.get(value.args[0])
        name = "input" if value is None else _op_name(value)
        return name + (f" (then {', '.join(reversed(chain))})" if chain else "")

    def _fp32_consumer(self, var: relax.Var) -> str:
        """The op with no integer form that reads the binding ``var``'s operands in fp32,
        looking on through single-use layout ops (``"output (after reshape)"``)."""
        chain: list[str] = []
        value = self.var2val.get(var)
        while self._is_layout_op(value) and isinstance(var, relax.DataflowVar) and len(self.users.get(var, [])) == 1:
            chain.append(_op_name(value))
            var = self.users[var][0]
            value = self.var2val.get(var)
        if not isinstance(var, relax.DataflowVar):
            name = "output"
            if self._is_layout_op(value):
                chain.append(_op_name(value))
        else:
            name = _op_name(value)
        return name + (f" (after {', '.join(chain)})" if chain else "")

    def _record(self, var: relax.Var, qp: ActQParams, emitted: relax.Var) -> None:
        self.quantized[f"{var.name}@{qp.key()}"] = (emitted.name, qp)

    def has_int_form(self, expr: relax.Expr) -> bool:
        """True when ``expr``'s fp32 value is not at hand (it lives as integer codes / epilogue)."""
        forms = self.forms.get(expr) if isinstance(expr, relax.Var) else None
        if forms is None:
            return False
        return forms.acc is not None or forms.float_from_int or (forms.floats is None and bool(forms.ints))

    # -- bindings ------------------------------------------------------------------------------
    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        var, value = binding.var, binding.value
        is_call = isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op)
        if is_call and var in self.int8 and not isinstance(var, relax.DataflowVar):
            return self._lower_output_mac(var, value, self.int8[var])
        if isinstance(var, relax.DataflowVar) and isinstance(value, relax.TupleGetItem) \
                and value.tuple_value in self.split_codes:
            return self._split_item(var, value)
        if isinstance(var, relax.DataflowVar) and is_call:
            if var in self.split_qp and self._codes_ready(value.args[0]):
                return self._split_on_int(var, value, self.split_qp[var])
            if var in self.int8:
                return self._lower_mac(var, value, self.int8[var])
            if self.fuse and var in self.targets and self._is_layout_op(value) and self._codes_ready(value.args[0]):
                return self._layout_on_int(var, value, self.targets[var])
            if self.fuse and var in self.targets and self._is_concat(value) and not self.targets[var].per_channel \
                    and any(isinstance(t, relax.Var) and (t in self.forms or t in self.targets) for t in value.args[0].fields):
                return self._concat_on_int(var, value, self.targets[var])
            if value.op.name in EPILOGUE_OPS and any(self.has_int_form(a) for a in value.args):
                return self._epilogue(var, value)
        # Any other op reads fp32: materialize the integer values it uses.
        self._consumer = self._fp32_consumer(var)
        for used in relax.analysis.free_vars(value) if not isinstance(value, relax.Var) else [value]:
            if self.has_int_form(used):
                self.set_var_remap(used, self._float(used, materialize=True))
        if isinstance(value, relax.Var) and self.has_int_form(value):
            self.set_var_remap(value, self._float(value, materialize=True))
        super().visit_var_binding_(binding)

    def _lower_mac(self, var: relax.Var, call: relax.Call, annotation: PrecisionAnnotation) -> None:
        if annotation.weight_act is not None:  # two activations, both read as codes
            data = self._int(call.args[0], annotation.act)
            other = self._int(call.args[1], annotation.weight_act)
            acc = self.arith.activation_matmul(self._emit, call, data, annotation.act, other, annotation.weight_act,
                                               var.name)
            return self._lowered(var, acc)
        weight = bound_constant(call.args[1], self.var2val)
        axis = weight_channel_axis(call)
        scales = annotation.weight_scales
        if scales is None:
            scales = weight_scales(weight, annotation.w_bits, axis)
        data = self._int(call.args[0], annotation.act)
        acc = self.arith.mac(self._emit, call, data, annotation.act, weight, scales, annotation.w_bits, axis, var.name)
        self._lowered(var, acc)

    def _lowered(self, var: relax.Var, acc: Accumulator) -> None:
        """``var`` is the int8 layer's accumulator ``acc`` (stage A: dequantized right away)."""
        self.forms[var] = _Forms(acc=acc)
        self.stats.n_layers += 1
        if not self.fuse:  # per layer: the integer result leaves as fp32 right away
            self._consumer = "per-layer lowering (stage A)"
            self.set_var_remap(var, self._float(var, materialize=True))
            del self.forms[var]

    def _lower_output_mac(self, var: relax.Var, call: relax.Call, annotation: PrecisionAnnotation) -> None:
        """An int8 MAC whose result is a model output: lowered like any other, its fp32 value
        (one dequantize border, named ``output``) bound to the output variable."""
        self._lower_mac(var, call, annotation)
        self._consumer = "output"
        value = self._float(var, materialize=True) if var in self.forms else self.visit_expr(var)  # stage A: fp32 already
        self.set_var_remap(var, self.builder_.emit_output(value, var.name))

    def _layout_on_int(self, var: relax.Var, call: relax.Call, qp: ActQParams) -> None:
        src = self._int(call.args[0], qp)
        attrs = call.attrs
        if call.op.name == "relax.nn.pad":
            out = self.arith.pad(self._emit, src, [int(p) for p in attrs.pad_width], qp, var.name)
        else:
            out = self._emit(relax.Call(call.op, [src, *[self.visit_expr(a) for a in call.args[1:]]], attrs, call.ty_args),
                             var.name)
        self.forms[var] = _Forms(ints={qp: out})
        self._record(var, qp, out)
        self.stats.n_layout_on_int += 1

    def _split_on_int(self, var: relax.Var, call: relax.Call, qp: ActQParams) -> None:
        codes = self._int(call.args[0], qp)
        self.split_codes[var] = self._emit(relax.Call(call.op, [codes], call.attrs, call.ty_args), var.name)
        self.stats.n_layout_on_int += 1

    def _split_item(self, var: relax.Var, item: relax.TupleGetItem) -> None:
        qp = self.split_qp[item.tuple_value]
        out = self._emit(relax.TupleGetItem(self.split_codes[item.tuple_value], item.index), var.name)
        self.forms[var] = _Forms(ints={qp: out})
        self._record(var, qp, out)

    def _concat_on_int(self, var: relax.Var, call: relax.Call, qp: ActQParams) -> None:
        """Concatenate codes at ``qp``. An input stored as codes at another quantizer is
        requantized from them (every consumer of a stored tensor reads its codes), any other is
        quantized at ``qp`` from its fp32 value (in its producer's epilogue)."""
        parts = []
        for i, tensor in enumerate(call.args[0].fields):
            stored = self.targets.get(tensor) if isinstance(tensor, relax.Var) else None
            if stored is not None and stored != qp and self.has_int_form(tensor):
                parts.append(self.arith.rescale(self._emit, self._int(tensor, stored), stored, qp, f"{var.name}_in{i}"))
                self.stats.n_requantize += 1
            else:
                parts.append(self._int(tensor, qp))
        out = self._emit(relax.op.concat(parts, axis=call.attrs.axis), var.name)
        self.forms[var] = _Forms(ints={qp: out})
        self._record(var, qp, out)
        self.stats.n_layout_on_int += 1

    def _epilogue(self, var: relax.Var, call: relax.Call) -> None:
        args = list(call.args)
        if call.op.name == "relax.add":
            for acc_arg, other in ((args[0], args[1]), (args[1], args[0])):
                forms = self.forms.get(acc_arg) if isinstance(acc_arg, relax.Var) else None
                bias = bound_constant(other, self.var2val)
                if forms is not None and forms.acc is not None and forms.floats is None and bias is not None \
                        and forms.acc.can_fold_bias(bias):
                    self.forms[var] = _Forms(acc=self.arith.add_bias(self._emit, forms.acc, bias, var.name))
                    self.stats.n_bias_folded += 1
                    return
        new_args = [self._float(a, materialize=False) if self.has_int_form(a) else self.visit_expr(a) for a in args]
        expr = self._emit(relax.Call(call.op, new_args, call.attrs, call.ty_args), var.name)
        self.forms[var] = _Forms(floats=expr, float_from_int=True)


@relax.transform.function_pass(opt_level=0, name="LowerToInteger")
class LowerToInteger:
    """Lower the layers annotated int8 to integer form and drop every annotation.

    ``fuse``: group conv+bias+activation(+residual add) and pass uint8 between groups (stage C,
    default) or quantize/dequantize around every layer (stage A). ``simulate``: emit float QDQ
    instead of integer kernels. ``trace``: a :class:`LoweringTrace` to fill with every quantized
    tensor. Each lowered function gets its counts as attribute :data:`LOWERING_ATTR`.
    """

    def __init__(self, fuse: bool = True, simulate: bool = False, trace: LoweringTrace | None = None):
        self.fuse = fuse
        self.simulate = simulate
        self.trace = trace

    def transform_function(self, func: relax.Function, mod: tvm.IRModule,
                           _ctx: tvm.transform.PassContext) -> relax.Function:
        if func.attrs is not None and func.attrs.get("Primitive"):
            return func
        detached, annotations = detach_annotations(func, mod)
        if not annotations:
            return detached
        lowering = IntegerLowering(mod, annotations, FakeQuantArith() if self.simulate else IntegerArith(), self.fuse)
        lowering.prepare(detached)
        lowered = lowering.visit_expr(detached)
        if self.trace is not None:
            self.trace.quantized.update(lowering.quantized)
        lowered = lowered.with_attr(BORDERS_ATTR, [b.to_attr() for b in lowering.borders])
        return lowered.with_attr(LOWERING_ATTR, lowering.stats.to_attr())
