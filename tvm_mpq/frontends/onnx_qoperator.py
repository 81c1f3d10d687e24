"""Operator-format quantized ONNX (``QLinearConv``, ``QGemm``, ...) read as the QDQ model it is.

onnxruntime's ``quantize_static(quant_format=QOperator)`` writes each quantized op as one node
on uint8 / int8 codes with its scales and zero points as inputs: ``QLinearConv`` and
``QLinearMatMul`` (standard ONNX), ``QGemm``, ``QLinearAdd``, ``QLinearMul``,
``QLinearGlobalAveragePool``, ``QLinearAveragePool``, ``QLinearConcat``, ``QLinearSigmoid`` and
``QLinearLeakyRelu`` (onnxruntime's ``com.microsoft`` domain). TVM's
importer takes none of them ("uses ONNX ops TVM cannot import"). Each becomes the QDQ form the
same quantization has in onnxruntime's other format: ``DequantizeLinear`` of every coded input,
the float op, ``QuantizeLinear`` at the output's scale and zero point. An int32 bias (scale
``x_scale * w_scale``, zero point 0) becomes the float bias it codes. TVM imports QDQ models and
tvm-mpq builds them as onnxruntime computes them (the float op between the dequantize and the
quantize); onnxruntime's operator kernels requantize integer sums with a float multiplier, so a
code can differ where that lands on a rounding boundary. tvm-mpq then makes its own precision
decision on the float ops, as it does for a QDQ file.
"""

from __future__ import annotations

import numpy as np
import onnx

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.onnx_nodes import NodeWriter, node_attributes

_MS = "com.microsoft"

QOPERATOR_OPS = {("", "QLinearConv"), ("", "QLinearMatMul"), ("ai.onnx", "QLinearConv"), ("ai.onnx", "QLinearMatMul"),
                 (_MS, "QGemm"), (_MS, "QLinearAdd"), (_MS, "QLinearMul"), (_MS, "QLinearGlobalAveragePool"),
                 (_MS, "QLinearAveragePool"), (_MS, "QLinearConcat"), (_MS, "QLinearSigmoid"),
                 (_MS, "QLinearLeakyRelu")}
"""The operator-format nodes :func:`dequantized_operators` rewrites, by (domain, op type)."""


def _inputs(node: onnx.NodeProto, count: int) -> list[str]:
    return list(node.input) + [""] * (count - len(node.input))


def _dequantized(w: NodeWriter, codes: str, scale: str, zero: str, tag: str, axis: int | None = None) -> str:
    inputs = [codes, scale] + ([zero] if zero else [])
    return w.op("DequantizeLinear", inputs, tag, **({} if axis is None else {"axis": axis}))


def _quantized(w: NodeWriter, x: str, scale: str, zero: str, output: str) -> str:
    return w.node("QuantizeLinear", [x, scale] + ([zero] if zero else []), f"{w.prefix}/quantize", output)


def _bias(w: NodeWriter, node: onnx.NodeProto, bias: str, x_scale: str, w_scale: str) -> str:
    """The float bias an int32 bias codes at ``x_scale * w_scale`` (both constants)."""
    missing = [t for t in (bias, x_scale, w_scale) if t not in w.values]
    if missing:
        raise MpqError(f"cannot read {node.op_type} node '{w.prefix}': its input '{missing[0]}' is not a constant")
    real = np.asarray(w.values[bias], np.float64) * np.asarray(w.values[x_scale], np.float64) \
        * np.asarray(w.values[w_scale], np.float64).reshape(-1)
    return w.const("bias", real.astype(np.float32))


def _channel_axis(w: NodeWriter, scale: str, axis: int) -> int | None:
    """``axis`` for a per-channel weight scale, ``None`` for a per-tensor one."""
    value = w.values.get(scale)
    return axis if value is not None and np.asarray(value).size > 1 else None


def _rewrite(node: onnx.NodeProto, w: NodeWriter) -> None:
    op, attrs, out = node.op_type, node_attributes(node), node.output[0]
    if op == "QLinearConv":
        x, xs, xz, k, ks, kz, ys, yz, b = _inputs(node, 9)
        inputs = [_dequantized(w, x, xs, xz, "x"), _dequantized(w, k, ks, kz, "w", _channel_axis(w, ks, 0))]
        if b:
            inputs.append(_bias(w, node, b, xs, ks))
        _quantized(w, w.op("Conv", inputs, "conv", **attrs), ys, yz, out)
    elif op == "QLinearMatMul":
        a, as_, az, b, bs, bz, ys, yz = _inputs(node, 8)
        product = w.op("MatMul", [_dequantized(w, a, as_, az, "a"),
                                  _dequantized(w, b, bs, bz, "b", _channel_axis(w, bs, 1))], "matmul")
        _quantized(w, product, ys, yz, out)
    elif op == "QGemm":
        a, as_, az, b, bs, bz, c, ys, yz = _inputs(node, 9)
        trans_b = int(attrs.get("transB", 0))
        inputs = [_dequantized(w, a, as_, az, "a"), _dequantized(w, b, bs, bz, "b", _channel_axis(w, bs, 0 if trans_b else 1))]
        if c and float(attrs.get("alpha", 1.0)) != 1.0:  # how the int32 C's scale takes alpha: not read
            raise MpqError(f"cannot read QGemm node '{w.prefix}': an int32 bias with alpha != 1 is not read")
        if c:
            inputs.append(_bias(w, node, c, as_, bs))
        gemm = {k: v for k, v in attrs.items() if k in ("alpha", "transA", "transB")}
        if ys:
            _quantized(w, w.op("Gemm", inputs, "gemm", **gemm), ys, yz, out)
        else:  # no output scale: the float result is the output
            w.node("Gemm", inputs, f"{w.prefix}/gemm", out, **gemm)
    elif op in ("QLinearAdd", "QLinearMul"):
        a, as_, az, b, bs, bz, ys, yz = _inputs(node, 8)
        result = w.op(op.removeprefix("QLinear"), [_dequantized(w, a, as_, az, "a"), _dequantized(w, b, bs, bz, "b")], "op")
        _quantized(w, result, ys, yz, out)
    elif op in ("QLinearGlobalAveragePool", "QLinearAveragePool"):
        x, xs, xz, ys, yz = _inputs(node, 5)
        if int(attrs.pop("channels_last", 0)):
            raise MpqError(f"cannot read {op} node '{w.prefix}': channels_last=1 is not read")
        pool = w.op(op.removeprefix("QLinear"), [_dequantized(w, x, xs, xz, "x")], "pool", **attrs)
        _quantized(w, pool, ys, yz, out)
    elif op == "QLinearConcat":
        ys, yz, *rest = list(node.input)
        parts = [_dequantized(w, rest[i], rest[i + 1], rest[i + 2], f"x{i // 3}") for i in range(0, len(rest), 3)]
        _quantized(w, w.op("Concat", parts, "concat", **attrs), ys, yz, out)
    else:  # QLinearSigmoid, QLinearLeakyRelu
        x, xs, xz, ys, yz = _inputs(node, 5)
        _quantized(w, w.op(op.removeprefix("QLinear"), [_dequantized(w, x, xs, xz, "x")], "op", **attrs), ys, yz, out)


def dequantized_operators(nodes: list[onnx.NodeProto], values: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """``nodes`` with every node of :data:`QOPERATOR_OPS` written as its QDQ form (see the
    module docstring), new constants added to ``values``. MpqError, naming the node, for an int32
    bias whose scales are not constants, a ``QGemm`` bias with ``alpha != 1`` and channels-last
    pools."""
    out = []
    for index, node in enumerate(nodes):
        if (node.domain, node.op_type) not in QOPERATOR_OPS:
            out.append(node)
            continue
        writer = NodeWriter(node.name or f"{node.op_type}_{index}", values)
        _rewrite(node, writer)
        out.extend(writer.nodes)
    return out


__all__ = ["QOPERATOR_OPS", "dequantized_operators"]
