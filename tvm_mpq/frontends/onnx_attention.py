"""ONNX ``Attention`` nodes (opset 23) written as the products and the softmax they compute.

PyTorch's dynamo exporter writes ``scaled_dot_product_attention`` (``nn.MultiheadAttention``,
``nn.TransformerEncoderLayer``, most hand-written attention) as one standard ``Attention``
node from opset 23 on. TVM 0.27's Relax ONNX importer maps ``Attention`` to its converter of
onnxruntime's contrib op (``com.microsoft``), which reads a ``num_heads`` attribute the standard
op does not have, so such a model stopped at import with the bare message ``'num_heads'``. With
the static shapes the import fixes, the node is written as the ONNX reference computes it:

* 3-D ``Q`` / ``K`` / ``V`` (``[B, S, heads * D]``) are split into heads (``Reshape`` +
  ``Transpose`` to ``[B, heads, S, D]``) by ``q_num_heads`` / ``kv_num_heads``;
* ``past_key`` / ``past_value`` are concatenated before the new keys and values (the
  ``present_key`` / ``present_value`` outputs);
* grouped-query attention repeats each key / value head ``q_num_heads / kv_num_heads`` times;
* ``Q * sqrt(scale)`` times ``(K * sqrt(scale))^T`` (``scale`` defaults to ``1 / sqrt(D)``), the
  ``softcap`` (``softcap * tanh(x / softcap)``), then the mask: a boolean ``attn_mask`` as 0 /
  minus infinity, a float one added as it is, ``is_causal`` as the bottom-right aligned
  triangle (offset by the past length);
* ``Softmax`` over the keys, times ``V``, and for 3-D inputs back to ``[B, S, heads * Dv]``.

The two products multiply activations, so they are ``matmul`` layers of the table (fp32 in a
compiled build, as any attention's products). What the rewrite does not take is one
:class:`~tvm_mpq.errors.MpqError` line naming the node: shapes that are not static, 3-D inputs
without head counts, a mask shorter than the keys, ``nonpad_kv_seqlen``, sliding windows, and
the ``qk_matmul_output`` output.
"""

from __future__ import annotations

import numpy as np
import onnx

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.onnx_nodes import NodeWriter, node_attributes

ATTENTION_OPS = ("Attention",)


def attention_as_products(nodes: list[onnx.NodeProto], values: dict[str, np.ndarray],
                          shapes: dict[str, tuple[int, ...]], types: dict[str, int]) -> list[onnx.NodeProto]:
    """``nodes`` with every standard ``Attention`` node replaced by its products and softmax
    (module docstring); constants are added to ``values``. ``shapes`` / ``types``: static shapes
    and ONNX element types of the computed tensors (a mask's kind is its type)."""
    shapes = {**shapes, **{name: tuple(np.shape(value)) for name, value in values.items()}}
    types = {**types, **{name: onnx.helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype)
                         for name, value in values.items()}}
    out: list[onnx.NodeProto] = []
    for index, node in enumerate(nodes):
        if node.op_type not in ATTENTION_OPS or node.domain not in ("", "ai.onnx"):
            out.append(node)
            continue
        writer = NodeWriter(node.name or f"Attention_{index}", values)
        _rewrite(node, writer, shapes, types)
        out.extend(writer.nodes)
    return out


def _rewrite(node: onnx.NodeProto, w: NodeWriter, shapes: dict[str, tuple[int, ...]], types: dict[str, int]) -> None:
    def fail(why: str) -> MpqError:
        return MpqError(f"ONNX Attention '{w.prefix}': {why}")

    attrs = node_attributes(node)
    q, k, v, mask, past_k, past_v, nonpad = (list(node.input) + [""] * 7)[:7]
    y, present_k, present_v, qk_out = (list(node.output) + [""] * 4)[:4]
    if nonpad:
        raise fail("nonpad_kv_seqlen (an external key / value cache) is not supported")
    if attrs.get("left_window_size", -1) >= 0 or attrs.get("right_window_size", -1) >= 0:
        raise fail("sliding-window attention is not supported")
    if qk_out:
        raise fail("its qk_matmul_output output is not supported")
    if bool(past_k) != bool(past_v):
        raise fail("past_key and past_value must be given together")
    if any(t and t not in shapes for t in (q, k, v, mask, past_k, past_v)):
        raise fail("Q, K, V (and the mask and past) need static shapes: give the inputs' dims with --input-shape")
    rank = len(shapes[q])
    if rank == 3:
        q_heads, kv_heads = attrs.get("q_num_heads"), attrs.get("kv_num_heads")
        if not q_heads or not kv_heads:
            raise fail("3-D Q / K / V need the q_num_heads and kv_num_heads attributes")
        q, k, v = (_split_heads(w, t, shapes[t], heads, tag)
                   for t, heads, tag in ((q, q_heads, "q"), (k, kv_heads, "k"), (v, kv_heads, "v")))
    elif rank != 4:
        raise fail(f"Q has rank {rank}: 3-D or 4-D inputs only")
    batch, q_heads, q_len, head = _heads_shape(shapes, node.input[0], rank, attrs.get("q_num_heads"))
    _, kv_heads, kv_len, _ = _heads_shape(shapes, node.input[1], rank, attrs.get("kv_num_heads"))
    v_head = _heads_shape(shapes, node.input[2], rank, attrs.get("kv_num_heads"))[3]
    past_len = shapes[past_k][2] if past_k else 0
    kv_len += past_len
    if past_k:
        k = w.op("Concat", [past_k, k], "present_key", present_k or None, axis=2)
        v = w.op("Concat", [past_v, v], "present_value", present_v or None, axis=2)
    else:  # (the present key / value are the node's own, in heads)
        k = w.op("Identity", [k], "present_key", present_k) if present_k else k
        v = w.op("Identity", [v], "present_value", present_v) if present_v else v
    if q_heads != kv_heads:
        if q_heads % kv_heads:
            raise fail(f"{q_heads} query heads are not a multiple of {kv_heads} key / value heads")
        k = _repeat_heads(w, k, (batch, kv_heads, kv_len, head), q_heads // kv_heads, "k")
        v = _repeat_heads(w, v, (batch, kv_heads, kv_len, v_head), q_heads // kv_heads, "v")

    scale = attrs.get("scale") or 1.0 / np.sqrt(head)
    root = w.const("scale_root", np.float32(np.sqrt(np.float32(scale))))
    scaled_q = w.op("Mul", [q, root], "q_scaled")
    scaled_k = w.op("Mul", [w.op("Transpose", [k], "k_t", perm=[0, 1, 3, 2]), root], "k_t_scaled")
    scores = w.op("MatMul", [scaled_q, scaled_k], "scores")
    softcap = float(attrs.get("softcap", 0.0))
    if softcap > 0:
        cap = w.const("softcap", np.float32(softcap))
        scores = w.op("Mul", [w.op("Tanh", [w.op("Div", [scores, cap], "capped_in")], "capped_tanh"), cap], "capped")
    bias = _mask_bias(w, mask, shapes, types, kv_len, fail)
    if attrs.get("is_causal", 0):
        allowed = np.arange(kv_len)[None, :] <= np.arange(q_len)[:, None] + past_len
        causal = w.const("causal", np.where(allowed, 0.0, -np.inf).astype(np.float32))
        bias = causal if bias is None else w.op("Add", [bias, causal], "mask_causal")
    if bias is not None:
        scores = w.op("Add", [scores, bias], "scores_masked")
    probs = w.op("Softmax", [scores], "probs", axis=-1)
    if rank == 4:
        w.op("MatMul", [probs, v], "context", y)
        return
    context = w.op("Transpose", [w.op("MatMul", [probs, v], "context")], "context_t", perm=[0, 2, 1, 3])
    w.op("Reshape", [context, w.const("y_shape", np.array([batch, q_len, q_heads * v_head], np.int64))], "y", y)


def _heads_shape(shapes: dict[str, tuple[int, ...]], tensor: str, rank: int,
                 heads: int | None) -> tuple[int, int, int, int]:
    """``(batch, heads, length, head size)`` of an input as the node reads it."""
    shape = shapes[tensor]
    if rank == 4:
        return tuple(int(d) for d in shape)  # type: ignore[return-value]
    return int(shape[0]), int(heads), int(shape[1]), int(shape[2]) // int(heads)


def _split_heads(w: NodeWriter, tensor: str, shape: tuple[int, ...], heads: int, tag: str) -> str:
    """``[B, S, heads * D]`` -> ``[B, heads, S, D]``."""
    batch, length, hidden = shape
    split = w.op("Reshape", [tensor, w.const(f"{tag}_heads_shape", np.array([batch, length, heads, hidden // heads],
                                                                             np.int64))], f"{tag}_heads")
    return w.op("Transpose", [split], f"{tag}_heads_t", perm=[0, 2, 1, 3])


def _repeat_heads(w: NodeWriter, tensor: str, shape: tuple[int, int, int, int], repeats: int, tag: str) -> str:
    """Each head ``repeats`` times in a row (``h0, h0, h1, h1, ...``), as grouped-query attention reads them."""
    batch, heads, length, size = shape
    wide = w.op("Unsqueeze", [tensor, w.const(f"{tag}_group_axis", np.array([2], np.int64))], f"{tag}_group")
    wide = w.op("Expand", [wide, w.const(f"{tag}_group_shape", np.array([batch, heads, repeats, length, size],
                                                                          np.int64))], f"{tag}_groups")
    return w.op("Reshape", [wide, w.const(f"{tag}_repeated_shape", np.array([batch, heads * repeats, length, size],
                                                                              np.int64))], f"{tag}_repeated")


def _mask_bias(w: NodeWriter, mask: str, shapes: dict[str, tuple[int, ...]], types: dict[str, int], kv_len: int,
               fail) -> str | None:
    """The additive bias of ``attn_mask``: a boolean mask as 0 (attend) / minus infinity, a float
    mask as it is; None without a mask."""
    if not mask:
        return None
    if shapes[mask][-1] != kv_len:
        raise fail(f"its attn_mask covers {shapes[mask][-1]} keys of {kv_len}: a mask shorter than the keys is not supported")
    if types.get(mask) == onnx.TensorProto.BOOL:
        return w.op("Where", [mask, w.const("attend", np.float32(0.0)), w.const("masked", np.float32(-np.inf))],
                    "mask_bias")
    return mask
