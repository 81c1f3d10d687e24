"""What the integer kernels can run: the rules the lowering enforces, stated once.

:class:`~relay_passes.lower_to_integer.LowerToInteger` raises, for an annotation it cannot
honour, the one-line :class:`~tvm_mpq.errors.MpqError` that :func:`integer_problem` words;
``tvm_mpq.compiler.validate`` applies the same rules to a config before a sweep builds it.
"""

from __future__ import annotations

INTEGER_KINDS = ("conv2d", "depthwise_conv2d", "grouped_conv2d", "conv1d", "conv2d_transpose", "dense", "matmul")
"""Layer kinds (the layer table's) with an integer kernel: 2-D and 1-D convs (a ``conv1d`` runs
on the 2-D kernel along a row, :class:`relay_passes.conv_on_rows.ConvOnRows`), transposed 2-D
convs of one group without dilation (a GEMM and the sum of its shifted blocks,
:class:`relay_passes.transpose_conv_as_matmul.TransposeConvAsMatmul`), matmuls by a constant
and matmuls of two activations (attention's ``q k^T`` and ``p v``: both operands as codes,
their zero points corrected with row and column sums)."""
ATTENTION_KIND = "matmul"
"""The layer kind of a matmul of two activations (attention's ``q k^T`` and ``p v``). Compiled
int8 only when asked (``--int8-attention``): faster where the products are large
(sudachi-tagger's 256-token heads, a ViT's 257), a little slower where they are small (khmersm's
64 tokens: the zero-point row and column sums are kernels of their own), and it costs output
SQNR (docs/results.md "Int8 attention")."""
MAX_INTEGER_BITS = 8
"""Weights and activations are stored as int8 / uint8 codes: 2..8 bits run on the int8 kernels
(fewer bits are exact in the 8-bit containers); 16-bit activations have no kernel here."""


def integer_problem(layer: str, kind: str, w_bits: int, a_bits: int, has_act: bool,
                    has_b_act: bool = False) -> str | None:
    """Why layer ``layer`` (of ``kind``) cannot run at ``w{w_bits}a{a_bits}`` on the integer
    kernels (``has_act``: its activation quantizer is known; ``has_b_act``: an activation x
    activation matmul's second operand quantizer is), or None when it can."""
    if kind not in INTEGER_KINDS:
        return (f"layer '{layer}' is a {kind}: the integer kernel path supports {', '.join(INTEGER_KINDS)}; "
                "keep it \"fp32\"")
    if kind == ATTENTION_KIND and not has_b_act:
        return (f"layer '{layer}' multiplies two activations and has no quantizer for the second (\"b_act\"): "
                "write the config with `tvm-mpq analyze --rate R` (it calibrates), or compile with --rate")
    if w_bits > MAX_INTEGER_BITS or a_bits > MAX_INTEGER_BITS:
        return (f"layer '{layer}' asks for w{w_bits}a{a_bits}: the integer kernels take at most "
                f"{MAX_INTEGER_BITS}-bit weights and activations")
    if not has_act:
        return (f"layer '{layer}' has no activation quantizer (\"act\"): write the config with "
                "`tvm-mpq analyze --rate R` (it calibrates), or compile with --rate")
    return None
