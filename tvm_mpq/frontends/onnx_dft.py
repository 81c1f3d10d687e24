"""ONNX ``DFT`` nodes written as one ``MatMul`` by the transform's cosine / sine table.

TVM 0.27's Relax ONNX importer has no ``DFT`` (opset 17; PyTorch's dynamo exporter writes
``torch.fft.rfft`` / ``torch.stft`` with it), so a model with a spectral front end stopped at
import ("uses ONNX ops TVM cannot import: DFT"). With the static shapes the import fixes, the
signal length ``n`` along the node's axis and the transform length ``L`` (``dft_length``, a
constant, or ``n``) are known, and the discrete Fourier transform is a constant linear map:

* the signal axis is moved next to the last (real / imaginary) axis (``Transpose``), real and
  imaginary parts side by side on one axis (``Reshape``: ``[..., n, c]`` -> ``[..., n * c]``,
  ``c`` 1 for a real signal, 2 for a complex one);
* one ``MatMul`` by the table ``[n * c, K * 2]``: ``X[k] = sum_t x[t] e^{-2 pi i k t / L}``
  (``+i`` and a factor ``1 / L`` for ``inverse``), samples past ``L`` weighted 0 (the node
  truncates) and the zero padding up to ``L`` left out (it adds nothing); ``K = L // 2 + 1``
  for ``onesided``, else ``L``;
* ``Reshape`` to ``[..., K, 2]`` and ``Transpose`` back, under the node's own output name.

The product is a matmul by a constant weight: a dense layer of the table, which the precision
pass may make int8 like any other (its weights per channel, its input per tensor), and which
the kernels run as a GEMM. What the rewrite cannot take is one
:class:`~tvm_mpq.errors.MpqError` line naming the node: a ``dft_length`` or ``axis`` computed at
run time, a signal whose shape is not static, the axis on the real / imaginary dimension.

An ``STFT`` node (``torch.stft`` as PyTorch's exporter writes it) is the same transform of each
frame, weighted by the window: a ``Conv`` over the signal (``[B, c, n]``, the real / imaginary
parts as its ``c`` input channels) with ``K * 2`` output channels, a kernel of ``frame_length``
taps (the table's rows times the window) and the frame step as its stride, then ``Reshape`` +
``Transpose`` to ``[B, frames, K, 2]``: a conv layer of the table (openwakeword's mel front end
ships this conv written out). Its window and frame length must be constants.
"""

from __future__ import annotations

import numpy as np
import onnx

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.onnx_nodes import NodeWriter, node_attributes


def dft_table(samples: int, length: int, channels: int, onesided: bool, inverse: bool) -> np.ndarray:
    """``[samples * channels, bins * 2]``: row ``t * channels + c`` (``c`` 0 real, 1 imaginary)
    maps sample ``t`` to column ``k * 2 + j`` (``j`` 0 real, 1 imaginary) of bin ``k``."""
    bins = length // 2 + 1 if onesided else length
    t = np.arange(samples, dtype=np.float64)[:, None]
    k = np.arange(bins, dtype=np.float64)[None, :]
    angle = 2.0 * np.pi * ((t * k) % length) / length
    sign = 1.0 if inverse else -1.0
    cos, sin = np.cos(angle), sign * np.sin(angle)
    cos[length:], sin[length:] = 0.0, 0.0  # samples past L are truncated
    table = np.zeros((samples, channels, bins, 2))
    table[:, 0, :, 0], table[:, 0, :, 1] = cos, sin  # real sample: (cos, sign * sin)
    if channels == 2:  # imaginary sample i*y: y * (i cos - sign sin)
        table[:, 1, :, 0], table[:, 1, :, 1] = -sin, cos
    if inverse:
        table /= length
    return table.reshape(samples * channels, bins * 2).astype(np.float32)


SPECTRAL_OPS = ("DFT", "STFT")


def spectral_as_products(nodes: list[onnx.NodeProto], values: dict[str, np.ndarray],
                         shapes: dict[str, tuple[int, ...]], opset: int) -> list[onnx.NodeProto]:
    """``nodes`` with every ``DFT`` node replaced by its table product and every ``STFT`` node
    by its windowed table conv (module docstring); the tables and shapes are added to ``values``."""
    out: list[onnx.NodeProto] = []
    for index, node in enumerate(nodes):
        if node.op_type not in SPECTRAL_OPS or node.domain not in ("", "ai.onnx"):
            out.append(node)
            continue
        rewrite = _rewrite_dft if node.op_type == "DFT" else _rewrite_stft
        out.extend(rewrite(node, node.name or f"{node.op_type}_{index}", values, shapes, opset))
    return out


def _constant_array(node: onnx.NodeProto, position: int, values: dict[str, np.ndarray], what: str,
                    name: str) -> np.ndarray | None:
    if len(node.input) <= position or not node.input[position]:
        return None
    if node.input[position] not in values:
        raise MpqError(f"{node.op_type} '{name}': its {what} is computed at run time; only a constant {what} is supported")
    return np.asarray(values[node.input[position]])


def _constant(node: onnx.NodeProto, position: int, values: dict[str, np.ndarray], what: str, name: str) -> int | None:
    value = _constant_array(node, position, values, what, name)
    return None if value is None else int(value.reshape(()))


def _signal_shape(node: onnx.NodeProto, name: str, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    shape = shapes.get(node.input[0])
    if shape is None or any(not isinstance(d, int) or d < 1 for d in shape):
        raise MpqError(f"{node.op_type} '{name}': the shape of its input '{node.input[0]}' is not static")
    if shape[-1] not in (1, 2) or len(shape) < 3:
        raise MpqError(f"{node.op_type} '{name}': its input must be [..., signal, 1 or 2] (real or complex), "
                       f"got {list(shape)}")
    return shape


def _rewrite_dft(node: onnx.NodeProto, name: str, values: dict[str, np.ndarray],
                 shapes: dict[str, tuple[int, ...]], opset: int) -> list[onnx.NodeProto]:
    attrs = node_attributes(node)
    shape = _signal_shape(node, name, shapes)
    rank, channels = len(shape), shape[-1]
    axis = _constant(node, 2, values, "axis", name) if opset >= 20 else None
    axis = attrs.get("axis", 1) if axis is None else axis
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank - 1:
        raise MpqError(f"DFT '{name}': axis {axis} is not a signal axis of its {rank}-d input")
    samples = shape[axis]
    length = _constant(node, 1, values, "dft_length", name) or samples
    table = dft_table(samples, length, channels, bool(attrs.get("onesided", 0)), bool(attrs.get("inverse", 0)))
    bins = table.shape[1] // 2
    em = NodeWriter(name, values)
    outer = [d for d in range(rank - 1) if d != axis]  # signal axis last but one, then real / imaginary
    perm = [*outer, axis, rank - 1]
    lead = [shape[d] for d in outer]
    x = em.op("Transpose", [node.input[0]], "signal_last", perm=perm) if perm != list(range(rank)) else node.input[0]
    rows = em.op("Reshape", [x, em.const("rows_shape", np.array([*lead, samples * channels], np.int64))], "samples")
    product = em.op("MatMul", [rows, em.const("table", table)], "matmul")
    bins_shape = em.const("bins_shape", np.array([*lead, bins, 2], np.int64))
    inverse_perm = [int(p) for p in np.argsort(perm)]
    if inverse_perm == list(range(rank)):
        em.op("Reshape", [product, bins_shape], "bins", output=node.output[0])
    else:
        em.op("Transpose", [em.op("Reshape", [product, bins_shape], "bins")], "axis_back", output=node.output[0],
              perm=inverse_perm)
    return em.nodes


def _rewrite_stft(node: onnx.NodeProto, name: str, values: dict[str, np.ndarray],
                  shapes: dict[str, tuple[int, ...]], _opset: int) -> list[onnx.NodeProto]:
    attrs = node_attributes(node)
    shape = _signal_shape(node, name, shapes)
    if len(shape) != 3:
        raise MpqError(f"STFT '{name}': its signal must be [batch, length, 1 or 2], got {list(shape)}")
    batch, samples, channels = shape
    step = _constant(node, 1, values, "frame_step", name)
    window = _constant_array(node, 2, values, "window", name)
    length = _constant(node, 3, values, "frame_length", name)
    if length is None and window is None:
        raise MpqError(f"STFT '{name}': it has neither a window nor a frame_length")
    length = int(window.shape[0]) if length is None else length
    window = np.ones(length, np.float32) if window is None else np.asarray(window, np.float64)
    if window.shape != (length,) or not 0 < length <= samples or step is None or step < 1:
        raise MpqError(f"STFT '{name}': window {list(window.shape)}, frame_length {length} and frame_step {step} "
                       f"do not frame a signal of {samples} samples")
    table = dft_table(length, length, channels, bool(attrs.get("onesided", 1)), False)
    bins = table.shape[1] // 2
    kernel = table.reshape(length, channels, bins * 2).transpose(2, 1, 0) * window[None, None, :]
    frames = (samples - length) // step + 1
    em = NodeWriter(name, values)
    signal = em.op("Transpose", [node.input[0]], "channels_first", perm=[0, 2, 1])  # [B, c, n]
    conv = em.op("Conv", [signal, em.const("table", kernel.astype(np.float32))], "conv", kernel_shape=[length],
                 strides=[step])
    split = em.op("Reshape", [conv, em.const("bins_shape", np.array([batch, bins, 2, frames], np.int64))], "bins")
    em.op("Transpose", [split], "frames_first", output=node.output[0], perm=[0, 3, 1, 2])
    return em.nodes


__all__ = ["SPECTRAL_OPS", "dft_table", "spectral_as_products"]
