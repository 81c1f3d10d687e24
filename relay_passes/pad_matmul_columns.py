"""PadMatmulColumns: a matmul by a constant weight whose column count no vector width divides is
computed on whole vectors.

The CPU GEMM kernel (:class:`tvm_mpq.kernels.cpu_mac.MatmulConstWeight`) spans the output
columns with vectors of the widest lane count that divides them (16 float32 / int32 lanes on
AVX-512, down to 4); a count even 4 does not divide falls back to 2-lane code. A classifier over
a large vocabulary has such counts: ddddocr-crnn's CTC head is ``[20, 1024] x [1024, 8210]``
(8210 = 2 x 5 x 821), which took 5.0 of its 6.0 ms fully int8 and 5.9 of 8.6 ms in fp32
(``benchmarks/kernel_profile.py ddddocr-crnn``, 2026-12-02). A count only narrow vectors divide
runs on those: a small ALBERT's (sudachi-tagger's) 156 columns on 4-lane vectors, at half the
rate of 160 columns on 16 (0.23 against 0.12 ms for ``[256, 156] x [156, 156]``, AVX-512,
2026-12-04). This pass gives the weight zero columns up to the count of
:func:`relay_passes.pad_channels.padded_channels` (the rule the convs' output channels follow:
fewer, wider vectors for at most a quarter more columns; 156 -> 160, 8210 -> 8224) and slices the
product back to its real columns (the epilogue after it reads the slice), so every value is
the same. A product of two activations (:class:`~tvm_mpq.kernels.cpu_mac.BatchMatmul`:
attention's probabilities times its values, 26 columns per head in that ALBERT: 0.40 ms against
0.12 ms with 32 for ``6 x [256, 256] x [256, 26]``) has its columns chosen together with its rows,
by :class:`~relay_passes.pad_tile_pixels.PadTilePixels` alone.

Runs in the CPU build (:func:`tvm_mpq.target_build.passes.graph_passes`), after
:class:`~relay_passes.flatten_matmul_rows.FlattenMatmulRows`, on float32 and integer matmuls,
in every Relax function.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.dpl import is_const, is_op, wildcard

from relay_passes.pad_channels import padded_channels
from relay_passes.precision_annotation import rewrite_every_function


@tvm.transform.module_pass(opt_level=0, name="PadMatmulColumns")
class PadMatmulColumns:
    """Pad the columns of every constant 2-D matmul weight to the count
    :func:`~relay_passes.pad_channels.padded_channels` gives for ``lanes`` (the target's widest
    float32 / int32 vector), slicing the product."""

    def __init__(self, lanes: int) -> None:
        self.lanes = lanes
        self._matmul = is_op("relax.matmul")(wildcard(), is_const())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_every_function(mod, (self._matmul, self._rewrite))

    def _rewrite(self, expr: relax.Expr, _matches: dict) -> relax.Expr:
        weight = expr.args[1].value.numpy()
        data_shape = getattr(expr.args[0].ty, "shape", None)
        if weight.ndim != 2 or data_shape is None:
            return expr
        columns = weight.shape[1]
        padded = padded_channels(columns, self.lanes)
        if padded is None:
            return expr
        wide = np.pad(weight, [(0, 0), (0, padded - columns)])
        product = relax.op.matmul(expr.args[0], relax.const(wide, str(weight.dtype)), out_dtype=expr.attrs.out_dtype)
        return relax.op.strided_slice(product, axes=[len(data_shape) - 1], begin=[0], end=[columns])
