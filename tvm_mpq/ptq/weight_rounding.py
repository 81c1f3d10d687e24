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
import tvm
from tvm import relax

from relay_passes.precision_annotation import annotated_layers, relax_functions
from tvm_mpq.calibration.calibrate import CalibrationCache, calibration_key, run_exposed
from tvm_mpq.compiler.pipeline import annotation_passes
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable, build_layer_table
from tvm_mpq.ptq.bias_correction import conv_geometry, corrected_layers, without_corrections
from tvm_mpq.quantization.adaptive_rounding import PatchMoments, encode_flips, hessian_flips, patch_moments
from tvm_mpq.quantization.mac_error import ConvGeometry
from tvm_mpq.quantization.quantizers import weight_scales
from tvm_mpq.types import Feed

WEIGHT_ROUNDINGS = ("nearest", "hessian")
"""The weight roundings the CLI offers (``--weight-rounding``)."""

MOMENTS_KIND = "patch-moments"
"""What the cache key records in place of an observer name."""


def _constant(expr: relax.Expr, var2val: dict) -> np.ndarray | None:
    while isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    value = getattr(expr, "value", None)
    return value.numpy() if hasattr(value, "numpy") else None


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
    layers = {layer.name: layer for layer in corrected_layers(table, config)}
    if not layers:
        return {}
    with tvm.transform.PassContext(opt_level=3):
        prepared = tvm.transform.Sequential(annotation_passes(graph, without_corrections(config), "A->C", table),
                                            name="tvm_mpq.annotate")(graph.mod)
    weights: dict[str, tuple[np.ndarray, np.ndarray, int, int]] = {}
    inputs: dict[str, tuple[str, tuple[int, int] | None, ConvGeometry | None]] = {}
    for _, func in relax_functions(prepared):
        var2val = relax.analysis.get_var2val(func)
        for binding, annotation in annotated_layers(func):
            layer = layers.get(annotation.layer)
            if layer is None or annotation.is_fp32:
                continue
            call = binding.value
            weight = _constant(call.args[1], var2val)
            if weight is None:
                raise RuntimeError(f"layer {layer.name}: weight is not a constant after preparation")
            geometry = conv_geometry(call)
            scales = annotation.weight_scales
            if scales is None:
                scales = weight_scales(weight, annotation.w_bits, layer.channel_axis)
            weights[layer.name] = (weight, scales, annotation.w_bits, layer.channel_axis)
            inputs[layer.name] = (layer.data_var, None if geometry is None else tuple(weight.shape[2:]), geometry)
    moments = layer_moments(graph, feeds, inputs, cache)
    return {name: hessian_flips(w, s, bits, axis, moments[name].hessians(centered))
            for name, (w, s, bits, axis) in weights.items()}


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
