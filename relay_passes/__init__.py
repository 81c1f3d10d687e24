"""Graph-level passes of tvm-mpq, written against Relax (TVM >= 0.20 has no Relay).

Each pass is a ``tvm.transform`` module pass: it composes with TVM's own passes in a
``tvm.transform.Sequential`` and runs under a ``tvm.transform.PassContext``.

* :class:`ExposeIntermediates` - return chosen intermediate tensors as extra outputs
  (calibration, per-layer metrics).
* :class:`SimulateQuantization` - insert quantize-dequantize (QDQ) around chosen MAC ops'
  operands: per-channel symmetric weights, per-tensor asymmetric activations, any bit-width.
* :class:`FoldBatchNorm` - fold inference batch-norm into chosen convs.
* :class:`EqualizeCrossLayer` - cross-layer equalization of conv pairs (exact in fp32, ReLU6
  bounds made per channel).
* :class:`CorrectBias` - add per-channel bias corrections to chosen layers.
* :class:`LowerToInteger` - the precision pass: int8 layers to integer kernels.

The passes that rewrite chosen layers visit every Relax function and key the layers by the
layer table's stable names (:class:`LayerKeys`).
"""

from relay_passes.correct_bias import CorrectBias
from relay_passes.equalize import EqualizeCrossLayer, EqualizedPair
from relay_passes.expose_intermediates import ExposeIntermediates
from relay_passes.fold_batch_norm import FoldBatchNorm
from relay_passes.layer_keys import LayerKeys
from relay_passes.lower_to_integer import IntLayerPlan, LoweringStats, LowerToInteger
from relay_passes.simulate_quantization import LayerQuantPlan, SimulateQuantization

__all__ = ["CorrectBias", "EqualizeCrossLayer", "EqualizedPair", "ExposeIntermediates", "FoldBatchNorm",
           "IntLayerPlan", "LayerKeys", "LayerQuantPlan", "LowerToInteger", "LoweringStats", "SimulateQuantization"]
