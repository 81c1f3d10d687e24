"""VectorExp: float32 ``exp``, ``sigmoid``, ``tanh``, ``erf``, ``log`` and the activations built on them on
vectors instead of one libm call per element.

TVM's LLVM codegen lowers ``exp`` (and ``sigmoid``, ``1 / (1 + exp(-x))``) to the ``llvm.exp``
intrinsic; x86 and aarch64 have no vector instruction for it and TVM links no vector math
library, so a vectorized epilogue still calls ``expf`` once per element (16 calls per AVX-512
vector, checked with ``objdump``). In a YOLO network every conv ends in SiLU (``x * sigmoid(x)``),
so the int8 build paid as much for its epilogues as the float build.

This pass rewrites float32 ``relax.exp`` and ``relax.sigmoid`` into a TE compute built on
``topi.fast_exp`` (range reduction ``exp(x) = 2^n exp(r)`` and a degree-7 polynomial, Cephes'
``expf``: relative error about 1e-7, inputs clamped to the float32 range): arithmetic, floor and
a bit reinterpretation, which LLVM vectorizes. ``tanh`` (``llvm.tanh``, one ``tanhf`` call per
element the same way; the tanh form of GELU in magika's encoder: 1.4 of its 3.4 ms fp32) becomes
``topi.fast_tanh`` (Eigen's rational approximation, clamped to +-9: absolute error about 1e-7), and
``erf`` (``erff`` per element: the exact GELU of PP-OCRv6's blocks, ``x/2 (1 + erf(x / sqrt 2))``,
left its float conv kernels 2x slower than onnxruntime's) ``topi.fast_erf`` (Eigen's rational
approximation, clamped to +-4). ``log`` becomes Cephes' ``logf`` on the float's bits
(:func:`tvm_mpq.kernels.fast_math.fast_log`). The fused activations TVM legalizes to those libm
calls are rewritten the same way: ``nn.gelu`` and ``nn.gelu_tanh`` (what PyTorch's default ONNX
exporter writes for ``nn.GELU`` at opset 20, ONNX ``Gelu``: 1.6 ms of ``erff`` calls per 128 x 1536
tensor on an AVX-512 Xeon, 0.05 ms as ``fast_erf``), ``nn.silu``, ``nn.selu``, ``nn.softplus`` and
``nn.log_softmax`` (its exponentials; the log is per row). onnxruntime's MLAS does the same (its
logistic, erf, exp and log kernels are polynomial approximations). The compute is elementwise
(``log_softmax``: two row reductions and an elementwise step), so it fuses into the
conv's epilogue like the op it replaces. Run after the graph-level rewrites that match ops by name
(the lowering, channels-last conversion); visits every Relax function.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tvm
from tvm import relax, te, topi

from relay_passes.precision_annotation import op_name, rewrite_calls
from tvm_mpq.kernels.fast_math import f32, fast_exp, fast_log, fast_sigmoid, fast_tanh


def _elementwise(x: te.Tensor, expr: Callable[[tvm.tirx.PrimExpr], tvm.tirx.PrimExpr], name: str) -> te.Tensor:
    return te.compute(x.shape, lambda *i: expr(x(*i)), name=name)


def _fast_sigmoid(x: te.Tensor) -> te.Tensor:
    e = topi.fast_exp(topi.negative(x))
    return te.compute(x.shape, lambda *i: f32(1.0) / (f32(1.0) + e(*i)), name="fast_sigmoid")


def _fast_gelu(x: te.Tensor) -> te.Tensor:
    """TVM's ``nn.gelu`` legalization, ``x (1/2 + erf(x / sqrt 2) / 2)``, with ``topi.fast_erf``."""
    erf = topi.fast_erf(te.compute(x.shape, lambda *i: x(*i) * f32(0.5 ** 0.5), name="erf_input"))
    return te.compute(x.shape, lambda *i: x(*i) * (f32(0.5) + erf(*i) * f32(0.5)), name="fast_gelu")


def _fast_gelu_tanh(x: te.Tensor) -> te.Tensor:
    """TVM's ``nn.gelu_tanh`` legalization with ``fast_tanh``."""
    def gelu(v: tvm.tirx.PrimExpr) -> tvm.tirx.PrimExpr:
        inner = f32(math.sqrt(2.0 / math.pi)) * v * (f32(1.0) + f32(0.044715) * v * v)
        return f32(0.5) * v * (f32(1.0) + fast_tanh(inner))
    return _elementwise(x, gelu, "fast_gelu_tanh")


def _fast_silu(x: te.Tensor) -> te.Tensor:
    return _elementwise(x, lambda v: v * fast_sigmoid(v), "fast_silu")


def _fast_selu(x: te.Tensor) -> te.Tensor:
    """TVM's ``nn.selu`` legalization, ``scale (max(0, x) + min(0, alpha (exp(x) - 1)))``."""
    alpha, scale = f32(1.6732632423543772848170429916717), f32(1.0507009873554804934193349852946)
    return _elementwise(x, lambda v: scale * (tvm.tirx.max(v, f32(0.0))
                                              + tvm.tirx.min(f32(0.0), alpha * (fast_exp(v) - f32(1.0)))), "fast_selu")


def _fast_softplus(x: te.Tensor, beta: float, threshold: float) -> te.Tensor:
    """``topi.nn.softplus``: ``x`` where ``beta x > threshold``, else ``log(1 + exp(beta x)) / beta``."""
    b, t = f32(beta), f32(threshold)
    # topi's exp as a stage of its own: the same expression through fast_math.fast_exp trips TVM
    # 0.27's loop vectorizer ("Cannot broadcast lanes=16 to 32") under fast_log.
    e = topi.fast_exp(te.compute(x.shape, lambda *i: x(*i) * b, name="softplus_input"))
    return te.compute(x.shape, lambda *i: tvm.tirx.Select(x(*i) * b > t, x(*i), fast_log(f32(1.0) + e(*i)) / b),
                      name="fast_softplus")


def _fast_log_softmax(x: te.Tensor, axis: int) -> te.Tensor:
    """``topi.nn.log_softmax``, ``x - max - log(sum(exp(x - max)))`` along ``axis``, its exponentials
    (one per element) and logarithms (one per row) vectorizable."""
    rank = len(x.shape)
    axis = axis % rank
    row_shape = [d for i, d in enumerate(x.shape) if i != axis]

    def at(row: tuple, k: tvm.tirx.PrimExpr) -> tvm.tirx.PrimExpr:
        return x(*row[:axis], k, *row[axis:])

    k1 = te.reduce_axis((0, x.shape[axis]), name="k")
    row_max = te.compute(row_shape, lambda *r: te.max(at(r, k1), axis=k1), name="row_max")
    k2 = te.reduce_axis((0, x.shape[axis]), name="k")
    row_sum = te.compute(row_shape, lambda *r: te.sum(fast_exp(at(r, k2) - row_max(*r)), axis=k2), name="row_expsum")

    def out(*i: tvm.tirx.PrimExpr) -> tvm.tirx.PrimExpr:
        row = i[:axis] + i[axis + 1:]
        return x(*i) - row_max(*row) - fast_log(row_sum(*row))
    return te.compute(x.shape, out, name="fast_log_softmax")


_FAST_FORMS: dict[str, tuple[Callable[..., te.Tensor], str, Callable[[relax.Call], tuple]]] = {
    "relax.exp": (topi.fast_exp, "fast_exp", lambda _call: ()),
    "relax.sigmoid": (_fast_sigmoid, "fast_sigmoid", lambda _call: ()),
    "relax.tanh": (topi.fast_tanh, "fast_tanh", lambda _call: ()),
    "relax.erf": (topi.fast_erf, "fast_erf", lambda _call: ()),
    "relax.log": (lambda x: _elementwise(x, fast_log, "fast_log"), "fast_log", lambda _call: ()),
    "relax.nn.gelu": (_fast_gelu, "fast_gelu", lambda _call: ()),
    "relax.nn.gelu_tanh": (_fast_gelu_tanh, "fast_gelu_tanh", lambda _call: ()),
    "relax.nn.silu": (_fast_silu, "fast_silu", lambda _call: ()),
    "relax.nn.selu": (_fast_selu, "fast_selu", lambda _call: ()),
    "relax.nn.softplus": (_fast_softplus, "fast_softplus",
                          lambda call: (float(call.attrs.beta), float(call.attrs.threshold))),
    "relax.nn.log_softmax": (_fast_log_softmax, "fast_log_softmax", lambda call: (int(call.attrs.axis),)),
}
"""Each op this pass rewrites: the TE function computing it on vectors, its kernel's name, and the
call's attributes the TE function takes after the tensor."""


def _vector_form(builder: relax.BlockBuilder, call: relax.Call) -> relax.Expr | None:
    form = _FAST_FORMS.get(op_name(call))
    if form is None:
        return None
    ty = call.args[0].ty
    if not isinstance(ty, relax.TensorType) or str(ty.dtype) != "float32":
        return None
    compute, name, attrs = form
    return builder.call_te(compute, call.args[0], *attrs(call), primfunc_name_hint=name)


@tvm.transform.module_pass(opt_level=0, name="VectorExp")
class VectorExp:
    """Rewrite float32 ``exp`` / ``sigmoid`` / ``tanh`` / ``erf`` into vectorizable polynomial computes
    (see the module docstring)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_calls(mod, _vector_form)
