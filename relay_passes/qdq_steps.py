"""The quantize / dequantize step chain, written once for every pass that emits it.

The quantizers of :mod:`tvm_mpq.quantization.quantizers` as Relax ops, in float32, one
elementwise op per step (the same op order everywhere, so that the QDQ simulation, the integer
model's requantization and the run-time switchable probe compute bit-identical values):

* activation codes: ``clamp(round(x / s) + zp)``, ``clamp`` = ``clip(0, 2^b - 1)``
  (:func:`quantize_steps`; :func:`clamp_codes` when ``2^b - 1`` is only known at run time);
* back to real values: ``(q - zp) * s`` (:func:`dequantize_steps`);
* weight codes, symmetric per channel: ``clip(round(w / s_c), -qmax, qmax)``
  (:func:`weight_quantize_steps`), times ``s_c`` for the fake-quantized weight.

Users: :mod:`relay_passes.quantized_arith` (integer and simulated arithmetic of the precision
pass), :mod:`relay_passes.simulate_quantization` and :mod:`relay_passes.switchable_qdq`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tvm import relax

from tvm_mpq.quantization.quantizers import ActQParams

Step = Callable[[relax.Expr], relax.Expr]
"""One elementwise op applied to the running value."""
Emit = Callable[[relax.Expr, str], relax.Expr]
"""Binds an expression under a name and returns the bound variable (a BlockBuilder's emit)."""


def f32(value: float) -> relax.Expr:
    """A float32 scalar constant."""
    return relax.const(np.float32(value), "float32")


def clip_codes(qmax: float) -> list[Step]:
    """Clamp to the unsigned code range ``[0, qmax]`` with one ``clip`` (a constant ``qmax``)."""
    return [lambda v: relax.op.clip(v, 0.0, float(qmax))]


def clamp_codes(qmax: relax.Expr) -> list[Step]:
    """Clamp to ``[0, qmax]`` with ``maximum`` then ``minimum`` (``qmax`` a tensor, e.g. set at
    run time; the same values as :func:`clip_codes`)."""
    return [lambda v: relax.op.maximum(v, f32(0.0)), lambda v: relax.op.minimum(v, qmax)]


def quantize_steps(scale: relax.Expr, zero_point: relax.Expr, clamp: Sequence[Step]) -> list[Step]:
    """``clamp(round(x / scale) + zero_point)``: real values -> codes (still float32)."""
    return [lambda v: relax.op.divide(v, scale), relax.op.round, lambda v: relax.op.add(v, zero_point), *clamp]


def dequantize_steps(scale: relax.Expr, zero_point: relax.Expr) -> list[Step]:
    """``(q - zero_point) * scale``: codes (float32) -> real values."""
    return [lambda v: relax.op.subtract(v, zero_point), lambda v: relax.op.multiply(v, scale)]


def weight_quantize_steps(scales: relax.Expr, qmax: float) -> list[Step]:
    """``clip(round(w / s_c), -qmax, qmax)``: per-channel symmetric weight codes (float32);
    ``scales`` broadcasts along the weight's output-channel axis."""
    return [lambda v: relax.op.divide(v, scales), relax.op.round,
            lambda v: relax.op.clip(v, -float(qmax), float(qmax))]


def weight_fake_quant_steps(scales: relax.Expr, qmax: float) -> list[Step]:
    """``clip(round(w / s_c), -qmax, qmax) * s_c``: the fake-quantized weight."""
    return [*weight_quantize_steps(scales, qmax), lambda v: relax.op.multiply(v, scales)]


def emit_chain(emit: Emit, x: relax.Expr, steps: Sequence[Step], name: str) -> relax.Expr:
    """Bind one variable per step, named ``name`` + the step's index.

    (A nested call would be normalized into bindings named ``lv...``, which can collide with
    the model's own names; passes and tools downstream look variables up by name.)
    """
    for k, step in enumerate(steps):
        x = emit(step(x), f"{name}{k}")
    return x


def act_constants(qp: ActQParams, ndim: int) -> tuple[relax.Expr, relax.Expr]:
    """``qp``'s scale and zero point as float32 constants for an ``ndim``-d tensor: scalars,
    or ``[1, C, 1, ...]`` tensors for a per-channel quantizer."""
    if not qp.per_channel:
        return f32(qp.scale), f32(qp.zero_point)
    return relax.const(qp.scale_array(ndim)), relax.const(qp.zero_point_array(ndim))


def fake_quant_activation_steps(qp: ActQParams, ndim: int) -> list[Step]:
    """Quantize-dequantize of an ``ndim``-d activation with constant qparams (the simulation's chain)."""
    s, zp = act_constants(qp, ndim)
    return [*quantize_steps(s, zp, clip_codes(qp.qmax)), *dequantize_steps(s, zp)]


def rank(expr: relax.Expr) -> int:
    """The rank of a tensor-typed expression (0 when its shape is not known: only a per-channel
    quantizer needs the rank, and it raises on 0)."""
    shape = getattr(getattr(expr, "ty", None), "shape", None)
    return 0 if shape is None else len(shape)
