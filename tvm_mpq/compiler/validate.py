"""Which configs the integer compile path can run, checked without compiling.

The rules are the lowering's own (:mod:`relay_passes.integer_support`): the compile itself
raises the same one-line error from :class:`~relay_passes.LowerToInteger`, naming the layer.
Used where configs are filtered before any build (a sweep skips the assignments the integer
kernels cannot run; ``compile --rate`` keeps those layers fp32).
"""

from __future__ import annotations

from relay_passes.integer_support import ATTENTION_KIND, INTEGER_KINDS, integer_problem
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.errors import MpqError
from tvm_mpq.graph.layer_table import LayerTable


def check_integer_config(config: PrecisionConfig, table: LayerTable) -> None:
    """MpqError naming the first problem: layers not in the model, missing layers, layers whose
    op has no integer kernel (a grouped or dilated conv2d_transpose), bits
    above 8, or a quantized layer without its activation quantizer."""
    config.validate(table)
    for layer in table:
        lp = config.layers[layer.name]
        if lp.is_fp32:
            continue
        problem = integer_problem(layer.name, layer.kind, lp.w_bits, lp.a_bits, lp.act is not None,
                                  lp.b_act is not None)
        if problem is not None:
            raise MpqError(f"config {problem}")


def keep_unsupported_fp32(config: PrecisionConfig, table: LayerTable, int8_attention: bool = False) -> list[str]:
    """Return to fp32 every quantized layer whose op has no integer kernel (grouped or dilated
    conv2d_transpose) and, unless ``int8_attention``, every activation x activation matmul,
    updating the config's BOPs figures; the names changed. Used when a config is allocated for
    compilation (``compile --rate``, sweeps)."""
    from tvm_mpq.allocation.bops import bops_ratio, bops_reduction_rate, raw_reduction_rate
    from tvm_mpq.config.precision_config import LayerPrecision

    runs = [kind for kind in INTEGER_KINDS if int8_attention or kind != ATTENTION_KIND]
    changed = [layer.name for layer in table
               if layer.kind not in runs and not config.layers[layer.name].is_fp32]
    for name in changed:
        config.layers[name] = LayerPrecision(None, None)
    if changed:
        p = config.precisions()
        config.provenance.update({"bops_reduction_rate": bops_reduction_rate(table, p), "bops_ratio": bops_ratio(table, p),
                                  "raw_reduction_rate": raw_reduction_rate(table, p),
                                  "fp32_no_integer_kernel": changed})
    return changed
