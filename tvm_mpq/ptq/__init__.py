"""Post-training quantization refinements that run before the precision pass.

* cross-layer equalization (:mod:`tvm_mpq.ptq.equalization`): rescales the channels between
  two layers so that the model computes the same function with easier-to-quantize weights;
* bias correction (:mod:`tvm_mpq.ptq.bias_correction`): removes the expected output error
  of each quantized layer's weights; with ``measured_bias`` the depthwise convs' corrections are
  measured on the int8 model instead (:mod:`tvm_mpq.ptq.measured_bias`), in execution order;
* per-channel depthwise inputs (:mod:`tvm_mpq.ptq.channel_ranges`): one quantizer per channel
  for the input of a depthwise conv, where a held-out-half measurement says it is better;
* Hessian-weighted weight rounding (:mod:`tvm_mpq.ptq.weight_rounding`): each int8 weight
  rounded up or down to minimise its layer's output error on the calibration inputs.

Equalization, bias correction and weight rounding are graph passes (``relay_passes``), the
per-channel inputs are carried by the precision pass; this package decides their inputs (scales, vectors, quantizers)
from the model and the calibration set and records them in the precision config, so that
``compile`` and ``export-onnx`` apply exactly the same numbers.
"""

from tvm_mpq.ptq.options import PtqOptions

__all__ = ["PtqOptions"]
