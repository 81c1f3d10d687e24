"""The post-training refinements a config gets after its precisions are allocated, in their order:
per-channel depthwise inputs, weight rounding, bias correction, measured depthwise bias (the :class:`PtqOptions`
that ask for them). One place for ``config_for_rate``, the sweep's bit-width configs and
``analyze``."""

from __future__ import annotations

from tvm_mpq.calibration.calibrate import CalibrationCache
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.ptq.bias_correction import apply_bias_correction
from tvm_mpq.ptq.channel_ranges import apply_channel_quantizers
from tvm_mpq.ptq.measured_bias import apply_measured_bias
from tvm_mpq.ptq.options import PtqOptions
from tvm_mpq.ptq.weight_rounding import apply_weight_rounding
from tvm_mpq.types import Feed


def refine_config(config: PrecisionConfig, feeds: list[Feed], options: PtqOptions, *, measured: ModelGraph,
                  graph: ModelGraph, table: LayerTable | None = None, cache: CalibrationCache | None = None) -> None:
    """Apply ``options``' refinements to ``config`` in place: per-channel depthwise inputs on
    ``measured`` (the graph the config's ranges were calibrated on, ``table`` its layer table),
    then, on ``graph`` (the model the config compiles), Hessian-weighted weight rounding, bias
    correction (of the rounded weights) and, with it, the measured depthwise corrections. ``options.equalize`` is a graph rewrite done before; ignored."""
    if options.channel_act:
        apply_channel_quantizers(measured, config, feeds, table, cache=cache)
    if options.weight_rounding == "hessian":
        apply_weight_rounding(graph, config, feeds, cache=cache, centered=options.bias_correction)
    if options.bias_correction:
        apply_bias_correction(graph, config, feeds, cache=cache)
        if options.measured_bias:
            apply_measured_bias(graph, config, feeds, cache=cache)
