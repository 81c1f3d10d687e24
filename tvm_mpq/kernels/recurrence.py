"""An LSTM / GRU / RNN recurrence as one loop kernel: the time steps of every direction run in
one TIR function instead of a graph node per step.

A recurrence is sequential in time, which ``te.compute`` cannot say (``te.scan`` does not reach
``create_prim_func``), so the kernel is a ``te.extern`` whose body is built with TVMScript's IR
builder, TVM's own way for sequential kernels (``topi.scan``, ``topi.signal.stft``). What it
computes, per direction ``d`` (run in parallel: the directions are independent) and time step
``t`` (in order, backwards for a reverse direction), with ``x`` the input already projected
(``X W^T`` plus the biases outside the recurrent product, a dense layer of the graph before it):

* LSTM (ONNX gate order i, o, f, c): ``g = x[t] + h R^T``; ``i = f(g_i + P_i c)``,
  ``f = f(g_f + P_f c)``, ``c' = f c + i g(g_c)``, ``o = f(g_o + P_o c')``, ``h' = o h(c')``;
* GRU: ``z = f(x_z + h R_z^T)``, ``r = f(x_r + h R_r^T)``, candidate
  ``g(x_h + (r h) R_h^T + Rb_h)`` (``g(x_h + r (h R_h^T + Rb_h))`` with ``linear_before_reset``),
  ``h' = cand + z (h - cand)``;
* RNN: ``h' = f(x[t] + h R^T)``;

``clip`` bounds every pre-activation (an LSTM gate's with its peephole term, onnxruntime's
order); ``Sigmoid`` and ``Tanh`` are TVM's polynomial forms (:mod:`tvm_mpq.kernels.fast_math`),
vectorizable where libm's are not. The recurrent product is a float32 matrix-vector product per
step with the gate columns innermost (contiguous in ``R^T``, a vector loop); each step reads its
direction's whole ``R^T``, from L2 at 128 hidden units. Outputs: ``Y`` ``[steps, directions,
batch, hidden]`` (ONNX's ``Y`` with ``layout=0``), the last ``h`` and (LSTM) ``c``,
``[directions, batch, hidden]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from tvm_mpq.kernels.fast_math import fast_sigmoid, fast_tanh
from tvm_mpq.types import RECURRENT_GATES as GATES

VECTOR = 16
"""Gate columns per vector loop iteration (LLVM splits it to the target's vector width)."""


@dataclass(frozen=True)
class Activation:
    """An ONNX recurrent activation and its ``activation_alpha`` / ``activation_beta``."""

    name: str
    alpha: float | None = None
    beta: float | None = None

    def __call__(self, x):
        if self.name == "Sigmoid":  # TVM's polynomial forms: tirx.sigmoid / tanh are a libm call each
            return fast_sigmoid(x)
        if self.name == "Tanh":
            return fast_tanh(x)
        if self.name == "Relu":
            return tirx.max(x, tirx.const(0.0, "float32"))
        if self.name == "HardSigmoid":
            alpha = 0.2 if self.alpha is None else self.alpha
            beta = 0.5 if self.beta is None else self.beta
            return tirx.min(tirx.max(tirx.const(alpha, "float32") * x + tirx.const(beta, "float32"),
                                     tirx.const(0.0, "float32")), tirx.const(1.0, "float32"))
        if self.name == "LeakyRelu":
            alpha = 0.01 if self.alpha is None else self.alpha
            return tirx.Select(x >= tirx.const(0.0, "float32"), x, tirx.const(alpha, "float32") * x)
        raise ValueError(f"unknown recurrent activation {self.name}")


@dataclass(frozen=True)
class RecurrenceSpec:
    """What one recurrent node computes, besides its tensors' shapes."""

    kind: str
    """``LSTM``, ``GRU`` or ``RNN``."""
    reverse: tuple[bool, ...]
    """Per direction: whether it runs from the last step to the first."""
    activations: tuple[Activation, ...]
    """Per direction its activations (LSTM 3, GRU 2, RNN 1), in ONNX order."""
    clip: float | None = None
    linear_before_reset: bool = False

    @property
    def directions(self) -> int:
        return len(self.reverse)


def recurrence_te(x: te.Tensor, r_t: te.Tensor, spec: RecurrenceSpec, batch: int, h0: te.Tensor | None = None,
                  c0: te.Tensor | None = None, peepholes: te.Tensor | None = None,
                  rb_h: te.Tensor | None = None) -> list[te.Tensor]:
    """The recurrence of ``spec`` as one ``te.extern``.

    ``x``: ``[steps * batch, directions * gates * hidden]`` (rows step-major, as the input
    projection's GEMM writes them; each direction's projected input, its gate blocks in ONNX
    order); ``r_t``: ``[directions, hidden, gates * hidden]``
    (``R^T``); ``h0`` / ``c0``: ``[directions, batch, hidden]`` (zero when absent);
    ``peepholes``: ``[directions, 3 * hidden]``; ``rb_h``: ``[directions, hidden]`` (GRU's
    recurrent candidate bias, which the projection cannot carry). Returns ``[Y, Y_h]`` (RNN,
    GRU) or ``[Y, Y_h, Y_c]`` (LSTM)."""
    steps = int(x.shape[0]) // batch
    directions, hidden = spec.directions, int(r_t.shape[1])
    gates = GATES[spec.kind]
    optional = [("h0", h0), ("c0", c0), ("peepholes", peepholes), ("rb_h", rb_h)]
    present = [(name, tensor) for name, tensor in optional if tensor is not None]
    inputs = [x, r_t] + [tensor for _, tensor in present]
    out_shapes = [(steps, directions, batch, hidden), (directions, batch, hidden)]
    if spec.kind == "LSTM":
        out_shapes.append((directions, batch, hidden))

    def body(ins, outs):
        named = dict(zip(["x", "r_t"] + [name for name, _ in present], ins))
        return _recurrence_ir(named, outs, spec, steps, batch, hidden, gates)

    return te.extern(out_shapes, inputs, body, dtype=["float32"] * len(out_shapes),
                     name=f"{spec.kind.lower()}_recurrence", tag="mpq_recurrence")


def _recurrence_ir(ins: dict, outs: list, spec: RecurrenceSpec, steps: int, batch: int, hidden: int, gates: int):
    f32 = "float32"
    zero = tirx.const(0.0, f32)
    width = gates * hidden
    per_direction = len(spec.activations) // spec.directions
    with IRBuilder() as ib:
        x, r_t = T.buffer_proxy(ins["x"]), T.buffer_proxy(ins["r_t"])
        h0 = T.buffer_proxy(ins["h0"]) if "h0" in ins else None
        c0 = T.buffer_proxy(ins["c0"]) if "c0" in ins else None
        peep = T.buffer_proxy(ins["peepholes"]) if "peepholes" in ins else None
        rb_h = T.buffer_proxy(ins["rb_h"]) if "rb_h" in ins else None
        y, y_h = T.buffer_proxy(outs[0]), T.buffer_proxy(outs[1])
        y_c = T.buffer_proxy(outs[2]) if spec.kind == "LSTM" else None
        with T.parallel(0, spec.directions) as d:
            h = T.buffer_proxy(T.decl_buffer([batch * hidden], f32))
            c = T.buffer_proxy(T.decl_buffer([batch * hidden], f32)) if spec.kind == "LSTM" else None
            acc = T.buffer_proxy(T.decl_buffer([width], f32))
            rh = (T.buffer_proxy(T.decl_buffer([hidden], f32))
                  if spec.kind == "GRU" and not spec.linear_before_reset else None)
            with T.serial(0, batch * hidden) as i:
                h[i] = h0[d, i // hidden, i % hidden] if h0 is not None else zero
                if c is not None:
                    c[i] = c0[d, i // hidden, i % hidden] if c0 is not None else zero
            # the activations of direction d (a Python choice per direction: directions differ
            # only when the node lists different activations for them)
            with T.serial(0, steps) as step:
                for direction in range(spec.directions):
                    acts = spec.activations[direction * per_direction:(direction + 1) * per_direction]
                    t = steps - 1 - step if spec.reverse[direction] else step
                    with T.If(d == direction):
                        with T.Then():
                            with T.serial(0, batch) as b:
                                _step(spec, acts, x, r_t, peep, rb_h, h, c, acc, rh, y, d, t, b, t * batch + b,
                                      hidden, width)
            with T.serial(0, batch * hidden) as i:
                y_h[d, i // hidden, i % hidden] = h[i]
                if y_c is not None:
                    y_c[d, i // hidden, i % hidden] = c[i]
        return ib.get()


def _clipped(value, clip: float | None):
    if clip is None:
        return value
    return tirx.min(tirx.max(value, tirx.const(-clip, "float32")), tirx.const(clip, "float32"))


def _matvec(acc, r_t, d, vector, start: int, count: int, hidden: int, first) -> None:
    """``acc[start + j] = first(j) + sum_k vector(k) R^T[d, k, start + j]`` for ``j < count``:
    the gate columns innermost, in whole :data:`VECTOR` blocks plus a tail."""
    blocks, tail = divmod(count, VECTOR)

    def columns(lo: int, hi: int, statement) -> None:
        if hi - lo == 0:
            return
        if lo == 0 and hi == blocks * VECTOR:
            with T.serial(0, blocks) as jo:
                with T.vectorized(0, VECTOR) as ji:
                    statement(jo * VECTOR + ji)
        else:
            with T.serial(lo, hi) as j:
                statement(j)

    def init(j) -> None:
        acc[start + j] = first(j)

    for lo, hi in ((0, blocks * VECTOR), (blocks * VECTOR, count)):
        if hi > lo:
            columns(lo, hi, init)
            with T.serial(0, hidden) as k:
                v = vector(k)

                def accumulate(j, v=v) -> None:
                    acc[start + j] = acc[start + j] + v * r_t[d, k, start + j]

                columns(lo, hi, accumulate)


def _step(spec: RecurrenceSpec, acts, x, r_t, peep, rb_h, h, c, acc, rh, y, d, t, b, row, hidden: int,
          width: int) -> None:
    """One time step of direction ``d`` for batch entry ``b`` (``x`` row ``row``): ``h`` (and
    ``c``) updated in place, ``Y[t, d, b]`` written."""
    clip = spec.clip
    base = d * width
    state = b * hidden
    f32 = "float32"
    if spec.kind == "GRU" and not spec.linear_before_reset:
        # z and r from h; the candidate's product reads r * h, so it waits for r
        _matvec(acc, r_t, d, lambda k: h[state + k], 0, 2 * hidden, hidden, lambda j: x[row, base + j])
        with T.serial(0, hidden) as u:
            rh[u] = acts[0](_clipped(acc[hidden + u], clip)) * h[state + u]
        bias = (lambda j: rb_h[d, j]) if rb_h is not None else (lambda j: tirx.const(0.0, f32))
        _matvec(acc, r_t, d, lambda k: rh[k], 2 * hidden, hidden, hidden,
                lambda j: x[row, base + 2 * hidden + j] + bias(j))
        with T.serial(0, hidden) as u:
            z = acts[0](_clipped(acc[u], clip))
            cand = acts[1](_clipped(acc[2 * hidden + u], clip))
            h[state + u] = _gru_update(z, cand, h[state + u])
            y[t, d, b, u] = h[state + u]
        return
    if spec.kind == "GRU":  # linear_before_reset: acc holds h R^T alone
        _matvec(acc, r_t, d, lambda k: h[state + k], 0, width, hidden, lambda j: tirx.const(0.0, f32))
    else:
        _matvec(acc, r_t, d, lambda k: h[state + k], 0, width, hidden, lambda j: x[row, base + j])
    with T.serial(0, hidden) as u:
        if spec.kind == "RNN":
            h[state + u] = acts[0](_clipped(acc[u], clip))
        elif spec.kind == "GRU":
            bias = rb_h[d, u] if rb_h is not None else tirx.const(0.0, f32)
            z = acts[0](_clipped(x[row, base + u] + acc[u], clip))
            r = acts[0](_clipped(x[row, base + hidden + u] + acc[hidden + u], clip))
            cand = acts[1](_clipped(x[row, base + 2 * hidden + u] + r * (acc[2 * hidden + u] + bias), clip))
            h[state + u] = _gru_update(z, cand, h[state + u])
        else:
            cell = c[state + u]
            gi, go, gf, gc = (acc[k * hidden + u] for k in range(4))
            if peep is not None:  # clip bounds the pre-activation with the peephole (onnxruntime's order)
                gi = gi + peep[d, u] * cell
                gf = gf + peep[d, 2 * hidden + u] * cell
            c[state + u] = (acts[0](_clipped(gf, clip)) * cell
                            + acts[0](_clipped(gi, clip)) * acts[1](_clipped(gc, clip)))
            new_cell = c[state + u]  # read after the store: the new cell state
            if peep is not None:
                go = go + peep[d, hidden + u] * new_cell
            h[state + u] = acts[0](_clipped(go, clip)) * acts[2](new_cell)
        y[t, d, b, u] = h[state + u]


def _gru_update(z, cand, h_old):
    """``(1 - z) cand + z h`` written as ``cand + z (h - cand)``, as the unrolled rewrite does."""
    return cand + z * (h_old - cand)


__all__ = ["Activation", "RecurrenceSpec", "recurrence_te"]
