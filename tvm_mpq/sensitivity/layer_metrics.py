"""Per-layer quantization error of a stage-A model: the measurement every sensitivity method reads.

Weights are compared with their fake-quantized selves directly (no inference). Activations take
exactly two inference passes over the calibration set (QuantuneV2):

1. fp32, with every MAC op's inputs and outputs exposed: observers give each activation
   quantizer its range; the MAC outputs are kept as the reference;
2. every layer int8-simulated at once, MAC outputs exposed again: per-layer output SQNR / MSE /
   cosine / KL against the fp32 reference.

Both passes run on one build, a :class:`~tvm_mpq.sensitivity.probe.PrecisionProbe` with the
tensors exposed: its quantizers are run-time switches, off for pass 1 (the fp32 model exactly)
and on, with pass 1's ranges, for pass 2 (``SimulateQuantization``'s arithmetic, bit for bit on
TVM's default build), so the model is compiled once instead of twice (the same metrics to the
bit, about half the analysis time of a small model: docs/results.md, "QuantuneV2's analysis").
Large models run it on the CPU kernels (:func:`~tvm_mpq.target_build.runs.kernels_pay_off`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from tvm_mpq.allocation.bops import Precision
from tvm_mpq.calibration.calibrate import CalibrationCache, calibration_key, run_exposed
from tvm_mpq.calibration.observers import make_observer
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import Layer, LayerTable, model_macs
from tvm_mpq.metrics.local_metrics import as_float64, make_metric, metric_names, mse, sqnr_db
from tvm_mpq.quantization.quantizers import ActQParams, act_qparams, fake_quant_activation, fake_quant_weight
from tvm_mpq.sensitivity.probe import PrecisionProbe
from tvm_mpq.target_build.runs import kernels_pay_off
from tvm_mpq.types import Feed

ACTIVATION_METRICS = ("sqnr_db", "mse", "cosine", "kl")


@dataclass
class LayerMetrics:
    """Quantization error of one layer; None where not measured (activations without inference,
    and the second operand of an activation x activation matmul, which only inference shows)."""

    w_sqnr_db: float | None
    w_mse: float | None
    a_sqnr_db: float | None = None
    a_mse: float | None = None
    a_cosine: float | None = None
    a_kl: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    """Activation metrics registered beyond the built-in four (``register_metric``), by name."""

    def to_json(self) -> dict:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


@dataclass
class Measurement:
    """Everything measured on one model: metrics per layer, quantizers, cost."""

    metrics: dict[str, LayerMetrics]
    act_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    inference_passes: int = 0
    seconds: float = 0.0


def weight_metrics(layer: Layer, params: dict[str, np.ndarray], w_bits: int) -> tuple[float, float]:
    w = layer.weight_operand(params)
    wq = fake_quant_weight(w, w_bits, layer.channel_axis)
    return sqnr_db(w, wq), mse(w, wq)


def measure_layers(graph: ModelGraph, table: LayerTable, feeds: list[Feed], *, observer: str = "minmax",
                   w_bits: int = 8, a_bits: int = 8, activations: bool = True,
                   cache: CalibrationCache | None = None) -> Measurement:
    """Measure every layer of ``table`` (see module docstring)."""
    start = time.perf_counter()
    metrics: dict[str, LayerMetrics] = {}
    for layer in table:
        if layer.weight_param is not None:
            s, m = weight_metrics(layer, graph.params, w_bits)
            metrics[layer.name] = LayerMetrics(s, m)
    if not activations:
        for layer in table:
            metrics.setdefault(layer.name, LayerMetrics(None, None))
        return Measurement(metrics, seconds=time.perf_counter() - start)

    # Pass 1: fp32, observe every activation operand, keep every MAC output.
    act_vars = table.activation_operands()
    out_vars = [layer.var for layer in table]
    observers = {v: make_observer(observer) for v in act_vars}
    reference: dict[str, list[np.ndarray]] = {v: [] for v in out_vars}
    operand_b: dict[str, list[np.ndarray]] = {layer.weight_var: [] for layer in table if layer.weight_param is None}

    def pass1(_i: int, _outs: list[np.ndarray], tensors: list[np.ndarray]) -> None:
        named = dict(zip(act_vars + out_vars, tensors))
        for v in act_vars:
            observers[v].update(named[v])
            if v in operand_b:
                operand_b[v].append(named[v])
        for v in out_vars:
            reference[v].append(named[v])

    qparams: dict[str, ActQParams] = {}
    probe = PrecisionProbe(graph, table, lambda var, _bits: qparams[var], expose=act_vars + out_vars,
                           kernels=kernels_pay_off(model_macs(graph)))
    run_exposed(graph, feeds, act_vars + out_vars, pass1, desc="pass 1/2 fp32 + calibration",
                compiled=probe.assignment({}))
    ranges = {v: observers[v].range(a_bits) for v in act_vars}
    if cache is not None:
        key = calibration_key(graph, feeds, act_vars, observer)
        cache.save(graph.name, key, {v: {a_bits: r} for v, r in ranges.items()}, observer)
    qparams.update({v: act_qparams(*ranges[v], a_bits) for v in act_vars})

    # Weight metrics of activation x activation matmuls: the B operand vs its fake-quant.
    for layer in table:
        if layer.weight_param is None:
            b = np.concatenate([x.ravel() for x in operand_b[layer.weight_var]])
            bq = fake_quant_activation(b, qparams[layer.weight_var])
            metrics[layer.name] = LayerMetrics(sqnr_db(b, bq), mse(b, bq))

    # Pass 2: every layer int8-simulated at once, on the same build (its quantizers switched on).
    every_layer = {layer.name: Precision(w_bits, a_bits) for layer in table}
    names = list(dict.fromkeys([*ACTIVATION_METRICS, *metric_names()]))  # built-ins + registered ones
    accumulators = {v: {m: make_metric(m) for m in names} for v in out_vars}

    def pass2(i: int, _outs: list[np.ndarray], tensors: list[np.ndarray]) -> None:
        for v, t in zip(out_vars, tensors[len(act_vars):]):
            x, x_hat = as_float64(reference[v][i]), as_float64(t)  # once for every metric
            for acc in accumulators[v].values():
                acc.update(x, x_hat)

    run_exposed(graph, feeds, act_vars + out_vars, pass2, desc="pass 2/2 int8-simulated",
                compiled=probe.assignment(every_layer))
    for layer in table:
        acc = accumulators[layer.var]
        m = metrics[layer.name]
        m.a_sqnr_db, m.a_mse = acc["sqnr_db"].value(), acc["mse"].value()
        m.a_cosine, m.a_kl = acc["cosine"].value(), acc["kl"].value()
        m.extra = {name: metric.value() for name, metric in acc.items() if name not in ACTIVATION_METRICS}
    return Measurement(metrics, ranges, inference_passes=2, seconds=time.perf_counter() - start)
