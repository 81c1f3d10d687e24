"""Checks a precision config must pass before the integer compile path starts."""

from __future__ import annotations

from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.errors import MpqError
from tvm_mpq.graph.layer_table import LayerTable

INTEGER_KINDS = ("conv2d", "depthwise_conv2d", "grouped_conv2d", "dense")
MAX_INTEGER_BITS = 8
"""Weights and activations are stored as int8 / uint8 codes: 2..8 bits run on the int8 kernels
(fewer bits are exact in the 8-bit containers); 16-bit activations have no kernel here."""


def check_integer_config(config: PrecisionConfig, table: LayerTable) -> None:
    """MpqError naming the first problem: layers not in the model, missing layers, layers whose
    op has no integer kernel (conv1d, conv2d_transpose, activation x activation matmul), bits
    above 8, or a quantized layer without its activation quantizer."""
    config.validate(table)
    for layer in table:
        lp = config.layers[layer.name]
        if lp.is_fp32:
            continue
        if layer.kind not in INTEGER_KINDS:
            raise MpqError(f"config layer '{layer.name}' is a {layer.kind}: the integer kernel path supports "
                           f"{', '.join(INTEGER_KINDS)}; keep it \"fp32\"")
        if lp.a_bits > MAX_INTEGER_BITS or lp.w_bits > MAX_INTEGER_BITS:
            raise MpqError(f"config layer '{layer.name}' asks for w{lp.w_bits}a{lp.a_bits}: the integer kernels take "
                           f"at most {MAX_INTEGER_BITS}-bit weights and activations")
        if lp.act is None:
            raise MpqError(f"config layer '{layer.name}' has no activation quantizer (\"act\"): write the config "
                           f"with `tvm-mpq analyze --rate R` (it calibrates), or compile with --rate")


def keep_unsupported_fp32(config: PrecisionConfig, table: LayerTable) -> list[str]:
    """Return to fp32 every quantized layer whose op has no integer kernel (activation x
    activation matmul, conv1d, conv2d_transpose), updating the config's BOPs figures; the names
    changed. Used when a config is allocated for compilation (``compile --rate``, sweeps)."""
    from tvm_mpq.allocation.bops import bops_ratio, bops_reduction_rate, raw_reduction_rate
    from tvm_mpq.config.precision_config import LayerPrecision

    changed = [layer.name for layer in table
               if layer.kind not in INTEGER_KINDS and not config.layers[layer.name].is_fp32]
    for name in changed:
        config.layers[name] = LayerPrecision(None, None)
    if changed:
        p = config.precisions()
        config.provenance.update({"bops_reduction_rate": bops_reduction_rate(table, p), "bops_ratio": bops_ratio(table, p),
                                  "raw_reduction_rate": raw_reduction_rate(table, p),
                                  "fp32_no_integer_kernel": changed})
    return changed
