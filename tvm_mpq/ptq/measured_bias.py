"""Measured bias correction of depthwise convs: each one's mean output error, taken on the int8 model.

Analytic bias correction (:mod:`tvm_mpq.ptq.bias_correction`) removes the mean error a layer's
*quantized weight* adds, ``(fake_quant(W) - W) E[x]``, with ``E[x]`` the fp32 model's mean input.
A depthwise conv also sees the mean error that everything upstream adds: quantized activations
through ReLU6 clips shift channel means, and with nine or 25 taps per channel nothing averages them
out before the next layer. The "empirical" bias correction of Nagel et al. (DFQ, 2019) measures
it instead: run the quantized model on the calibration set and set each layer's correction to
``E[y_fp32] - E[y_int8]`` per output channel. Corrections change what reaches later layers, so the
layers are corrected one at a time in execution order, each measured with the corrections of the
layers before it in place.

Here that is done for the config's int8 depthwise convs on the model the compiler builds (the
batch-norm folded graph, the config's quantizers, the analytic corrections of the other layers,
the real integer kernels): one compile with each depthwise conv's correction as a run-time input
(:class:`relay_passes.offset_outputs.OffsetLayerOutputs`), then one pass over the calibration set
per depthwise conv. The fp32 means come from one fp32 pass (cached). The measured vectors
replace the analytic ones in the config (``bias_correction``), so ``compile`` and
``export-onnx`` apply them unchanged.

Measured 2026-12-02 on efficientnet-lite0 fully int8, 94 held-out photos
(``benchmarks/noise_sources.py --eval-size 94``, its PyTorch model of the defaults): top-1
agreement with fp32 0.872 -> 0.957, output SQNR 23.0 -> 23.6 dB; measuring every layer so (not
only the depthwise convs) gave 0.925 and 20.6 dB, correcting the depthwise convs all at once from
one measurement (not in order) 0.872 and 17.8 dB. On the product (``benchmarks/quant_quality.py
--variants minmax+bc+ca,minmax+bc+ca+mb --eval-size 94``): 0.883 -> 0.936, 22.7 -> 23.2 dB; on
ppocr-cls and ppocr-rec it raised the output SQNR but changed more decoded answers, so it is an
option (``--measured-bias``), off by default (docs/results.md).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import tvm
from tvm import relax

from relay_passes.lower_to_integer import LowerToInteger
from relay_passes.offset_outputs import OffsetLayerOutputs
from tvm_mpq.calibration.calibrate import CalibrationCache
from tvm_mpq.calibration.input_means import mean_tensors
from tvm_mpq.compiler.build import build_passes
from tvm_mpq.compiler.pipeline import annotation_passes, compile_model
from tvm_mpq.compiler.stages import folded_graph
from tvm_mpq.compiler.validate import keep_unsupported_fp32
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable, build_layer_table
from tvm_mpq.ptq.prepared_layers import refined_layers
from tvm_mpq.runtime.executor import flatten_outputs, host_target, host_tensor
from tvm_mpq.types import SOURCE_TO_FOLDED, Feed

MEASURED_KINDS = ("depthwise_conv2d",)
"""Layer kinds whose correction is measured (the others keep the analytic one)."""


def measured_layers(table: LayerTable, config: PrecisionConfig) -> list[str]:
    """The config's int8 depthwise convs (table order: execution order)."""
    return [layer.name for layer in refined_layers(table, config) if layer.kind in MEASURED_KINDS]


def _channel_means(tensor: np.ndarray) -> np.ndarray:
    """Per channel (axis 1, NCHW), the mean over batch and positions."""
    t = np.asarray(tensor, dtype=np.float64)
    return t.mean(axis=tuple(a for a in range(t.ndim) if a != 1))


class _OffsetModel:
    """The config's int8 model with each named layer's correction a run-time input; per feed, a
    named layer's MAC channel means."""

    def __init__(self, graph: ModelGraph, config: PrecisionConfig, table: LayerTable, names: list[str]):
        target = host_target()
        passes = [*annotation_passes(graph, config, SOURCE_TO_FOLDED, table), OffsetLayerOutputs(names),
                  LowerToInteger(fuse=True), *build_passes(target)]
        compiled = compile_model(graph, config, target, SOURCE_TO_FOLDED, pipeline=tvm.transform.Sequential(passes))
        self.vm = relax.VirtualMachine(compiled.executable, tvm.cpu())
        self.graph, self.names = graph, names
        self.shapes = {name: (1, int(table.by_name[name].output_shape[1])) + (1,) * (len(table.by_name[name].output_shape) - 2)
                       for name in names}

    def mac_means(self, feed: Feed, offsets: dict[str, np.ndarray], index: int) -> np.ndarray:
        """The channel means of the ``index``-th named layer's MAC result on ``feed``."""
        args = [host_tensor(offsets[n].reshape(self.shapes[n]).astype(np.float32)) for n in self.names]
        outs = flatten_outputs(self.vm["main"](*[host_tensor(feed[s.name]) for s in self.graph.inputs], *args))
        return _channel_means(outs[index - len(self.names)])


def measured_corrections(graph: ModelGraph, config: PrecisionConfig, feeds: list[Feed],
                         cache: CalibrationCache | None = None) -> dict[str, np.ndarray]:
    """Layer name -> the vector to add to its output, for each int8 depthwise conv of ``config``
    (module docstring). ``config`` carries the analytic corrections of the other layers (they are
    in place while measuring); its depthwise layers' own vectors are ignored."""
    table = build_layer_table(graph)
    names = measured_layers(table, config)
    if not names:
        return {}
    base = PrecisionConfig(config.model, dict(config.layers), dict(config.provenance))
    for name in names:
        base.layers[name] = replace(base.layers[name], bias_correction=None)
    keep_unsupported_fp32(base, table, int8_attention=True)  # (products of two activations: as the config has them)
    # fp32: the batch-norm folded graph's conv outputs (before the bias), as the int8 MACs below
    folded = folded_graph(graph)
    folded_vars = [build_layer_table(folded).by_name[name].var for name in names]
    means = mean_tensors(folded, feeds, folded_vars, cache)
    fp32 = [_channel_means(means[v][None]) for v in folded_vars]
    # int8: the compile pipeline (A->C: batch-norm folded into the int8 layers, their weight
    # scales those of the folded weights), each depthwise conv's correction a run-time input
    model = _OffsetModel(graph, base, table, names)
    offsets = {name: np.zeros(model.shapes[name][1], np.float32) for name in names}
    for k, name in enumerate(names):  # execution order: each measured with the ones before it corrected
        int8 = np.mean([model.mac_means(feed, offsets, k) for feed in feeds], axis=0)
        offsets[name] = (fp32[k] - int8).astype(np.float32)
    return offsets


def apply_measured_bias(graph: ModelGraph, config: PrecisionConfig, feeds: list[Feed],
                        cache: CalibrationCache | None = None) -> int:
    """Replace the bias correction of each int8 depthwise conv of ``config`` (which must carry
    the analytic corrections, :func:`~tvm_mpq.ptq.bias_correction.apply_bias_correction`) by the
    measured one (:func:`measured_corrections`) and record the layers in the provenance
    (``measured_bias``); returns their number."""
    corrections = measured_corrections(graph, config, feeds, cache)
    for name, vector in corrections.items():
        config.layers[name].bias_correction = [float(v) for v in vector]
    config.provenance["measured_bias"] = sorted(corrections)
    return len(corrections)
