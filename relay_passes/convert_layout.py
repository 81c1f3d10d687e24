"""ConvertToChannelsLast: one activation layout for the whole graph, NHWC, chosen once at graph level.

A model arrives in NCHW (ONNX, PyTorch). CPU kernels want the channels innermost: a conv's
output channels are the vector lanes of its register tile, an int8 dot product reads 4
consecutive input channels as one 32-bit word, a depthwise conv vectorizes over channels, and
a per-channel epilogue (bias, scale, zero point) loads one vector per tile. With NCHW every conv
kernel would re-lay out its input and write its output back; this pass instead rewrites every
2-D conv to ``NHWC``/``HWIO`` and carries the NHWC tensors through every op that does not care
about the layout (elementwise and broadcast arithmetic, casts, clip, round, pad, pooling,
reductions over named axes, concatenation, splits, softmax, slices), so tensors stay channels-last from conv to
conv and a layout change (``permute_dims``) is left only where an NCHW tensor enters (the
model's inputs) or must leave (the outputs, and ops whose meaning depends on the layout:
reshape, flatten, matmul, ...).

Relax's own ``ConvertLayout`` stops at ``clip``, ``pad`` and ``where`` in TVM 0.27 (no layout
inference registered for them), which would put two transposes around every relu6 of an
int8 model; the op set here is the one the precision pass emits. Constant operands (weights,
per-channel scales and zero points) are re-laid out here, in numpy, so nothing of the change
is left to run. Bindings keep their names, so the layer table's stable names still find every
conv. One-dimensional tensors ``[N, C, L]`` (signal and audio models, whose ``conv1d`` runs as
a conv2d along a row, :class:`~relay_passes.conv_on_rows.ConvOnRows`) are carried channels-last
the same way, as ``[N, L, C]``: the reshapes between ``[N, C, L]`` and the conv's ``[N, C, 1, L]``
become reshapes of channels-last tensors (no data moves), and the ops between convs (bias, GELU,
residual adds, the slices and concats of a circular pad) run on ``[N, L, C]`` — before, every
conv's output was transposed back to ``[N, C, L]`` (a sleep-spindle U-Net: 60 of its 117 ms in
those transposes, ``benchmarks/kernel_profile.py eeg-spindle-unet``, 2026-12-03).
A model's own transposes between NHWC and NCHW (exports from NHWC frameworks)
cancel against the pass's: an NHWC input transposed to NCHW feeds the convs directly, also
through elementwise ops and pads after the model's transpose (a normalization, the zero-point
pad of an int8 first conv: opennsfw-resnet50's quantized input went NHWC -> NCHW -> padded ->
NHWC in one kernel, now quantized and padded in place). Run after
:class:`~relay_passes.lower_to_integer.LowerToInteger` and
``DecomposeOpsForInference`` (no batch-norm left); visits every Relax function of the module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant

from tvm_mpq.graph.layer_table import tensor_shape  # noqa: F401 - the passes import it from here

TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)
AXIS_TO_NHWC = {0: 0, 1: 3, 2: 1, 3: 2}
"""Where an NCHW axis sits in NHWC."""
TO_LAST = {4: TO_NHWC, 3: (0, 2, 1)}
TO_FIRST = {4: TO_NCHW, 3: (0, 2, 1)}
AXIS_TO_LAST = {4: AXIS_TO_NHWC, 3: {0: 0, 1: 2, 2: 1}}
"""Per rank, the permutation to channels-last (NHWC; NWC for a row's ``[N, C, L]``), back, and
where a channels-first axis sits in it."""

ELEMENTWISE = frozenset(f"relax.{n}" for n in (
    "add", "subtract", "multiply", "divide", "maximum", "minimum", "power", "floor_divide", "floor_mod",
    "greater", "greater_equal", "less", "less_equal", "equal", "not_equal", "where", "logical_and",
    "logical_or", "clip", "round", "floor", "ceil", "abs", "negative", "exp", "log", "sqrt", "rsqrt",
    "sigmoid", "tanh", "erf", "sin", "cos", "astype", "nn.relu", "nn.leakyrelu", "nn.silu", "nn.gelu",
    "nn.gelu_tanh", "square", "sign", "logical_not"))
"""Ops computed element by element (with numpy broadcasting): layout-agnostic."""

POOLS = frozenset({"relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d"})
REDUCTIONS = frozenset(f"relax.{n}" for n in ("mean", "sum", "max", "min", "prod", "variance"))


def conv_out_dtype(attrs) -> str | None:
    """A conv's ``out_dtype`` attribute, ``None`` when unset (the data's type: a float32 conv)."""
    value = getattr(attrs, "out_dtype", None)
    return None if value is None or str(value) in ("", "void", "None") else str(value)


def _is_nchw_conv(call: relax.Call) -> bool:
    a = call.attrs
    return (call.op.name == "relax.nn.conv2d" and a.data_layout == "NCHW" and a.kernel_layout == "OIHW"
            and a.out_layout == "NCHW")


@relax.expr_functor.mutator
class _ChannelsLast(relax.PyExprMutator):
    """Re-emits each binding, in NHWC where the op allows (see the module docstring)."""

    def __init__(self, mod: tvm.IRModule, int8_channel_multiple: int) -> None:
        super().__init__(mod)
        self.int8_channel_multiple = int8_channel_multiple
        self.nhwc: set[relax.Var] = set()  # new vars holding NHWC tensors
        self.as_nchw: dict[relax.Var, relax.Var] = {}  # NHWC var -> its NCHW copy (emitted once)
        self.as_nhwc: dict[tuple[relax.Var, int], relax.Var] = {}  # (NCHW var, rank) -> its channels-last copy
        self.n_converted = 0
        self.n_padded = 0

    # ------------------------------------------------------------------ layout helpers
    def _nchw(self, expr: relax.Expr) -> relax.Expr:
        """``expr`` in its channels-first form (a transpose emitted once per channels-last variable)."""
        if not isinstance(expr, relax.Var) or expr not in self.nhwc:
            return expr
        if expr not in self.as_nchw:
            rank = len(tensor_shape(expr))
            self.as_nchw[expr] = self.builder_.emit(relax.op.permute_dims(expr, TO_FIRST[rank]), expr.name + "_nchw")
        return self.as_nchw[expr]

    def _nhwc(self, expr: relax.Expr, rank: int = 4) -> relax.Expr:
        """``expr`` (a channels-last var of ``rank``, a channels-first tensor of ``rank``, or a
        lower-rank broadcast operand) channels-last at ``rank`` (NHWC for 4, NWC for 3)."""
        if isinstance(expr, relax.Var) and expr in self.nhwc:
            if len(tensor_shape(expr)) != rank:
                raise _Keep()
            return expr
        shape = tensor_shape(expr)
        if shape is None or len(shape) > rank:
            raise _Keep()
        if int(np.prod(shape)) == 1 or len(shape) == 0:
            return expr  # a scalar broadcasts the same in any layout
        if isinstance(expr, Constant):
            value = expr.value.numpy().reshape((1,) * (rank - len(shape)) + shape)
            return relax.const(np.ascontiguousarray(value.transpose(TO_LAST[rank])), str(value.dtype))
        name = expr.name if isinstance(expr, relax.Var) else "mpq_operand"
        if isinstance(expr, relax.Var) and (expr, rank) in self.as_nhwc:
            return self.as_nhwc[(expr, rank)]
        source = expr
        if len(shape) < rank:
            expr = self.builder_.emit(relax.op.reshape(expr, (1,) * (rank - len(shape)) + shape), name + f"_{rank}d")
        out = self.builder_.emit(relax.op.permute_dims(expr, TO_LAST[rank]), name + "_nhwc")
        expr = source
        if isinstance(expr, relax.Var):
            self.as_nhwc[(expr, rank)] = out
        return out

    # ------------------------------------------------------------------ per-op rewrites
    def _rewrite(self, call: relax.Call, shape: tuple[int, ...] | None,
                 in_dataflow: bool = True) -> tuple[relax.Expr, bool]:
        """(new value, whether it is NHWC) for a call whose arguments are already visited;
        ``shape``: the NCHW shape of its result; ``in_dataflow``: its binding stays inside the
        dataflow block (a tuple leaving it, a split's, stays NCHW)."""
        op = call.op.name if isinstance(call.op, tvm.ir.Op) else None
        args = list(call.args)
        rank = len(shape) if shape is not None else 0
        try:
            if op == "relax.permute_dims" and self._is_nhwc(args[0]) and _axes(call) == TO_LAST.get(rank):
                return args[0], False  # the model asks for NHWC: that is what the tensor already is
            if op == "relax.reshape" and shape is not None and self._is_nhwc(args[0]):
                return self._reshape(args[0], shape), True
            if op == "relax.reshape" and shape is not None and (args[0], 4) in self.as_nhwc:  # the model's own NCHW
                return self._reshape(self.as_nhwc[(args[0], 4)], shape), True
            if op == "relax.nn.conv2d" and _is_nchw_conv(call) and shape is not None:
                return self._conv2d(call, args), True
            if op in POOLS and call.attrs.layout == "NCHW" and self._is_nhwc(args[0]):
                return self._pool(call, args), True
            if op == "relax.nn.pad" and len(tensor_shape(args[0]) or ()) in TO_LAST \
                    and self._has_nhwc(args[0], len(tensor_shape(args[0]))):
                in_rank = len(tensor_shape(args[0]))
                width = [int(w) for w in call.attrs.pad_width]
                pairs = [width[2 * i:2 * i + 2] for i in range(in_rank)]
                new_width = [w for axis in TO_LAST[in_rank] for w in pairs[axis]]
                return relax.op.nn.pad(self._nhwc(args[0], in_rank), new_width, call.attrs.pad_mode,
                                       float(call.attrs.pad_value)), True
            if op == "relax.nn.prelu" and self._is_nhwc(args[0]) and rank in TO_LAST:
                # the slope is per channel along ``axis``: only the axis moves
                return relax.op.nn.prelu(args[0], args[1], AXIS_TO_LAST[rank][int(call.attrs.axis) % rank]), True
            if op in ELEMENTWISE and rank in TO_LAST and any(self._has_nhwc(a, rank) for a in args):
                return relax.Call(call.op, [self._nhwc(a, rank) if tensor_shape(a) is not None else a for a in args],
                                  call.attrs, call.ty_args), True
            if op in REDUCTIONS and self._is_nhwc(args[0]):
                return self._reduction(call, args)
            fields = _fields(args[0])
            if op == "relax.concat" and rank in TO_LAST and (rank == 4 or any(map(self._is_nhwc, fields))) \
                    and all(tensor_shape(f) is not None and len(tensor_shape(f)) == rank for f in fields):
                axis = AXIS_TO_LAST[rank][int(call.attrs.axis) % rank]
                return relax.op.concat(relax.Tuple([self._nhwc(f, rank) for f in fields]), axis), True
            in_rank = len(tensor_shape(args[0]) or ()) if args else 0
            if op == "relax.nn.softmax" and self._is_nhwc(args[0]):
                return relax.op.nn.softmax(args[0], AXIS_TO_LAST[in_rank][int(call.attrs.axis) % in_rank]), True
            if op == "relax.strided_slice" and self._is_nhwc(args[0]) and isinstance(args[1], relax.Tuple):
                ints = [[int(v) for v in arg.fields] if isinstance(arg, relax.Tuple) else None for arg in args[1:]]
                if any(v is None for v in ints[:3]):
                    raise _Keep()
                axes, begin, end, *strides = ints
                return relax.op.strided_slice(args[0], [AXIS_TO_LAST[in_rank][a % in_rank] for a in axes], begin, end,
                                              strides[0] if strides else None, bool(call.attrs.assume_inbound)), True
            if op == "relax.image.resize2d" and call.attrs.layout == "NCHW" and self._is_nhwc(args[0]):
                return self._resize(call, args), True
            if op == "relax.repeat" and call.attrs.axis is not None and in_rank in TO_LAST and (
                    self._is_nhwc(args[0]) or (args[0], in_rank) in self.as_nhwc):  # or the model's own NCHW
                axis = AXIS_TO_LAST[in_rank][int(call.attrs.axis) % in_rank]
                return relax.op.repeat(self._nhwc(args[0], in_rank), int(call.attrs.repeats), axis), True
            if op == "relax.split" and self._is_nhwc(args[0]) and in_dataflow:  # NHWC items
                sections = call.attrs.indices_or_sections
                sections = [int(v) for v in sections] if isinstance(sections, tvm.ir.Array) else int(sections)
                return relax.op.split(args[0], sections, AXIS_TO_LAST[in_rank][int(call.attrs.axis) % in_rank]), True
        except _Keep:
            pass
        args = [self._nchw_deep(a) for a in args]
        if op == "relax.matmul":
            return self._matmul(call, args), False
        return relax.Call(call.op, args, call.attrs, call.ty_args), False

    def _matmul(self, call: relax.Call, args: list[relax.Expr]) -> relax.Expr:
        """An int8 matmul with a constant ``[K, N]`` weight, K padded to the channel multiple."""
        data, weight = args[0], args[1]
        plain = relax.Call(call.op, args, call.attrs, call.ty_args)
        shape = tensor_shape(data)
        if not isinstance(weight, Constant) or str(weight.value.dtype) != "int8" or shape is None:
            return plain
        w = weight.value.numpy()
        extra = -w.shape[0] % self.int8_channel_multiple
        if w.ndim != 2 or not extra:
            return plain
        width = [0] * (2 * len(shape))
        width[-1] = extra
        data = self.builder_.emit(relax.op.nn.pad(data, width), _name(data) + "_kpad")
        self.n_padded += 1
        return relax.Call(call.op, [data, relax.const(np.pad(w, ((0, extra), (0, 0))))], call.attrs, call.ty_args)

    def _is_nhwc(self, expr: relax.Expr) -> bool:
        return isinstance(expr, relax.Var) and expr in self.nhwc

    def _has_nhwc(self, expr: relax.Expr, rank: int = 4) -> bool:
        """Channels-last already, or the model's own channels-first transpose of a channels-last
        tensor (an NHWC input made NCHW: :meth:`_nhwc` gives back its source, no transpose)."""
        return self._is_nhwc(expr) or (isinstance(expr, relax.Var) and (expr, rank) in self.as_nhwc)

    def _reshape(self, data: relax.Expr, shape: tuple[int, ...]) -> relax.Expr:
        """A channels-last ``data`` reshaped to the channels-first ``shape`` that keeps the batch
        and the channels and regroups only the positions (``[N, C, L]`` <-> ``[N, C, 1, L]``
        around a row conv, ``[N, C, H, W]`` -> ``[N, C, H*W]`` before attention): positions are
        in row-major order either way, so it is the same reshape of the channels-last tensor,
        which moves no data. Other reshapes read the tensor channels-first."""
        first = _channels_first_shape(tensor_shape(data))
        if len(shape) not in TO_LAST or shape[:2] != first[:2] or int(np.prod(shape[2:])) != int(np.prod(first[2:])):
            raise _Keep()
        return relax.op.reshape(data, [shape[0], *shape[2:], shape[1]])

    def _nchw_deep(self, expr: relax.Expr) -> relax.Expr:
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([self._nchw_deep(f) for f in expr.fields])
        return self._nchw(expr)

    def _conv2d(self, call: relax.Call, args: Sequence[relax.Expr]) -> relax.Expr:
        data, weight = args[0], args[1]
        data = self._nhwc(data)
        if isinstance(weight, Constant):
            w = np.ascontiguousarray(weight.value.numpy().transpose(2, 3, 1, 0))
            extra = -w.shape[2] % self.int8_channel_multiple
            if extra and int(call.attrs.groups) == 1 and str(w.dtype) == "int8":
                # zero weights for padded input channels: exact whatever the padded data holds
                w = np.pad(w, ((0, 0), (0, 0), (0, extra), (0, 0)))
                data = self.builder_.emit(relax.op.nn.pad(data, [0, 0, 0, 0, 0, 0, 0, extra]),
                                          _name(data) + "_cpad")
                self.n_padded += 1
            weight = relax.const(w, str(w.dtype))
        else:
            weight = self.builder_.emit(relax.op.permute_dims(weight, (2, 3, 1, 0)), "mpq_weight_hwio")
        a = call.attrs
        self.n_converted += 1
        return relax.op.nn.conv2d(data, weight, a.strides, a.padding, a.dilation, a.groups, "NHWC", "HWIO",
                                  "NHWC", a.out_dtype if str(a.out_dtype) else None)

    def _pool(self, call: relax.Call, args: Sequence[relax.Expr]) -> relax.Expr:
        a = call.attrs
        if call.op.name == "relax.nn.adaptive_avg_pool2d":
            size = [int(s) for s in a.output_size] if a.output_size is not None else None
            return relax.op.nn.adaptive_avg_pool2d(args[0], size, "NHWC", "NHWC")
        fn = relax.op.nn.max_pool2d if call.op.name == "relax.nn.max_pool2d" else relax.op.nn.avg_pool2d
        kwargs = dict(pool_size=a.pool_size, strides=a.strides, padding=a.padding, dilation=a.dilation,
                      ceil_mode=bool(a.ceil_mode), layout="NHWC", out_layout="NHWC")
        if call.op.name == "relax.nn.avg_pool2d":
            kwargs["count_include_pad"] = bool(a.count_include_pad)
        return fn(args[0], **kwargs)

    def _reduction(self, call: relax.Call, args: Sequence[relax.Expr]) -> tuple[relax.Expr, bool]:
        a = call.attrs
        rank = len(tensor_shape(args[0]))
        to_last = AXIS_TO_LAST[rank]
        axes = list(range(rank)) if a.axis is None else [int(x) % rank for x in a.axis]
        kept = [axis for axis in range(rank) if axis not in axes]
        new_axes = sorted(to_last[x] for x in axes)
        if not a.keepdims and [to_last[x] for x in kept] != sorted(to_last[x] for x in kept):
            raise _Keep()  # the remaining axes would come out in another order
        fn = getattr(relax.op, call.op.name.split(".")[-1])
        return fn(args[0], new_axes, bool(a.keepdims)), bool(a.keepdims)

    def _resize(self, call: relax.Call, args: Sequence[relax.Expr]) -> relax.Expr:
        a = call.attrs
        roi = tuple(float(r) for r in a.roi)
        return relax.op.image.resize2d(args[0], args[1], roi, "NHWC", a.method, a.coordinate_transformation_mode,
                                       a.rounding_method, float(a.cubic_alpha), int(a.cubic_exclude),
                                       float(a.extrapolation_value), a.out_dtype if str(a.out_dtype) else None)

    # ------------------------------------------------------------------ visiting
    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        nhwc = False
        if isinstance(value, relax.Call):
            visited = relax.Call(value.op, [self.visit_expr(a) for a in value.args], value.attrs, value.ty_args)
            value, nhwc = self._rewrite(visited, tensor_shape(binding.var), isinstance(binding.var, relax.DataflowVar))
        elif isinstance(value, relax.TupleGetItem) and self._is_nhwc(self.visit_expr(value.tuple_value)):
            value, nhwc = self.visit_expr(value), True  # an item of an NHWC split
        else:
            value = self._nchw_deep(self.visit_expr(value))
        name = binding.var.name
        if isinstance(binding.var, relax.DataflowVar):
            new_var = self.builder_.emit(value, name)
            if nhwc:
                self.nhwc.add(new_var)
            elif _is_to_nchw(value):  # an NHWC tensor the model transposes to NCHW: keep its source
                self.as_nhwc[(new_var, 4)] = value.args[0]
        elif nhwc:  # leaves the dataflow block: the caller sees NCHW
            inner = self.builder_.emit(value, name + "_nhwc")
            self.nhwc.add(inner)
            new_var = self.builder_.emit_output(relax.op.permute_dims(inner, TO_FIRST[len(tensor_shape(inner))]), name)
        else:
            new_var = self.builder_.emit_output(value, name)
        self.set_var_remap(binding.var, new_var)


class _Keep(Exception):
    """Raised inside a rewrite: leave this op in NCHW."""


def _axes(call: relax.Call) -> tuple[int, ...] | None:
    axes = call.attrs.axes
    return None if axes is None else tuple(int(a) for a in axes)


def _is_to_nchw(value: relax.Expr) -> bool:
    """``permute_dims(x, [0, 3, 1, 2])`` of a 4-D tensor (an NHWC model input made NCHW)."""
    return (isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.permute_dims"
            and _axes(value) == TO_NCHW and tensor_shape(value.args[0]) is not None)


def _channels_first_shape(last: tuple[int, ...]) -> tuple[int, ...]:
    """The channels-first shape of a channels-last one (``[N, *positions, C]`` -> ``[N, C, *positions]``)."""
    return (last[0], last[-1], *last[1:-1])


def _name(expr: relax.Expr) -> str:
    return expr.name if isinstance(expr, relax.Var) else "mpq_operand"


def _fields(expr: relax.Expr) -> list[relax.Expr]:
    return list(expr.fields) if isinstance(expr, relax.Tuple) else [expr]


CHANNELS_LAST_ATTR = "mpq_channels_last"
"""Function attribute: ``n_converted`` convs rewritten, ``n_transposes`` layout changes added."""


def channels_last_counts(mod: tvm.IRModule) -> dict[str, int]:
    """What :class:`ConvertToChannelsLast` did to ``mod``, summed over its functions."""
    total = {"n_converted": 0, "n_transposes": 0}
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function) and func.attrs is not None and CHANNELS_LAST_ATTR in func.attrs:
            for key in total:
                total[key] += int(func.attrs[CHANNELS_LAST_ATTR][key])
    return total


@tvm.transform.module_pass(opt_level=0, name="ConvertToChannelsLast")
class ConvertToChannelsLast:
    """Rewrite the 2-D convs of every Relax function to NHWC/HWIO and keep their activations NHWC
    through layout-agnostic ops; transposes only at the model's inputs and outputs and before ops
    whose meaning depends on the layout. Each converted function gets the counts as attribute
    :data:`CHANNELS_LAST_ATTR` (:func:`channels_last_counts`).

    ``int8_channel_multiple``: pad the input channels of int8 convs and the reduction of int8
    matmuls (zero weights) to a multiple of this, for kernels whose dot product reads channels in
    groups (4 for ``vpdpbusd`` / ``sdot``): an RGB first layer then runs on the dot product too."""

    def __init__(self, int8_channel_multiple: int = 1) -> None:
        self.int8_channel_multiple = int8_channel_multiple

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        n_padded = 0
        out = mod
        converted: dict[str, int] = {}
        for gv, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            mutator = _ChannelsLast(out, self.int8_channel_multiple)
            new_func = mutator.visit_expr(func)
            n_padded += mutator.n_padded
            if mutator.n_converted:
                converted[gv.name_hint] = mutator.n_converted
            mutator.builder_.update_func(gv, new_func)
            out = mutator.builder_.get()
        if not converted and not n_padded:
            return mod
        # a transpose pair that cancels leaves ``y = x``: FuseOps ends a fused group at such a
        # binding, so the elementwise ops after it would run as a kernel of their own
        out = relax.transform.CanonicalizeBindings()(out)
        out = relax.transform.DeadCodeElimination()(out)
        for name, n_converted in converted.items():
            gv = out.get_global_var(name)
            n_transposes = _count_transposes(out[gv]) - _count_transposes(mod[name])
            out[gv] = out[gv].with_attr(CHANNELS_LAST_ATTR, {"n_converted": n_converted, "n_transposes": n_transposes})
        return out


def _count_transposes(func: relax.Function) -> int:
    found: list[relax.Call] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.permute_dims":
            found.append(expr)

    relax.analysis.post_order_visit(func, visit)
    return len(found)
