"""ExactQuotients: an int8 kernel's requantization ``round(x / s)`` as a multiply and FMAs, the same float.

Every requantization ends ``round(x / s_y)`` with ``s_y`` the output scale, and
:mod:`relay_passes.divide_as_multiply` leaves that division as it is: a multiply by ``1 / s_y``
differs from the quotient by a float32 rounding and so, where the quotient lies that close to a
``.5`` tie, by one integer code from onnxruntime's ``QuantizeLinear`` and from the QDQ simulation.
(Tried: the multiply alone made fully int8 MobileNet-V2 / EfficientNet-Lite0 / resnet18 0.91 /
0.91 / 0.95 of the time, and changed the top-1 class of one of EfficientNet-Lite0's 32 held-out
photos, issue 14's 0.906 agreement to 0.875: docs/results.md "Requantizing divisions without
the divider".) After fusion that division sits in the epilogue of every int8 MAC
kernel: one ``vdivps`` per output vector, where the rest of the epilogue is a few single-cycle
operations; a 1x1 conv over 16 or 24 channels at 112x112 (MobileNet-V2's and EfficientNet's
first blocks) spends a large part of its time there.

This pass, on the fused PrimFuncs of an LLVM target with FMA, writes each such quotient
``x / c`` (``c`` a float32 immediate: the per-tensor scale, inlined by legalization) as the
correctly rounded quotient by Markstein's method (J.-M. Muller et al., *Handbook of
Floating-Point Arithmetic*, 2nd ed., section 4.7), with the reciprocal ``1 / c`` in two parts
computed at compile time (``y = RN(1 / c)``, ``y_lo = RN(1 / c - y)``)::

    q0 = fma(x, y, x * y_lo)      # within half an ulp and a hair of x / c: faithful
    r  = fma(-c, q0, x)           # exact, from a faithful q0
    q  = fma(r, y, q0)            # RN(x / c), as y is within half an ulp of 1 / c

a multiply and three FMAs on the FMA ports in place of the divider: the same float as the
division for every finite ``x`` (a quotient tiny enough for ``r`` to underflow rounds to 0
either way), so every code stays what the division gives; fully int8 MobileNet-V2 /
EfficientNet-Lite0 / resnet18 0.92 / 0.94 / 0.99 of the time (``python
benchmarks/exact_quotients.py``, Xeon, 2026-12-05).
Only the kernels that accumulate in int32 (the int8 MAC kernels) are rewritten, where the
dividend is computed from the accumulator and is finite: an infinite ``x`` would give NaN
here, so the quantize of a float tensor (a model input, an fp32 layer's output) keeps its
division. Only quotients every reader of which rounds them (``nearbyint``) are rewritten; a
per-channel scale (read from a buffer) stays a division. The FMA is ``llvm.fma`` (fused by
definition); the build runs the pass only where the target has FMA instructions
(:func:`tvm_mpq.kernels.cpu_isa.has_fma`: x86 with ``fma``, every aarch64). Visits every PrimFunc.
"""

from __future__ import annotations

import numpy as np
import tvm
import tvm_ffi
from tvm import tirx

ROUNDING_OPS = ("tirx.nearbyint", "tirx.round")
"""The calls that round a quotient to an integer (``relax.round`` legalizes to ``nearbyint``)."""
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def exact_reciprocal_quotient(x: tirx.PrimExpr, divisor: float) -> tirx.PrimExpr:
    """``x / divisor`` (float32) as the module docstring's multiply and three FMAs: the same
    float as the division for every finite ``x``."""
    c = np.float32(divisor)
    y = np.float32(1) / c
    y_lo = np.float32(1 / np.float64(c) - np.float64(y))

    def fma(a: tirx.PrimExpr, b: tirx.PrimExpr, addend: tirx.PrimExpr) -> tirx.PrimExpr:
        return tirx.call_llvm_pure_intrin("float32", "llvm.fma", a, b, addend)

    def f32(value: np.float32) -> tirx.PrimExpr:
        return tirx.const(float(value), "float32")

    # x and q0 written out where they are read, no Let (MetaSchedule's feature extraction has
    # no rule for one); LLVM computes each once
    q0 = fma(x, f32(y), x * f32(y_lo))
    return fma(fma(f32(-c), q0, x), f32(y), q0)


def rewritable_divisor(expr: tirx.PrimExpr) -> float | None:
    """The divisor of a float32 ``a / c`` with ``c`` a normal float32 immediate whose reciprocal
    is normal too, else None."""
    if not isinstance(expr, tirx.Div) or str(expr.ty) != "float32" or not isinstance(expr.b, tirx.FloatImm):
        return None
    c = np.float32(expr.b.value)
    with np.errstate(divide="ignore", over="ignore"):
        reciprocal = np.float32(1) / c
    if not (np.isfinite(c) and np.isfinite(reciprocal)) or min(abs(c), abs(reciprocal)) < FLOAT32_TINY:
        return None
    return float(c)


def _is_rounding(node: object) -> bool:
    return isinstance(node, tvm.ir.Call) and getattr(node.op, "name", "") in ROUNDING_OPS


def _rounded_only_buffers(func: tirx.PrimFunc) -> set:
    """The intermediate buffers of ``func`` that only rounding calls read (``round(B[...])``; a
    load is a ``tvm.ir.TensorLoad`` whose ``source`` is the buffer)."""
    rounding_args: list = []
    loads: list = []

    def visit(node: object) -> None:
        if _is_rounding(node):
            rounding_args.extend(a for a in node.args if isinstance(a, tvm.ir.TensorLoad))
        elif isinstance(node, tvm.ir.TensorLoad):
            loads.append(node)

    tvm_ffi.structural_walk(func.body, visit)
    rounded = {load.source for load in rounding_args}
    read_otherwise = {load.source for load in loads if not any(load.same_as(a) for a in rounding_args)}
    return rounded - read_otherwise - set(func.params)


def accumulates_int32(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` accumulates into an int32 buffer (``acc[...] = acc[...] + ...``): an
    int8 MAC kernel, whose epilogue requantizes."""
    found: list = []

    def visit(node: object) -> None:
        if isinstance(node, tirx.BufferStore) and str(node.buffer.dtype) == "int32" \
                and isinstance(node.value, tirx.Add):
            operands = (node.value.a, node.value.b)
            if any(isinstance(o, tvm.ir.TensorLoad) and o.source.same_as(node.buffer) for o in operands):
                found.append(node)

    tvm_ffi.structural_walk(func.body, visit)
    return bool(found)


def exact_quotients(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` (an int8 MAC kernel: :func:`accumulates_int32`; any other is returned as it is)
    with every rounded float32 quotient by an immediate written as
    :func:`exact_reciprocal_quotient`: a ``round(a / c)`` in one expression, or a store
    ``B[...] = a / c`` of a buffer that only rounding calls read."""
    if not accumulates_int32(func):
        return func
    only_rounded = _rounded_only_buffers(func)

    def rewrite(node: object) -> object:
        if isinstance(node, tirx.BufferStore):
            return rewrite_store(node)
        if not _is_rounding(node) or len(node.args) != 1:
            return node
        divisor = rewritable_divisor(node.args[0])
        if divisor is None:
            return node
        return tirx.call_intrin(str(node.ty), node.op.name, exact_reciprocal_quotient(node.args[0].a, divisor))

    def rewrite_store(node: tirx.BufferStore) -> tirx.BufferStore:
        divisor = rewritable_divisor(node.value) if node.buffer in only_rounded else None
        if divisor is None:
            return node
        return tirx.BufferStore(node.buffer, exact_reciprocal_quotient(node.value.a, divisor), node.indices)

    body = tvm_ffi.structural_map(func.body, rewrite)
    return func if body.same_as(func.body) else func.with_body(body)


@tirx.transform.prim_func_pass(opt_level=0, name="ExactQuotients")
class ExactQuotients:
    """:func:`exact_quotients` on every PrimFunc of the module (the module docstring)."""

    def transform_function(self, func: tirx.PrimFunc, _mod: tvm.IRModule,
                           _ctx: tvm.transform.PassContext) -> tirx.PrimFunc:
        return exact_quotients(func)


__all__ = ["ExactQuotients", "exact_quotients", "exact_reciprocal_quotient"]
