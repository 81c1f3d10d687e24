"""Graph-level passes of tvm-mpq, written against Relax (TVM >= 0.20 has no Relay).

Each pass is a ``tvm.transform`` module pass: it composes with TVM's own passes in a
``tvm.transform.Sequential`` and runs under a ``tvm.transform.PassContext``.

* :class:`ExposeIntermediates` - return chosen intermediate tensors as extra outputs
  (calibration, per-layer metrics).
* :class:`SimulateQuantization` - insert quantize-dequantize (QDQ) around chosen MAC ops'
  operands: per-channel symmetric weights, per-tensor asymmetric activations, any bit-width.
"""

from relay_passes.expose_intermediates import ExposeIntermediates
from relay_passes.fold_batch_norm import FoldBatchNorm
from relay_passes.lower_to_integer import IntLayerPlan, LoweringStats, LowerToInteger
from relay_passes.simulate_quantization import LayerQuantPlan, SimulateQuantization

__all__ = ["ExposeIntermediates", "FoldBatchNorm", "IntLayerPlan", "LayerQuantPlan", "LowerToInteger",
           "LoweringStats", "SimulateQuantization"]
