"""EinsumAsMatmul: a two-operand einsum that is a (batched) matrix product, as one ``matmul``.

PyTorch exports ``torch.einsum`` as ONNX ``Einsum``; TVM's ONNX importer writes it at once as
TOPI's generic einsum (a ``call_tir`` of one scalar loop nest that no kernel rule schedules), so
:mod:`tvm_mpq.frontends.onnx_importer` keeps it as the Relax op ``relax.einsum`` for this pass
to see (which would legalize to the same loop nest). A diffusion UNet's attention
(``bct,bcs->bts`` scores, ``bts,bcs->bct`` context over 1024 positions; adaptive-terrain-diffusion's
model) spent 0.89 of its 1.09 s fp32 inference there (the profiler of
``benchmarks/kernel_profile.py``, 2026-12-05), where onnxruntime took 0.15 s for the whole model.

Each letter of ``A, B -> C`` is a batch axis (in both operands and the output), a contracted
axis (in both operands only), or a free axis of one operand (in it and the output). The product
is then ``matmul`` of ``A`` arranged ``[batch, free_A, contracted]`` by ``B`` arranged
``[batch, contracted, free_B]`` (``permute_dims`` where the operand's order differs, then
``reshape`` to 3-D: every group of axes flattened), reshaped to its axes and permuted to the
output's order; or, with the operands' roles swapped, the transposed product (``C^T = B^T
A^T``). Of the two the one that permutes fewer elements is built: the context ``bts,bcs->bct``
permutes the 1024 x 1024 weights or the values and the output; which is fewer depends on the
channel count. The products and their sums are the einsum's: only the order of the float32
additions may differ.

Left as they are: einsums of one or more than two operands, with ``...``, a letter repeated in
one operand (a trace or diagonal), a letter summed within one operand alone, no contracted
letter (an outer product), or shapes that are not static. Runs first in every target's build
(:func:`tvm_mpq.target_build.passes.graph_passes`), on every Relax function: after the precision
passes, so an einsum stays the fp32 op the layer table does not count as a layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import NamedTuple

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from relay_passes.convert_layout import tensor_shape
from relay_passes.precision_annotation import rewrite_every_function


@dataclass(frozen=True)
class MatmulForm:
    """How an equation ``A, B -> C`` is a matrix product: its letters by role."""

    batch: str
    left: str
    """Free letters of the first operand."""
    contracted: str
    right: str
    """Free letters of the second operand."""


def matmul_form(subscripts: str) -> tuple[str, str, str, MatmulForm] | None:
    """``(a, b, out, form)`` of a two-operand equation that is a (batched) matrix product, or
    ``None`` (see the module docstring for what is left as it is)."""
    if "..." in subscripts or subscripts.count("->") != 1:
        return None
    inputs, out = subscripts.replace(" ", "").split("->")
    operands = inputs.split(",")
    if len(operands) != 2:
        return None
    a, b = operands
    if any(len(set(s)) != len(s) for s in (a, b, out)) or not set(out) <= set(a) | set(b):
        return None
    if (set(a) - set(b)) - set(out) or (set(b) - set(a)) - set(out):
        return None  # a letter summed within one operand alone
    form = MatmulForm(batch="".join(c for c in out if c in a and c in b),
                      left="".join(c for c in out if c in a and c not in b),
                      contracted="".join(c for c in a if c in b and c not in out),
                      right="".join(c for c in out if c in b and c not in a))
    return (a, b, out, form) if form.contracted else None


def _arranged(x: relax.Expr, letters: str, sizes: dict[str, int], order: str,
              groups: tuple[str, ...]) -> relax.Expr:
    """``x`` (axes ``letters``) permuted to ``order`` and reshaped to one axis per group."""
    if letters != order:
        x = relax.op.permute_dims(x, [letters.index(c) for c in order])
    return relax.op.reshape(x, [prod(sizes[c] for c in group) for group in groups])


class _Plan(NamedTuple):
    """``matmul(lhs, rhs)``: each operand with its letters and the order its role needs, and the
    product's letters."""

    lhs: relax.Expr
    lhs_letters: str
    lhs_order: str
    rhs: relax.Expr
    rhs_letters: str
    rhs_order: str
    product: str

    def permuted_elements(self, out: str, sizes: dict[str, int]) -> int:
        """Elements permuted: each operand whose order is not the one its role needs, and the
        product if its axes are not the output's order."""
        return sum(prod(sizes[c] for c in letters) for letters, needed in
                   ((self.lhs_letters, self.lhs_order), (self.rhs_letters, self.rhs_order), (self.product, out))
                   if letters != needed)


def einsum_as_matmul(call: relax.Call) -> relax.Expr:
    """The matmul form of an einsum call, or the call itself where it has none."""
    operands = call.args[0]
    form_of = matmul_form(str(call.attrs.subscripts))
    if form_of is None or not isinstance(operands, relax.Tuple) or len(operands.fields) != 2:
        return call
    a, b, out, form = form_of
    shapes = [tensor_shape(x) for x in operands.fields]
    if any(s is None for s in shapes) or len(shapes[0]) != len(a) or len(shapes[1]) != len(b):
        return call
    size_a, size_b = dict(zip(a, shapes[0])), dict(zip(b, shapes[1]))
    if any(size_a[c] != size_b[c] for c in set(a) & set(b)):
        return call  # (broadcast batch axes: not this rewrite's)
    sizes = {**size_a, **size_b}
    x, y = operands.fields
    bt, lt, ct, rt = form.batch, form.left, form.contracted, form.right
    plan = min(_Plan(x, a, bt + lt + ct, y, b, bt + ct + rt, bt + lt + rt),  # A B
               _Plan(y, b, bt + rt + ct, x, a, bt + ct + lt, bt + rt + lt),  # (B^T A^T)^T
               key=lambda p: p.permuted_elements(out, sizes))
    lhs_free = plan.lhs_order[len(bt):len(plan.lhs_order) - len(ct)]
    rhs_free = plan.rhs_order[len(bt) + len(ct):]
    batch_groups = (bt,) if bt else ()
    lhs = _arranged(plan.lhs, plan.lhs_letters, sizes, plan.lhs_order, (*batch_groups, lhs_free, ct))
    rhs = _arranged(plan.rhs, plan.rhs_letters, sizes, plan.rhs_order, (*batch_groups, ct, rhs_free))
    result = relax.op.reshape(relax.op.matmul(lhs, rhs), [sizes[c] for c in plan.product])
    if plan.product != out:
        result = relax.op.permute_dims(result, [plan.product.index(c) for c in out])
    return result


@tvm.transform.module_pass(opt_level=0, name="EinsumAsMatmul")
class EinsumAsMatmul:
    """Rewrite every two-operand einsum that is a (batched) matrix product as ``matmul`` with the
    fewest permuted elements, in every Relax function (see the module docstring)."""

    def __init__(self) -> None:
        self._einsum = is_op("relax.einsum")(wildcard())

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_every_function(mod, (self._einsum, lambda expr, _m: einsum_as_matmul(expr)))


__all__ = ["EinsumAsMatmul", "MatmulForm", "einsum_as_matmul", "matmul_form"]
