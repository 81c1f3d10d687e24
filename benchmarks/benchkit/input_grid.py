"""A model's inputs put on the 8-bit grid an int8 first layer reads them on: the error no int8
build of the model avoids (its first quantize), measured on the fp32 model alone.

The grid is per tensor, uint8, from the calibration samples' min / max (the default observer's
range for a model input). A model whose fp32 answers already change with only this (efficientnet-lite0
on 3 of 32 held-out photos, ppocrv5-det's probability map at 12.8 dB) cannot be brought closer
than that by any choice made after its first layer."""

from __future__ import annotations

import numpy as np

from tvm_mpq.quantization.quantizers import ActQParams, act_qparams, fake_quant_activation
from tvm_mpq.types import Feed


def input_grids(calib: list[Feed]) -> dict[str, ActQParams]:
    """Each float input's uint8 quantizer over the calibration samples (min / max)."""
    return {name: act_qparams(min(float(f[name].min()) for f in calib), max(float(f[name].max()) for f in calib), 8)
            for name, value in calib[0].items() if np.issubdtype(np.asarray(value).dtype, np.floating)}


def on_input_grid(feeds: list[Feed], calib: list[Feed]) -> list[Feed]:
    """``feeds`` with every float input quantized and dequantized on its :func:`input_grids` grid."""
    grids = input_grids(calib)
    return [{name: fake_quant_activation(value, grids[name]).astype(value.dtype) if name in grids else value
             for name, value in feed.items()} for feed in feeds]
