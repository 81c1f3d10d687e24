"""Float rounding that TVM's loop vectorizer can vectorize.

Every quantize step the precision pass emits rounds half to even (``relax.op.quantize``'s and
``numpy.round``'s rounding), which TVM lowers to the ``tirx.nearbyint`` intrinsic. TVM 0.27 marks
``round``, ``floor``, ``trunc``, ``exp`` ... as ``TVectorizable`` but not ``nearbyint``, so
``VectorizeLoop`` gives up on any vectorized loop whose body rounds and emits it lane by lane
(the loop variable gets a ``_s`` suffix). Whether LLVM re-vectorizes that serial loop then
depends on the rest of the epilogue: an fp32 conv whose epilogue is ``+ bias -> clip ->
quantize`` (every batch-norm-folded export) came out as one scalar ``vroundss`` per lane, about
four times slower than the same kernel with the batch norm still in its epilogue, which LLVM did
re-vectorize (docs/results.md, "fp32 layers' batch norms: folded or kept").

``llvm.nearbyint`` is defined on vectors (``vrndscaleps`` / ``vroundps`` on x86, ``frinti`` on
aarch64), so marking the op vectorizable is all it takes; importing this module does it, once
per process (the build imports it through :mod:`tvm_mpq.kernels`).
"""

from __future__ import annotations

import tvm

VECTORIZABLE_OPS = ("tirx.nearbyint",)
"""Pure element-wise intrinsics TVM 0.27 leaves unmarked, marked ``TVectorizable`` here."""


def mark_vectorizable() -> list[str]:
    """Mark :data:`VECTORIZABLE_OPS` ``TVectorizable`` where they are not; returns the ops marked."""
    marked = []
    for name in VECTORIZABLE_OPS:
        if tvm.ir.Op.get(name).get_attr("TVectorizable") is None:
            tvm.ir.register_op_attr(name, "TVectorizable", True)
            marked.append(name)
    return marked


mark_vectorizable()
