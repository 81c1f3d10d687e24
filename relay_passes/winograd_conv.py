"""Conv2dWinograd: float32 3x3 stride-1 channels-last convs on large images as Winograd F(4x4, 3x3).

A direct 3x3 conv runs at the FMA peak of the CPU and no faster (resnet18's 3x3 64->64 @56:
1.04 ms in tvm-mpq and in onnxruntime, 2026-12-01). Winograd's minimal filtering needs 4x fewer
multiplies (:mod:`tvm_mpq.kernels.cpu_winograd`: the compute, its weight transform and its
schedule). This pass replaces each eligible ``conv2d`` by a ``call_tir`` of that compute with
the weight transformed once, at compile time (``U = G w G^T``, a constant ``[6, 6, C, K]``).
The PrimFunc is marked ``op_pattern`` = out-elementwise-fusable, like a conv, so ``FuseOps``
fuses the conv's epilogue (bias, batch-norm arithmetic, activation, residual add) into it.

Eligible: NHWC/HWIO float32 ``conv2d`` with a constant 3x3 weight, stride 1, dilation 1,
groups 1, input and output channels that a vector divides (4), and at least ``min_tiles``
4x4 output tiles: the transformed weight is 4x the direct one (36 vs 9 taps), which pays on
maps of 14x14 and larger (many tiles share it) and not on 7x7 maps with 512 channels (4 tiles:
the GEMMs become weight-bandwidth bound; ``python benchmarks/winograd_ops.py --threads 1``,
2026-12-01: 56x56x64 2.8x, 28x28x128 3.3x, 14x14x256 1.5x the direct kernel). int8 convs are never
rewritten (their kernels are integer dot products). Run after
:class:`~relay_passes.convert_layout.ConvertToChannelsLast` (it looks for NHWC convs); visits
every Relax function.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.ir.expr import Constant

from relay_passes.precision_annotation import relax_functions
from tvm_mpq.kernels.cpu_winograd import TILE, transform_weight, winograd_conv2d_nhwc

MIN_TILES = 16
"""Fewest 4x4 output tiles for the rewrite (14x14 outputs: 16 tiles; 7x7: 4, left direct)."""
OUT_ELEMWISE_FUSABLE = 4
"""``relax.OpPatternKind.kOutEWiseFusable``: what a conv is to ``FuseOps``."""


def _ints(values) -> list[int]:  # noqa: ANN001
    return [int(v) for v in values]


def eligible(call: relax.Call, min_tiles: int = MIN_TILES) -> bool:
    """Whether ``call`` is a conv this pass rewrites (module docstring)."""
    if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
        return False
    a = call.attrs
    if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != ("NHWC", "HWIO", "NHWC"):
        return False
    data, weight = call.args
    if not isinstance(weight, Constant) or str(weight.value.dtype) != "float32":
        return False
    if str(data.ty.dtype) != "float32" or str(a.out_dtype) not in ("", "void", "None", "float32") or data.ty.shape is None:
        return False
    kh, kw, c, k = _ints(weight.value.shape)
    if (kh, kw) != (3, 3) or _ints(a.strides) != [1, 1] or _ints(a.dilation) != [1, 1] or int(a.groups) != 1:
        return False
    if c % 4 or k % 4:
        return False
    n, h, w, _ = _ints(data.ty.shape)
    top, left, bottom, right = _ints(a.padding)
    out_h, out_w = h + top + bottom - 2, w + left + right - 2
    return n * -(-out_h // TILE) * -(-out_w // TILE) >= min_tiles


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, min_tiles: int) -> None:
        super().__init__(mod)
        self.min_tiles = min_tiles

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102
        call = super().visit_call_(call)
        if not eligible(call, self.min_tiles):
            return call
        kernel_pack = relax.const(transform_weight(call.args[1].value.numpy()))
        padding = tuple(_ints(call.attrs.padding))
        out = self.builder_.call_te(winograd_conv2d_nhwc, call.args[0], kernel_pack, padding,
                                    primfunc_name_hint="conv2d_winograd")
        gvar = out.args[0]
        func = self.builder_.get()[gvar]
        self.builder_.update_func(gvar, func.with_attr("op_pattern", OUT_ELEMWISE_FUSABLE))
        return out


@tvm.transform.module_pass(opt_level=0, name="Conv2dWinograd")
class Conv2dWinograd:
    """Rewrite every eligible float32 3x3 stride-1 NHWC conv of every Relax function as Winograd F(4x4, 3x3)."""

    def __init__(self, min_tiles: int = MIN_TILES) -> None:
        self.min_tiles = min_tiles

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _Rewriter(mod, self.min_tiles)
        for gv, func in relax_functions(mod):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
        return rewriter.builder_.get()
