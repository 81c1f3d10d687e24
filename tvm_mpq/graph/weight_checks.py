"""Checks of a model's layer weights before anything is calibrated or compiled."""

from __future__ import annotations

import numpy as np

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import build_layer_table


def check_layer_weights(graph: ModelGraph) -> None:
    """MpqError naming the first MAC layer whose weight holds Inf (its int8 scale would be Inf
    and every output NaN, with no error) or is float16 (the quantizers and kernels compute from
    float32; an ONNX file's float16 is widened on import, :mod:`tvm_mpq.frontends.onnx_float16`,
    so this is a float16 PyTorch module). Only layer weights: an Inf elsewhere may be a mask's fill value."""
    for layer in build_layer_table(graph):
        value = graph.params.get(layer.weight_param) if layer.weight_param is not None else None
        if value is None or not np.issubdtype(value.dtype, np.floating):
            continue
        if value.dtype == np.float16:
            raise MpqError(f"model '{graph.name}' computes layer {layer.name} in float16 (parameter "
                           f"'{layer.weight_param}'): tvm-mpq quantizes float32 models (a float16 ONNX file is computed in "
                           "float32 on import); convert the module to float32 first (module.float())")
        if np.isinf(value).any():
            raise MpqError(f"model '{graph.name}' has Inf values in parameter '{layer.weight_param}' (layer "
                           f"{layer.name}); re-export the model from a healthy checkpoint")
