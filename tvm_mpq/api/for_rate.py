"""Analysis + allocation in one call: the precision config for a target BOPs reduction rate."""

from __future__ import annotations

from tvm_mpq.allocation.allocate import allocate_by_rate
from tvm_mpq.calibration.calibrate import CalibrationCache, calibrate
from tvm_mpq.config.build import build_config
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import build_layer_table
from tvm_mpq.types import Feed


def analysis_graph(graph: ModelGraph, stage: str) -> ModelGraph:
    """The graph the sensitivity is measured on: stage A (``A``, ``A->C``) or stage C (``C``)."""
    if stage == "C":
        from tvm_mpq.compiler.stages import stage_c_graph

        return stage_c_graph(graph)
    return graph


def config_for_rate(graph: ModelGraph, feeds: list[Feed], rate: float, method: str = "quantunev2", *,
                    observer: str = "minmax", g: float = 2.0, cache: CalibrationCache | None = None,
                    stage: str = "A->C", report=None, bias_correction: bool = False, channel_act: bool = False,
                    measured_bias: bool = False, weight_rounding: str = "nearest",
                    int8_attention: bool | None = None, **analyze_options) -> tuple[PrecisionConfig, object]:
    """Analyze ``graph`` (at the stage's IR, unless a ``report`` of that analysis is given),
    allocate for ``rate`` and attach the quantizers; returns ``(config, report)``.

    Reuse ``report`` to allocate several rates from one analysis (a sweep analyzes once).
    ``bias_correction``: store each int8 layer's bias correction in the config
    (:mod:`tvm_mpq.ptq.bias_correction`; one more fp32 pass, cached). ``channel_act``: quantize
    the inputs of int8 depthwise convs per channel (:mod:`tvm_mpq.ptq.channel_ranges`; two more
    fp32 passes, cached). ``measured_bias`` (with ``bias_correction``): each int8 depthwise conv's
    correction measured on the int8 model (:mod:`tvm_mpq.ptq.measured_bias`; one compile, one
    pass over ``feeds`` per depthwise conv). ``weight_rounding="hessian"``: each int8 weight
    rounded up or down to minimise its layer's output error (:mod:`tvm_mpq.ptq.weight_rounding`;
    one more fp32 pass, cached). A graph rewritten by
    :func:`tvm_mpq.ptq.graph_for_options` (equalization) records its rewrites in the config.
    ``int8_attention`` True / False: the layers with no integer kernel and, unless True, the
    products of two activations are made fp32 (:func:`~tvm_mpq.compiler.validate.keep_unsupported_fp32`,
    as ``compile --rate`` builds) before those refinements, so that measured bias corrections are
    measured on the config that is compiled; None: every layer as allocated.
    """
    from tvm_mpq.sensitivity.analysis import analyze

    measured = analysis_graph(graph, stage)
    table = build_layer_table(measured)
    if report is None:
        report = analyze(measured, feeds, method, observer=observer, g=g, cache=cache, table=table, **analyze_options)
    ranges = report.measurement.act_ranges
    if not ranges:  # weight-only methods: calibrate the activation quantizers now
        ranges = {v: r[8] for v, r in calibrate(measured, feeds, table.activation_operands(), observer,
                                               cache=cache).items()}
    precisions = allocate_by_rate(table, report.sensitivity, rate)
    config = build_config(measured, table, precisions, ranges,
                          {"method": method, "requested_rate": rate, "observer": observer,
                           "calib_size": len(feeds), "analysis_stage": "C" if stage == "C" else "A",
                           "bias_correction": False, "channel_act": False})
    if int8_attention is not None:
        from tvm_mpq.compiler.validate import keep_unsupported_fp32

        keep_unsupported_fp32(config, table, int8_attention)
    from tvm_mpq.ptq import PtqOptions
    from tvm_mpq.ptq.refine import refine_config

    refine_config(config, feeds, PtqOptions(bias_correction=bias_correction, channel_act=channel_act,
                                            measured_bias=measured_bias, weight_rounding=weight_rounding),
                  measured=measured, graph=graph, table=table, cache=cache)
    return config, report
