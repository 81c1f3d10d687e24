"""Hessian-weighted rounding of a precision config's int8 weights (``--weight-rounding hessian``).

For every int8 conv2d / matmul layer of the config with a constant weight (the layers bias
correction computes), on the module exactly as the lowering receives it (batch-norm folded, the
annotation's weight scales): the second moments of the layer's input patches over the
calibration set (one fp32 pass; the inputs are the fp32 model's), then each weight rounded up or
down to minimise the layer's output error ``dW^T H dW`` per output channel
(:func:`tvm_mpq.quantization.adaptive_rounding.hessian_flips`; ``H`` centred when bias
correction follows, which removes the mean part). The config stores, per layer, the weights
rounded away from nearest (``weight_rounding``); ``compile`` and ``export-onnx`` apply them
(:class:`relay_passes.round_weights.RoundWeights`) and bias correction computes its vector from
the rounded weight. Provenance: ``weight_rounding: "hessian"``.
"""

from __future__ import annotations

import numpy as np

from tvm_mpq.calibration.calibrate import CalibrationCache, calibration_key, run_exposed
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable, build_layer_table
from tvm_mpq.ptq.prepared_layers import prepared_layers
from tvm_mpq.quantization.adaptive_rounding import PatchMoments, encode_flips, hessian_flips, patch_moments
from tvm_mpq.quantization.mac_error import ConvGeometry
from tvm_mpq.types import Feed

MOMENTS_KIND = "patch-moments"
"""What the cache key records in place of an observer name."""


def layer_moments(graph: ModelGraph, feeds: list[Feed], inputs: dict[str, tuple[str, tuple[int, int] | None,
                                                                                 ConvGeometry | None]],
                  cache: CalibrationCache | None = None) -> dict[str, PatchMoments]:
    """Layer -> the patch sums of its input over ``feeds`` (one fp32 pass). ``inputs``: layer ->
    (its input variable on ``graph``, its kernel size and geometry; None, None for a matmul)."""
    names = sorted(inputs)
    variables = sorted({inputs[n][0] for n in names})
    key = calibration_key(graph, feeds, variables, f"{MOMENTS_KIND}:{[(n, repr(inputs[n])) for n in names]}") \
        if cache else ""
    path = cache.path(graph.name, key).with_suffix(".moments.npz") if cache else None
    if path is not None and path.is_file():
        with np.load(path) as data:
            if all(f"o{i}" in data.files for i in range(len(names))):
                return {n: PatchMoments(data[f"o{i}"], data[f"t{i}"], int(data[f"c{i}"])) for i, n in enumerate(names)}
    sums: dict[str, PatchMoments] = {}

    def accumulate(_i: int, _outs: list[np.ndarray], tensors: list[np.ndarray]) -> None:
        by_var = dict(zip(variables, tensors))
        for name in names:
            var, kernel, geometry = inputs[name]
            got = patch_moments(np.asarray(by_var[var]), kernel, geometry)
            sums[name] = got if name not in sums else sums[name].add(got)

    run_exposed(graph, feeds, variables, accumulate, desc="input moments (weight rounding)")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{f"{k}{i}": v for i, n in enumerate(names)
                          for k, v in (("o", sums[n].outer), ("t", sums[n].total), ("c", sums[n].count))})
    return sums


def weight_roundings(graph: ModelGraph, config: PrecisionConfig, feeds: list[Feed], table: LayerTable | None = None,
                     cache: CalibrationCache | None = None, centered: bool = True) -> dict[str, np.ndarray]:
    """Layer name -> its flip mask (the folded weight's shape), for every int8 conv2d / matmul
    layer of ``config`` with a constant weight on ``graph``. ``centered``: minimise the
    variance of the output error (bias correction removes its mean), else its second moment."""
    table = table or build_layer_table(graph)
    layers = list(prepared_layers(graph, config, table))
    if not layers:
        return {}
    inputs: dict[str, tuple[str, tuple[int, int] | None, ConvGeometry | None]] = {}
    for prepared in layers:
        geometry = prepared.geometry
        inputs[prepared.layer.name] = (prepared.layer.data_var,
                                       None if geometry is None else tuple(prepared.weight.shape[2:]), geometry)
    moments = layer_moments(graph, feeds, inputs, cache)
    return {p.layer.name: hessian_flips(p.weight, p.scales, p.annotation.w_bits, p.layer.channel_axis,
                                        moments[p.layer.name].hessians(centered)) for p in layers}


def apply_weight_rounding(graph: ModelGraph, config: PrecisionConfig, feeds: list[Feed],
                          table: LayerTable | None = None, cache: CalibrationCache | None = None,
                          centered: bool = True) -> int:
    """Store :func:`weight_roundings` in ``config`` (per layer, encoded) and record it in the
    provenance; returns the number of weights rounded away from nearest."""
    flips = weight_roundings(graph, config, feeds, table, cache, centered)
    for name, mask in flips.items():
        config.layers[name].weight_rounding = encode_flips(mask)
    config.provenance["weight_rounding"] = "hessian"
    return int(sum(int(mask.sum()) for mask in flips.values()))
