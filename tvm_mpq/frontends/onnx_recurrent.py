"""ONNX ``LSTM`` / ``GRU`` / ``RNN`` nodes written out as the ops TVM imports, one step per time step.

TVM 0.27's Relax ONNX importer has no recurrent ops (Relay's had them, unrolled the same way),
so OCR heads (CNN + LSTM + CTC), voice-activity models and seq2seq encoders stopped at import.
With the static input shapes the import already fixes, the sequence length is known, and each
node becomes, per direction:

* one ``MatMul`` of the whole input sequence with ``W^T`` plus both biases (a dense layer over
  ``S x B`` rows: the input projection, quantizable like any dense layer), then
* per time step, ``Gather`` of that step's row, ``MatMul`` of the hidden state with ``R^T`` (a
  dense layer; every step reads the same weight), the gate arithmetic of the ONNX definition
  (``Slice`` per gate, the node's activations, peepholes, ``clip``), and the new state;
* ``Y`` / ``Y_h`` / ``Y_c`` assembled with ``Reshape`` + ``Concat`` (+ ``Transpose`` for
  ``layout=1``), under the node's own output names.

A sequence longer than :data:`UNROLL_STEPS` is not unrolled (a graph node per step makes the
compile time grow with the sequence: pyannote's 589-frame BiLSTM took more than 15 minutes):
the input projection of all directions is one dense layer (``W^T`` of each direction side by
side), and the steps of all directions become one
``Recurrence`` node of the ``ai.tvm_mpq`` domain (:data:`LOOP_DOMAIN`), which the importer turns
into one loop kernel (:mod:`tvm_mpq.kernels.recurrence`); its recurrent product stays float32.
:func:`standard_recurrences` writes such a node back as the standard ONNX node (``W`` the
identity on the projected input), so the rewritten model still runs in onnxruntime (exports,
tests).

Only ops that exist with the same signature in every opset the importer takes are emitted
(``Slice`` and ``Reshape`` with constant inputs, ``Gather``, ``MatMul``, ``Concat``,
``Transpose``, elementwise ops), so the rewritten model is still the model's opset. What the
rewrite needs but cannot find is one :class:`~tvm_mpq.errors.MpqError` line naming the node:
weights that are not constants, a sequence length that is not static, ``sequence_lens`` that
differ from it, an activation outside :data:`ACTIVATIONS`, LSTM's ``input_forget``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import onnx
import onnx.helper

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.onnx_nodes import NodeWriter, node_attributes
from tvm_mpq.types import RECURRENT_GATES as GATES

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
ACTIVATIONS = ("Sigmoid", "Tanh", "Relu", "HardSigmoid", "LeakyRelu")
"""Activations the rewrite writes out (ONNX ops of the same name; HardSigmoid / LeakyRelu take
the node's ``activation_alpha`` / ``activation_beta``)."""
UNROLL_STEPS = 32
"""Longest sequence unrolled (every step's recurrent product a dense layer of the table); a
longer one runs as one loop kernel."""
LOOP_DOMAIN = "ai.tvm_mpq"
LOOP_OP = "Recurrence"


State = Union[str, np.ndarray, None]


@dataclass
class _Emitter(NodeWriter):
    """New nodes and constants for one recurrent node, named under its name; each node's name
    is numbered (a step's ops repeat per time step)."""

    count: int = 0

    def op(self, op_type: str, inputs: list[str], tag: str, output: str | None = None, **attrs) -> str:
        self.count += 1
        name = f"{self.prefix}/{tag}_{self.count}"
        return self.node(op_type, inputs, name, output or name, **attrs)

    def slice_last(self, x: str, start: int, stop: int, tag: str) -> str:
        starts = self.const(f"{tag}_start_{start}", np.array([start], np.int64))
        ends = self.const(f"{tag}_end_{stop}", np.array([stop], np.int64))
        axes = self.const("axes_last", np.array([-1], np.int64))
        return self.op("Slice", [x, starts, ends, axes], tag)

    # A state is a tensor name, a constant (``np.ndarray``: a constant initial state) or
    # ``None`` (zero: no initial state). The helpers below fold what is constant, so no MatMul
    # of two constants reaches TVM (its constant folding would remove a layer of the table).
    def operand(self, value: State) -> str:
        return value if isinstance(value, str) else self.const(f"k{len(self.values)}", np.asarray(value, np.float32))

    def add(self, a: State, b: State, tag: str) -> State:
        if a is None or b is None:
            return b if a is None else a
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            return a + b
        return self.op("Add", [self.operand(a), self.operand(b)], tag)

    def mul(self, a: State, b: State, tag: str) -> State:
        if a is None or b is None:
            return None
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            return a * b
        return self.op("Mul", [self.operand(a), self.operand(b)], tag)

    def sub(self, a: State, b: State, tag: str) -> State:
        if b is None:
            return a
        if a is None:
            return -b if isinstance(b, np.ndarray) else self.op("Neg", [b], tag)
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            return a - b
        return self.op("Sub", [self.operand(a), self.operand(b)], tag)

    def matmul(self, h: State, weight: np.ndarray, weight_name: str, tag: str) -> State:
        if h is None:
            return None
        if isinstance(h, np.ndarray):
            product = h @ weight
            return product if np.any(product) else None
        return self.op("MatMul", [h, weight_name], tag)

    def reshape(self, x: str, shape: tuple[int, ...], tag: str, output: str | None = None) -> str:
        target = self.const("shape_" + "x".join(str(d) for d in shape), np.array(shape, np.int64))
        return self.op("Reshape", [x, target], tag, output)


def _activation(em: _Emitter, name: str, x: str, alpha: float | None, beta: float | None, tag: str) -> str:
    if name == "HardSigmoid":
        return em.op(name, [x], tag, alpha=0.2 if alpha is None else alpha, beta=0.5 if beta is None else beta)
    if name == "LeakyRelu":
        return em.op(name, [x], tag, alpha=0.01 if alpha is None else alpha)
    return em.op(name, [x], tag)


def expand_recurrent(nodes: list[onnx.NodeProto], values: dict[str, np.ndarray],
                     shapes: dict[str, tuple[int, ...]], unroll_steps: int = UNROLL_STEPS) -> list[onnx.NodeProto]:
    """``nodes`` with every LSTM / GRU / RNN node replaced by its unrolled steps, or, over more
    than ``unroll_steps`` steps, by its input projections and one ``Recurrence`` loop node
    (module docstring); the new constants are added to ``values``. MpqError, naming the node,
    for one the rewrite cannot take."""
    out: list[onnx.NodeProto] = []
    for index, node in enumerate(nodes):
        if node.op_type not in RECURRENT_OPS or node.domain not in ("", "ai.onnx"):
            out.append(node)
            continue
        out.extend(_expand(node, node.name or f"{node.op_type}_{index}", values, shapes, unroll_steps))
    return out


def _text(value) -> str:
    """An ONNX string attribute (``get_attribute_value`` gives bytes) as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _input(node: onnx.NodeProto, position: int) -> str:
    return node.input[position] if len(node.input) > position else ""


def _expand(node: onnx.NodeProto, name: str, values: dict[str, np.ndarray],
            shapes: dict[str, tuple[int, ...]], unroll_steps: int) -> list[onnx.NodeProto]:
    op = node.op_type
    where = f"{op} node '{name}'"
    attrs = node_attributes(node)
    x, w_name, r_name, b_name, lens_name = (_input(node, i) for i in range(5))
    h0_name = _input(node, 5)
    c0_name = _input(node, 6) if op == "LSTM" else ""
    p_name = _input(node, 7) if op == "LSTM" else ""
    for label, tensor in (("W", w_name), ("R", r_name), ("B", b_name), ("P", p_name)):
        if tensor and tensor not in values:
            raise MpqError(f"cannot unroll {where}: its {label} input '{tensor}' is not a constant")
    if x not in shapes or len(shapes[x]) != 3:
        raise MpqError(f"cannot unroll {where}: the shape of its input '{x}' is not static (give --input-shape)")
    if attrs.get("input_forget", 0):
        raise MpqError(f"cannot unroll {where}: input_forget=1 is not supported")
    layout = int(attrs.get("layout", 0))
    steps, batch, _ = shapes[x] if layout == 0 else (shapes[x][1], shapes[x][0], shapes[x][2])
    if lens_name:
        lens = values.get(lens_name)
        if lens is None or np.any(np.asarray(lens) != steps):
            raise MpqError(f"cannot unroll {where}: sequence_lens must be a constant equal to the sequence length "
                           f"{steps} for every batch entry")
    weights = np.asarray(values[w_name], np.float32)
    recurrence = np.asarray(values[r_name], np.float32)
    directions, gates_hidden = weights.shape[0], weights.shape[1]
    hidden = int(attrs.get("hidden_size", gates_hidden // GATES[op]))
    gates = GATES[op]
    bias = (np.asarray(values[b_name], np.float32) if b_name
            else np.zeros((directions, 2 * gates * hidden), np.float32))
    peepholes = np.asarray(values[p_name], np.float32) if p_name else None
    direction = attrs.get("direction", b"forward")
    direction = _text(direction)
    functions = [_text(a) for a in attrs.get("activations", [])]
    per_direction = len(DEFAULT_ACTIVATIONS[op])
    functions = functions or list(DEFAULT_ACTIVATIONS[op]) * directions
    for function in functions:
        if function not in ACTIVATIONS:
            raise MpqError(f"cannot unroll {where}: activation {function} is not supported "
                           f"(supported: {', '.join(ACTIVATIONS)})")
    # activation_alpha / _beta are consumed in the order of the activations that take them
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    params = []
    for function in functions:
        alpha = alphas.pop(0) if function in ("HardSigmoid", "LeakyRelu") and alphas else None
        beta = betas.pop(0) if function == "HardSigmoid" and betas else None
        params.append((alpha, beta))

    em = _Emitter(name, values)
    sequence = em.op("Transpose", [x], "x_time_major", perm=[1, 0, 2]) if layout == 1 else x
    clip = attrs.get("clip")
    if steps > unroll_steps:
        loop = _Loop(op, hidden, directions, direction, functions, params, clip,
                     int(attrs.get("linear_before_reset", 0)), layout, batch)
        return _loop_nodes(em, node, loop, sequence, weights, recurrence, bias, peepholes, h0_name, c0_name)
    ys, finals_h, finals_c = [], [], []
    for d in range(directions):
        reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
        acts = functions[d * per_direction:(d + 1) * per_direction]
        act_params = params[d * per_direction:(d + 1) * per_direction]

        def activate(k: int, value: str, tag: str) -> str:
            return _activation(em, acts[k], value, *act_params[k], tag)

        if op == "GRU" and not attrs.get("linear_before_reset", 0):  # r multiplies h before R_h
            products = [_Recurrent(em, recurrence[d, :2 * hidden].T, f"d{d}/R_zr_T"),
                        _Recurrent(em, recurrence[d, 2 * hidden:].T, f"d{d}/R_h_T")]
        else:
            products = [_Recurrent(em, recurrence[d].T, f"d{d}/R_T")]
        projected, rb_h = _projection(em, op, sequence, weights, bias, d, hidden)

        def initial(tensor: str, tag: str) -> State:
            axis = 1 if layout == 1 else 0  # (batch, directions, hidden) with layout=1
            if not tensor:
                return None
            if tensor in values:
                state = np.take(np.asarray(values[tensor], np.float32), d, axis=axis)
                return state if np.any(state) else None
            index = em.const(f"index_{d}", np.array(d, np.int64))
            return em.op("Gather", [tensor, index], f"d{d}/{tag}0", axis=axis)

        h: State = initial(h0_name, "h")
        c: State = initial(c0_name, "c") if op == "LSTM" else None
        outputs: dict[int, str] = {}
        order = range(steps - 1, -1, -1) if reverse else range(steps)
        for t in order:
            tag = f"d{d}/t{t}"
            row = em.op("Gather", [projected, em.const(f"step_{t}", np.array(t, np.int64))], f"{tag}/x", axis=0)
            if op == "GRU":
                h = _gru_step(em, row, h, hidden, tag, activate, clip, products, rb_h)
            elif op == "LSTM":
                h, c = _lstm_step(em, row, h, c, products[0], hidden, tag, activate, clip,
                                  None if peepholes is None else peepholes[d], d)
            else:
                pre = _clipped(em, em.add(row, products[0].times(h, f"{tag}/h_proj"), f"{tag}/pre"), clip, tag)
                h = activate(0, pre, f"{tag}/h")
            outputs[t] = h
        if node.output[0]:
            steps_seq = [em.reshape(outputs[t], (1, 1, batch, hidden), f"d{d}/t{t}/y") for t in range(steps)]
            ys.append(em.op("Concat", steps_seq, f"d{d}/y", axis=0))
        finals_h.append(em.reshape(h, (1, batch, hidden), f"d{d}/h_last"))
        if op == "LSTM":
            finals_c.append(em.reshape(c, (1, batch, hidden), f"d{d}/c_last"))

    outputs = list(node.output) + [""] * (3 - len(node.output))
    _assemble(em, outputs[0], ys, (2, 0, 1, 3) if layout == 1 else None, "y")
    _assemble(em, outputs[1], finals_h, (1, 0, 2) if layout == 1 else None, "y_h")
    if op == "LSTM":
        _assemble(em, outputs[2], finals_c, (1, 0, 2) if layout == 1 else None, "y_c")
    return em.nodes


def _projection(em: _Emitter, op: str, sequence: str, weights: np.ndarray, bias: np.ndarray, d: int,
                hidden: int) -> tuple[str, np.ndarray | None]:
    """Direction ``d``'s input projection ``X W^T + bias`` (a dense layer over every step), and
    GRU's ``Rb_h``: the projection carries both biases, except that one, which is inside
    ``r * (...)``."""
    x_bias, rb_h = _projection_bias(op, bias, d, hidden)
    projected = em.op("MatMul", [sequence, em.const(f"d{d}/W_T", weights[d].T)], f"d{d}/x_proj")
    projected = em.op("Add", [projected, em.const(f"d{d}/x_bias", x_bias)], f"d{d}/x_proj_bias")
    return projected, rb_h


def _projection_bias(op: str, bias: np.ndarray, d: int, hidden: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Direction ``d``'s projection bias (both ONNX biases but GRU's ``Rb_h``), and ``Rb_h``."""
    gates = GATES[op]
    wb, rb = bias[d, :gates * hidden], bias[d, gates * hidden:]
    x_bias = wb + (np.concatenate([rb[:2 * hidden], np.zeros(hidden, np.float32)]) if op == "GRU" else rb)
    return x_bias, (rb[2 * hidden:] if op == "GRU" else None)


@dataclass(frozen=True)
class _Loop:
    """The attributes of a ``Recurrence`` loop node, as read from the recurrent node."""

    op: str
    hidden: int
    directions: int
    direction: str
    functions: list[str]
    params: list[tuple[float | None, float | None]]
    clip: float | None
    linear_before_reset: int
    layout: int
    batch: int


def _loop_nodes(em: _Emitter, node: onnx.NodeProto, loop: _Loop, sequence: str, weights: np.ndarray,
                recurrence: np.ndarray, bias: np.ndarray, peepholes: np.ndarray | None, h0_name: str,
                c0_name: str) -> list[onnx.NodeProto]:
    """The node as one input projection (a dense layer over the sequence's rows for every
    direction at once) and one ``Recurrence`` node over all directions' steps (module docstring)."""
    op, hidden = loop.op, loop.hidden
    # one projection for every direction: [steps, batch, input] x [input, directions * gates * hidden]
    # (on the sequence's rows, [steps * batch, input]: the bias add then fuses into the GEMM)
    x_biases, rb_hs = zip(*(_projection_bias(op, bias, d, hidden) for d in range(loop.directions)))
    w_t = np.concatenate([weights[d].T for d in range(loop.directions)], axis=1)
    rows = em.reshape(sequence, (-1, weights.shape[2]), "x_rows")
    x_all = em.op("MatMul", [rows, em.const("W_T", np.ascontiguousarray(w_t))], "x_proj")
    x_all = em.op("Add", [x_all, em.const("x_bias", np.concatenate(x_biases))], "x_proj_bias")
    r_t = em.const("R_T", np.ascontiguousarray(np.transpose(recurrence, (0, 2, 1))))

    def state(tensor: str, tag: str) -> str:
        """An initial state as ``[directions, batch, hidden]``; '' for a zero one."""
        if not tensor:
            return ""
        if tensor in em.values:
            value = np.asarray(em.values[tensor], np.float32)
            value = np.transpose(value, (1, 0, 2)) if loop.layout == 1 else value
            return em.const(f"{tag}0", value) if np.any(value) else ""
        return em.op("Transpose", [tensor], f"{tag}0_direction_major", perm=[1, 0, 2]) if loop.layout == 1 else tensor

    rb_h = np.stack(rb_hs) if op == "GRU" else None
    inputs = [x_all, r_t, state(h0_name, "h"), state(c0_name, "c") if op == "LSTM" else "",
              em.const("P", peepholes) if peepholes is not None else "",
              em.const("Rb_h", rb_h) if rb_h is not None and np.any(rb_h) else ""]
    while inputs[-1] == "":
        inputs.pop()
    outputs = list(node.output) + [""] * (3 - len(node.output))
    perms = {0: (2, 0, 1, 3), 1: (1, 0, 2), 2: (1, 0, 2)}
    results = []
    for k in range(3 if op == "LSTM" else 2):
        wanted = outputs[k]
        if loop.layout == 1 and wanted:
            results.append(f"{em.prefix}/loop_out{k}")
        else:
            results.append(wanted or f"{em.prefix}/loop_unused{k}")
    attrs = {"kind": op, "hidden_size": hidden, "batch": loop.batch, "direction": loop.direction,
             "activations": loop.functions,
             "activation_alpha": [np.nan if a is None else a for a, _ in loop.params],
             "activation_beta": [np.nan if b is None else b for _, b in loop.params],
             "linear_before_reset": loop.linear_before_reset}
    if loop.clip is not None:
        attrs["clip"] = float(loop.clip)
    em.nodes.append(onnx.helper.make_node(LOOP_OP, inputs, results, name=f"{em.prefix}/loop", domain=LOOP_DOMAIN,
                                          **attrs))
    for k, wanted in enumerate(outputs[:len(results)]):
        if loop.layout == 1 and wanted:
            em.op("Transpose", [results[k]], f"layout{k}", output=wanted, perm=list(perms[k]))
    return em.nodes


def _assemble(em: _Emitter, output: str, parts: list[str], perm: tuple[int, ...] | None, tag: str) -> None:
    """``output`` = the directions' ``parts`` concatenated on the direction axis, transposed
    to ``perm`` for ``layout=1``; nothing when the node does not produce it."""
    if not output:
        return
    if perm is None:
        em.op("Concat", parts, tag, output=output, axis=1 if tag == "y" else 0)
        return
    joined = em.op("Concat", parts, tag, axis=1 if tag == "y" else 0)
    em.op("Transpose", [joined], tag, output=output, perm=list(perm))


def _clipped(em: _Emitter, x: str, clip: float | None, tag: str) -> str:
    if clip is None:
        return x
    low = em.const("clip_low", np.array(-clip, np.float32))
    high = em.const("clip_high", np.array(clip, np.float32))
    return em.op("Min", [em.op("Max", [x, low], f"{tag}/clip_low"), high], f"{tag}/clip")


@dataclass
class _Recurrent:
    """A recurrent weight (``R^T`` or a block of it), a constant of the rewritten model."""

    em: _Emitter
    weight: np.ndarray
    tag: str

    def __post_init__(self) -> None:
        self.name = self.em.const(self.tag, self.weight)

    def times(self, h: State, tag: str) -> State:
        return self.em.matmul(h, self.weight, self.name, tag)


def _lstm_step(em: _Emitter, row: str, h: State, c: State, recurrent: _Recurrent, hidden: int, tag: str, activate,
               clip: float | None, peepholes: np.ndarray | None, d: int) -> tuple[str, str]:
    """One LSTM step (ONNX gate order i, o, f, c): the new hidden and cell state."""
    # clip bounds each gate's pre-activation with its peephole term (onnxruntime's order)
    pre = em.add(row, recurrent.times(h, f"{tag}/h_proj"), f"{tag}/gates")
    if peepholes is None:
        pre = _clipped(em, pre, clip, tag)
    i, o, f, g = (em.slice_last(pre, k * hidden, (k + 1) * hidden, f"{tag}/gate{k}") for k in range(4))
    if peepholes is not None:
        p_i, p_o, p_f = (peepholes[k * hidden:(k + 1) * hidden] for k in range(3))
        i = _clipped(em, em.add(i, em.mul(p_i, c, f"{tag}/pi"), f"{tag}/i_peep"), clip, f"{tag}/i")
        f = _clipped(em, em.add(f, em.mul(p_f, c, f"{tag}/pf"), f"{tag}/f_peep"), clip, f"{tag}/f")
        g = _clipped(em, g, clip, f"{tag}/g")
    i, f, g = activate(0, i, f"{tag}/i"), activate(0, f, f"{tag}/f"), activate(1, g, f"{tag}/g")
    c_new = em.add(em.mul(f, c, f"{tag}/fc"), em.mul(i, g, f"{tag}/ig"), f"{tag}/c")
    if peepholes is not None:
        o = _clipped(em, em.add(o, em.mul(p_o, c_new, f"{tag}/po"), f"{tag}/o_peep"), clip, f"{tag}/o")
    o = activate(0, o, f"{tag}/o")
    return em.op("Mul", [o, activate(2, c_new, f"{tag}/c_act")], f"{tag}/h"), c_new


def _gru_step(em: _Emitter, row: str, h: State, hidden: int, tag: str, activate, clip: float | None,
              products: list[_Recurrent], rb_h: np.ndarray) -> str:
    """One GRU step (ONNX gate order z, r, h): the new hidden state. ``products`` is
    ``[R_zr^T, R_h^T]`` without ``linear_before_reset``, ``[R^T]`` with it."""
    x_z, x_r, x_h = (em.slice_last(row, k * hidden, (k + 1) * hidden, f"{tag}/x{k}") for k in range(3))
    h_proj = products[0].times(h, f"{tag}/h_proj")
    h_z, h_r = ((None, None) if h_proj is None else
                tuple(h_proj[..., k * hidden:(k + 1) * hidden] if isinstance(h_proj, np.ndarray)
                      else em.slice_last(h_proj, k * hidden, (k + 1) * hidden, f"{tag}/h{k}") for k in range(2)))
    z = activate(0, _clipped(em, em.add(x_z, h_z, f"{tag}/z_pre"), clip, f"{tag}/z"), f"{tag}/z")
    r = activate(0, _clipped(em, em.add(x_r, h_r, f"{tag}/r_pre"), clip, f"{tag}/r"), f"{tag}/r")
    if len(products) == 1:  # linear_before_reset: r * (h R_h^T + Rb_h)
        h_h = (None if h_proj is None else h_proj[..., 2 * hidden:] if isinstance(h_proj, np.ndarray)
               else em.slice_last(h_proj, 2 * hidden, 3 * hidden, f"{tag}/h2"))
        candidate = em.add(x_h, em.mul(r, em.add(h_h, rb_h, f"{tag}/hh_bias"), f"{tag}/r_hh"), f"{tag}/cand_pre")
    else:  # (r * h) R_h^T + Rb_h
        reset = products[1].times(em.mul(r, h, f"{tag}/rh"), f"{tag}/rh_proj")
        candidate = em.add(x_h, em.add(reset, rb_h, f"{tag}/rh_bias"), f"{tag}/cand_pre")
    candidate = activate(1, _clipped(em, candidate, clip, f"{tag}/cand"), f"{tag}/cand")
    # h = (1 - z) * candidate + z * h = candidate + z * (h - candidate)
    keep = em.mul(z, em.sub(h, candidate, f"{tag}/h_minus"), f"{tag}/z_keep")
    return em.add(candidate, keep, f"{tag}/h")


QUANTIZED_LSTM = ("com.microsoft", "DynamicQuantizeLSTM")
"""onnxruntime's dynamically quantized LSTM (``quantize_dynamic``): int8 ``W`` / ``R`` stored
transposed (``[directions, input, 4 hidden]``) with per-tensor or per-channel scales and zero points."""


def dequantized_recurrences(nodes: list[onnx.NodeProto], values: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """``nodes`` with every ``DynamicQuantizeLSTM`` written as the float ``LSTM`` it quantizes:
    its weights dequantized (``(q - zero_point) * scale``) and transposed back, the new constants
    added to ``values``. tvm-mpq then decides each layer's precision itself (an int8 layer comes
    back to codes near the model's own). MpqError, naming the node, when a weight, scale or zero
    point is not a constant."""
    out = []
    for index, node in enumerate(nodes):
        if (node.domain, node.op_type) != QUANTIZED_LSTM:
            out.append(node)
            continue
        name = node.name or f"DynamicQuantizeLSTM_{index}"
        ins = list(node.input) + [""] * (12 - len(node.input))
        weights = []
        for q, scale, zero in ((ins[1], ins[8], ins[9]), (ins[2], ins[10], ins[11])):
            missing = [t for t in (q, scale) if not t or t not in values] + ([zero] if zero and zero not in values else [])
            if missing:
                raise MpqError(f"cannot read DynamicQuantizeLSTM node '{name}': its input '{missing[0]}' is not a constant")
            codes = np.asarray(values[q]).astype(np.float32)  # [directions, rows, 4 hidden]
            directions, _, columns = codes.shape

            def per_column(tensor: str, default: float) -> np.ndarray:
                value = np.asarray(values[tensor], np.float32) if tensor else np.full((1,), default, np.float32)
                return value.reshape(directions, 1, columns) if value.size == directions * columns else \
                    value.reshape(-1, 1, 1) if value.size == directions else value.reshape(1, 1, 1)

            dequantized = (codes - per_column(zero, 0.0)) * per_column(scale, 1.0)
            weights.append(np.ascontiguousarray(np.transpose(dequantized, (0, 2, 1))))
        w_name, r_name = f"{name}/W_dequantized", f"{name}/R_dequantized"
        values[w_name], values[r_name] = weights
        attrs = node_attributes(node)
        inputs = [ins[0], w_name, r_name] + ins[3:8]
        while inputs[-1] == "":
            inputs.pop()
        out.append(onnx.helper.make_node("LSTM", inputs, list(node.output), name=name, **attrs))
    return out


def loop_attributes(node: onnx.NodeProto) -> dict:
    """A ``Recurrence`` node's attributes: ``kind``, ``hidden_size``, ``batch``, ``direction``,
    ``activations`` and, per activation, its ``alpha`` / ``beta`` (None: the ONNX default),
    ``clip`` (None: none), ``linear_before_reset``."""
    attrs = node_attributes(node)

    def optional(values: list[float]) -> list[float | None]:
        return [None if np.isnan(v) else float(v) for v in values]

    return {"kind": _text(attrs["kind"]), "hidden_size": int(attrs["hidden_size"]), "batch": int(attrs["batch"]),
            "direction": _text(attrs["direction"]), "activations": [_text(a) for a in attrs["activations"]],
            "alpha": optional(list(attrs.get("activation_alpha", []))),
            "beta": optional(list(attrs.get("activation_beta", []))), "clip": attrs.get("clip"),
            "linear_before_reset": int(attrs.get("linear_before_reset", 0))}


def standard_recurrences(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (modified in place and returned) with every ``Recurrence`` loop node written as
    the standard LSTM / GRU / RNN node it computes: ``X`` the projected input of all directions
    (its rows reshaped to ``[steps, batch, features]``),
    ``W[d]`` the identity on direction ``d``'s block of it, ``R`` and GRU's ``Rb_h`` as given,
    the other biases zero (the projection carries them). onnxruntime runs the result."""
    if not any(node.op_type == LOOP_OP and node.domain == LOOP_DOMAIN for node in model.graph.node):
        return model  # (no weight read: an export of any other model passes through)
    values = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    values.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    nodes = []
    for node in model.graph.node:
        if node.op_type != LOOP_OP or node.domain != LOOP_DOMAIN:
            nodes.append(node)
            continue
        attrs = loop_attributes(node)
        ins = list(node.input) + [""] * (6 - len(node.input))
        r_t = np.asarray(values[ins[1]], np.float32)
        directions, hidden, width = r_t.shape
        identity = np.zeros((directions, width, directions * width), np.float32)
        for d in range(directions):
            identity[d, :, d * width:(d + 1) * width] = np.eye(width, dtype=np.float32)
        bias = np.zeros((directions, 2 * width), np.float32)
        if ins[5]:
            bias[:, width + 2 * hidden:] = np.asarray(values[ins[5]], np.float32)
        prefix = node.name or node.output[0]
        named = {f"{prefix}/W_identity": identity, f"{prefix}/R": np.ascontiguousarray(np.transpose(r_t, (0, 2, 1))),
                 f"{prefix}/B": bias}
        shape = np.array([-1, attrs["batch"], directions * width], np.int64)
        model.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in
                                       [*named.items(), (f"{prefix}/x_shape", shape)])
        sequence = f"{prefix}/x_sequence"  # the projected rows back as [steps, batch, features]
        nodes.append(onnx.helper.make_node("Reshape", [ins[0], f"{prefix}/x_shape"], [sequence], name=sequence))
        inputs = [sequence, *named, "", ins[2]] + ([ins[3], ins[4]] if attrs["kind"] == "LSTM" else [])
        while inputs[-1] == "":
            inputs.pop()
        extra = {"clip": attrs["clip"]} if attrs["clip"] is not None else {}
        if attrs["kind"] == "GRU":
            extra["linear_before_reset"] = attrs["linear_before_reset"]
        alphas = [a for a in attrs["alpha"] if a is not None]
        betas = [b for b in attrs["beta"] if b is not None]
        if alphas:
            extra["activation_alpha"] = alphas
        if betas:
            extra["activation_beta"] = betas
        nodes.append(onnx.helper.make_node(attrs["kind"], inputs, list(node.output), name=prefix,
                                           hidden_size=hidden, direction=attrs["direction"],
                                           activations=attrs["activations"], **extra))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


__all__ = ["ACTIVATIONS", "LOOP_DOMAIN", "LOOP_OP", "QUANTIZED_LSTM", "RECURRENT_OPS", "UNROLL_STEPS",
           "dequantized_recurrences", "expand_recurrent", "loop_attributes", "standard_recurrences"]
