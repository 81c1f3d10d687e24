"""The two arithmetics of the precision pass: true integer kernels, or their QDQ simulation.

:class:`~relay_passes.lower_to_integer.LowerToInteger` decides *where* tensors are quantized;
an arithmetic decides *how* each step is emitted:

* :class:`IntegerArith` — uint8 activations, int8 per-channel weights, ``int32`` accumulation
  (``conv2d``/``conv1d``/``conv2d_transpose``/``matmul`` with ``out_dtype="int32"``; a matmul of
  two activations with both operands' zero points corrected), bias in int32,
  requantization to uint8
  (float multiplier, round half-even, clip) at the next quantizer;
* :class:`FakeQuantArith` — the same quantizers as float32 quantize-dequantize: the reference
  the integer model is checked against ("same scales").

Quantized tensors are always ``(expr, ActQParams)``; integer exprs hold uint8 codes, simulated
ones hold the dequantized float values. Both emit the step chain of :mod:`relay_passes.qdq_steps`.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from relay_passes.qdq_steps import (Emit, act_constants, clip_codes, dequantize_steps, emit_chain,
                                    fake_quant_activation_steps, quantize_steps, rank)
from tvm_mpq.graph.layer_table import tensor_shape
from tvm_mpq.quantization.quantizers import ActQParams, broadcast_scales


def _code_steps(qp: ActQParams, ndim: int) -> list:
    """``clip(round(x / s) + zp, 0, 2^b - 1)`` in float32 (:mod:`relay_passes.qdq_steps`; the
    simulation continues the same chain with the dequantize steps)."""
    return quantize_steps(*act_constants(qp, ndim), clip_codes(qp.qmax))


def per_output_channel(values: float | tuple, out_channels: int) -> np.ndarray:
    """An activation quantizer's scale or zero point per output channel of the MAC reading it
    (float64): the one value everywhere, or per channel repeated for a depthwise conv's channel
    multiplier (output channel ``o`` reads input channel ``o // multiplier``)."""
    v = np.asarray(values, np.float64).reshape(-1)
    return np.full(out_channels, v[0]) if v.size == 1 else np.repeat(v, out_channels // v.size)


def _pad_mask(shape: tuple[int, ...], pad_width: list[int]) -> np.ndarray:
    """True on the border a pad of ``pad_width`` adds to a tensor of ``shape`` (axes 0 and 1 unpadded)."""
    padded = [d + pad_width[2 * i] + pad_width[2 * i + 1] for i, d in enumerate(shape)]
    mask = np.ones([1, 1, *padded[2:]], bool)
    mask[(slice(None), slice(None), *(slice(pad_width[2 * i], pad_width[2 * i] + d)
                                      for i, d in enumerate(shape) if i >= 2))] = False
    return mask


_CONV_LAYOUTS = {"relax.nn.conv2d": ("NCHW", "OIHW"), "relax.nn.conv1d": ("NCW", "OIW")}
"""The convs with an integer kernel, and the data and kernel layouts they are lowered in."""
TRANSPOSE_CONV = "relax.nn.conv2d_transpose"
"""The transposed conv with an integer kernel (NCHW / IOHW, one group, no dilation; the CPU build
runs it as a GEMM: :class:`relay_passes.transpose_conv_as_matmul.TransposeConvAsMatmul`)."""
_CHANNELS_FIRST = (*_CONV_LAYOUTS, TRANSPOSE_CONV)
"""MAC ops whose output channels are axis 1."""


def transpose_conv_taps(in_size: int, out_size: int, kernel: int, stride: int, pad: int) -> np.ndarray:
    """``[kernel, out_size]``: 1 where tap ``a`` of some input position ``i`` (``0 <= i < in_size``)
    lands on output position ``y = i * stride + a - pad`` of a transposed conv along one axis."""
    a = np.arange(kernel)[:, None]
    start = np.arange(out_size)[None, :] + pad - a
    return ((start % stride == 0) & (start >= 0) & (start // stride < in_size)).astype(np.int64)


def transpose_conv_zero_point_map(zero_points: np.ndarray, w_q: np.ndarray, in_hw: tuple[int, int],
                                  out_hw: tuple[int, int], strides: list[int], padding: list[int]) -> np.ndarray:
    """``[O, H_out, W_out]`` (int64): a transposed conv of a constant input, ``zero_points`` per
    input channel, by the codes ``w_q`` (``[C, O, kh, kw]``): what the input's zero points add to
    each output, subtracted from the integer product. Windows that overlap or are cropped reach
    the border outputs fewer times than the interior ones, so it varies over the map."""
    per_tap = np.einsum("c,coab->oab", zero_points.astype(np.int64), w_q.astype(np.int64))
    rows = transpose_conv_taps(in_hw[0], out_hw[0], w_q.shape[2], strides[0], padding[0])
    cols = transpose_conv_taps(in_hw[1], out_hw[1], w_q.shape[3], strides[1], padding[1])
    return np.einsum("oab,ay,bx->oyx", per_tap, rows, cols)


def accumulator_scale(qp: ActQParams, scales: np.ndarray) -> np.ndarray:
    """The real value of one accumulator unit per output channel: ``s_x * s_w`` (float32)."""
    return (per_output_channel(qp.scale, scales.size).astype(np.float32) * scales).astype(np.float32)


class Accumulator:
    """The output of a quantized MAC op before requantization.

    ``expr`` is int32 (integer arithmetic) or float32 real values (simulation); ``scale`` is the
    per-channel real value of one integer unit (``s_x * s_w``) along ``channel_axis`` of the output
    (the bias is quantized at it in both arithmetics).
    """

    def __init__(self, expr: relax.Expr, scale: np.ndarray | None, channel_axis: int, ndim: int,
                 offset: np.ndarray | None = None):
        self.expr = expr
        self.scale = scale
        self.channel_axis = channel_axis
        self.ndim = ndim
        self.offset = offset
        """Per-channel int32 still to add (zero-point correction + bias): emitted once, as one add."""

    def can_fold_bias(self, bias: np.ndarray) -> bool:
        """True when ``bias`` varies only along the channel axis and fits int32 at the accumulator
        scale (a near-dead channel can have ``s_x * s_w`` so small that it does not: that bias
        stays an fp32 add in the epilogue)."""
        if self.scale is None:
            return False
        squeezed = [d for d in bias.shape if d != 1]
        if len(squeezed) != 1 or squeezed[0] != self.scale.size or bias.ndim > self.ndim:
            return False
        axis_in_out = self.ndim - bias.ndim + next(i for i, d in enumerate(bias.shape) if d != 1)
        if axis_in_out != self.channel_axis % self.ndim:
            return False
        with np.errstate(divide="ignore"):  # a dead channel's zero scale: no int32 bias (inf)
            return bool(np.all(np.abs(bias.reshape(-1).astype(np.float64) / self.scale) < 2.0**29))


class IntegerArith:
    """uint8 x int8 -> int32 kernels with int32 bias and requantization."""

    simulated = False

    def quantize(self, emit: Emit, x: relax.Expr, qp: ActQParams, name: str) -> relax.Expr:
        """fp32 -> uint8 codes: ``clip(round(x / s) + zp, 0, 2^b - 1)``."""
        return emit_chain(emit, x, [*_code_steps(qp, rank(x)), lambda v: relax.op.astype(v, "uint8")], name)

    def to_float(self, emit: Emit, q: relax.Expr, qp: ActQParams, name: str) -> relax.Expr:
        """uint8 codes -> fp32 real values: ``(q - zp) * s``."""
        return emit_chain(emit, q, [lambda v: relax.op.astype(v, "float32"),
                                    *dequantize_steps(*act_constants(qp, rank(q)))], name)

    def rescale(self, emit: Emit, q: relax.Expr, src: ActQParams, dst: ActQParams, name: str) -> relax.Expr:
        """uint8 at ``src`` -> uint8 at ``dst`` (a requantize between two int8 groups)."""
        return self.quantize(emit, self.to_float(emit, q, src, name + "f"), dst, name + "q")

    def pad(self, emit: Emit, q: relax.Expr, pad_width: list[int], qp: ActQParams, name: str) -> relax.Expr:
        """Zero padding of codes: pad with the code of 0.0 (per channel: pad with 0, then each
        channel's zero point on the border, one ``where`` on a constant border mask)."""
        if not qp.per_channel:
            return emit(relax.op.nn.pad(q, pad_width, pad_value=float(qp.zero_point)), name)
        if any(pad_width[:4]):
            raise ValueError("a per-channel quantized tensor is padded on its spatial axes only")
        padded = emit(relax.op.nn.pad(q, pad_width, pad_value=0.0), name + "0")
        shape = tuple(int(d) for d in q.ty.shape)
        zero_points = relax.const(qp.zero_point_array(len(shape)).astype("uint8"))
        return emit(relax.op.where(relax.const(_pad_mask(shape, pad_width)), zero_points, padded), name)

    def mac(self, emit: Emit, call: relax.Call, data: relax.Expr, qp: ActQParams, weight: np.ndarray,
            scales: np.ndarray, w_bits: int, channel_axis: int, name: str) -> Accumulator:
        """The integer op: ``acc = op(q_x, W_q) - zp * sum(W_q)`` (exact), int32, with the weight
        quantized per channel at ``scales``."""
        qmax = 2 ** (w_bits - 1) - 1
        w_q = np.clip(np.round(weight / broadcast_scales(scales, weight.ndim, channel_axis)), -qmax, qmax).astype(np.int8)
        op = call.op.name
        attrs = call.attrs
        out_ndim = len(call.ty.shape)
        if op in _CONV_LAYOUTS:  # conv2d; conv1d, which the CPU build runs as a conv2d along a row
            pad = [int(p) for p in attrs.padding]  # the begins of each spatial axis, then the ends
            if any(pad) and np.any(np.asarray(qp.zero_point) != 0):  # pad with the code of 0.0, then no padding
                spatial = len(pad) // 2
                width = [0, 0, 0, 0] + [w for i in range(spatial) for w in (pad[i], pad[spatial + i])]
                data = self.pad(emit, data, width, qp, name + "pad")
                pad = [0] * len(pad)
            conv = relax.op.nn.conv2d if op == "relax.nn.conv2d" else relax.op.nn.conv1d
            data_layout, kernel_layout = _CONV_LAYOUTS[op]
            acc = emit(conv(data, relax.const(w_q), strides=attrs.strides, padding=pad, dilation=attrs.dilation,
                            groups=int(attrs.groups), data_layout=data_layout, kernel_layout=kernel_layout,
                            out_dtype="int32"), name)
            w_sum = w_q.astype(np.int64).reshape(w_q.shape[0], -1).sum(axis=1)
            out_axis = 1
        elif op == TRANSPOSE_CONV:
            acc = emit(relax.op.nn.conv2d_transpose(
                data, relax.const(w_q), strides=attrs.strides, padding=attrs.padding,
                output_padding=attrs.output_padding, dilation=attrs.dilation, groups=int(attrs.groups),
                data_layout="NCHW", kernel_layout="IOHW", out_dtype="int32"), name)
            zero_points = per_output_channel(qp.zero_point, w_q.shape[0]).astype(np.int64)  # per input channel
            offset = None
            if np.any(zero_points):
                shift = transpose_conv_zero_point_map(
                    zero_points, w_q, tensor_shape(data)[2:], tensor_shape(call)[2:],
                    [int(v) for v in attrs.strides], [int(v) for v in attrs.padding])
                if np.all(shift == shift[:, :1, :1]):  # every output reached alike (kernel == stride)
                    offset = -shift[:, 0, 0]
                else:
                    acc = emit(relax.op.subtract(acc, relax.const(shift[None].astype(np.int32))), name + "zp")
            return Accumulator(acc, accumulator_scale(qp, scales), 1, out_ndim, offset)
        elif op == "relax.matmul":
            acc = emit(relax.op.matmul(data, relax.const(w_q), out_dtype="int32"), name)
            w_sum = w_q.astype(np.int64).sum(axis=0)
            out_axis = out_ndim - 1
        else:  # the lowering checks the op first
            raise ValueError(f"no integer kernel for {op}")
        zero_points = per_output_channel(qp.zero_point, w_sum.size).astype(np.int64)
        offset = -(zero_points * w_sum).astype(np.int64) if np.any(zero_points) else None
        return Accumulator(acc, accumulator_scale(qp, scales), out_axis, out_ndim, offset)

    def activation_matmul(self, emit: Emit, call: relax.Call, data: relax.Expr, qp: ActQParams, other: relax.Expr,
                          other_qp: ActQParams, name: str) -> Accumulator:
        """``matmul(A, B)`` of two activations held as uint8 codes (``A`` at ``qp``, ``B`` at
        ``other_qp``, both per tensor), exact in int32. ``B`` is read as int8 ``q_b - 128`` (the
        dot products multiply unsigned by signed bytes; the shift fuses into the kernel reading
        it), its zero point ``z_b - 128`` then:

            sum_k (q_a - z_a)(b - z_b') = matmul(q_a, b) - z_b' rowsum(q_a) - z_a colsum(b) + K z_a z_b'

        the row and column sums are small reductions of their own, subtracted in the matmul's
        epilogue; ``K z_a z_b'`` is the accumulator's constant offset."""
        signed = emit(relax.op.astype(relax.op.subtract(relax.op.astype(other, "int16"), relax.const(128, "int16")),
                                      "int8"), name + "b")
        acc = emit(relax.op.matmul(data, signed, out_dtype="int32"), name)
        za, zb = int(qp.zero_point), int(other_qp.zero_point) - 128
        if zb:
            rows = emit(relax.op.sum(relax.op.astype(data, "int32"), axis=[-1], keepdims=True), name + "rs")
            acc = emit(relax.op.subtract(acc, relax.op.multiply(rows, relax.const(zb, "int32"))), name + "zb")
        if za:
            cols = emit(relax.op.sum(relax.op.astype(signed, "int32"), axis=[-2], keepdims=True), name + "cs")
            acc = emit(relax.op.subtract(acc, relax.op.multiply(cols, relax.const(za, "int32"))), name + "za")
        depth = int(tensor_shape(data)[-1])
        offset = np.array([depth * za * zb], np.int64) if za and zb else None
        scale = np.array([np.float32(qp.scale) * np.float32(other_qp.scale)], np.float32)
        return Accumulator(acc, scale, -1, len(call.ty.shape), offset)

    def add_bias(self, emit: Emit, acc: Accumulator, bias: np.ndarray, name: str) -> Accumulator:
        """Fold a per-channel fp32 bias into the int32 accumulator: ``round(b / (s_x s_w))``."""
        b = np.round(bias.reshape(-1).astype(np.float64) / acc.scale.astype(np.float64)).astype(np.int64)
        offset = b if acc.offset is None else acc.offset + b
        return Accumulator(acc.expr, acc.scale, acc.channel_axis, acc.ndim, offset)

    def acc_to_float(self, emit: Emit, acc: Accumulator, name: str) -> relax.Expr:
        """int32 accumulator -> fp32 real values (fused into the MAC kernel's epilogue)."""
        scale = relax.const(broadcast_scales(acc.scale, acc.ndim, acc.channel_axis))
        expr = acc.expr
        if acc.offset is not None:
            offset = np.clip(acc.offset, -2**31, 2**31 - 1).astype(np.int32)
            expr = emit(relax.op.add(expr, relax.const(broadcast_scales(offset, acc.ndim, acc.channel_axis))), name + "b")
        return emit_chain(emit, expr, [lambda v: relax.op.astype(v, "float32"),
                                       lambda v: relax.op.multiply(v, scale)], name)


class FakeQuantArith:
    """The QDQ simulation of :class:`IntegerArith`: same quantizers, float32 arithmetic."""

    simulated = True

    def quantize(self, emit: Emit, x: relax.Expr, qp: ActQParams, name: str) -> relax.Expr:
        return emit_chain(emit, x, fake_quant_activation_steps(qp, rank(x)), name)

    def to_float(self, emit: Emit, q: relax.Expr, qp: ActQParams, name: str) -> relax.Expr:
        return q

    def rescale(self, emit: Emit, q: relax.Expr, src: ActQParams, dst: ActQParams, name: str) -> relax.Expr:
        return self.quantize(emit, q, dst, name)

    def pad(self, emit: Emit, q: relax.Expr, pad_width: list[int], qp: ActQParams, name: str) -> relax.Expr:
        return emit(relax.op.nn.pad(q, pad_width, pad_value=0.0), name)

    def mac(self, emit: Emit, call: relax.Call, data: relax.Expr, qp: ActQParams, weight: np.ndarray,
            scales: np.ndarray, w_bits: int, channel_axis: int, name: str) -> Accumulator:
        qmax = np.float32(2 ** (w_bits - 1) - 1)
        s = broadcast_scales(scales, weight.ndim, channel_axis)
        w_fq = (np.clip(np.round(weight.astype(np.float32) / s), -qmax, qmax) * s).astype(np.float32)
        expr = emit(relax.Call(call.op, [data, relax.const(w_fq), *call.args[2:]], call.attrs, call.ty_args), name)
        out_ndim = len(call.ty.shape)
        out_axis = 1 if call.op.name in _CHANNELS_FIRST else out_ndim - 1
        return Accumulator(expr, accumulator_scale(qp, scales), out_axis, out_ndim)

    def activation_matmul(self, emit: Emit, call: relax.Call, data: relax.Expr, qp: ActQParams, other: relax.Expr,
                          other_qp: ActQParams, name: str) -> Accumulator:
        expr = emit(relax.op.matmul(data, other), name)
        scale = np.array([np.float32(qp.scale) * np.float32(other_qp.scale)], np.float32)
        return Accumulator(expr, scale, -1, len(call.ty.shape))

    def add_bias(self, emit: Emit, acc: Accumulator, bias: np.ndarray, name: str) -> Accumulator:
        """The bias quantized like the integer kernel's (int32 at ``s_x * s_w``), as a float add:
        a QDQ model carries the same quantized bias (ONNX QDQ's int32 bias)."""
        b = np.round(bias.reshape(-1).astype(np.float64) / acc.scale.astype(np.float64)) * acc.scale.astype(np.float64)
        expr = emit(relax.op.add(acc.expr, relax.const(broadcast_scales(b.astype(np.float32), acc.ndim, acc.channel_axis))),
                    name)
        return Accumulator(expr, acc.scale, acc.channel_axis, acc.ndim)

    def acc_to_float(self, emit: Emit, acc: Accumulator, name: str) -> relax.Expr:
        return acc.expr
