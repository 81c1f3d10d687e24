"""MixQuant (Kloberdanz & Le): per-layer weight bit-width from the weight quantization error.

For each layer and each quantization error multiplier (QEM), the weight bit-width is the lowest
``b`` in ``bits`` (default 8..2) with ``MSE_b <= QEM x MSE_8``, where ``MSE_b`` is the mean
squared error of the layer's weights under the weight quantizer of docs/design.md at ``b`` bits. QEM 1 keeps
every layer at 8 bits; a larger QEM admits a superset of bit-widths per layer, so the chosen
widths never rise (the average falls monotonically). Every QEM of one run is one
:class:`BitAllocation`. Activations stay at ``a_bits`` (8, or 32 = fp32); the second operand of an
activation x activation matmul has no weight to measure and stays 8-bit. With the per-channel
max-scaled quantizer, ``MSE_b / MSE_8`` is close to ``4^(8-b)`` (one bit less = about 4x the
error), so QEMs of 4, 16, 64, 256 sit near the 7, 6, 5, 4-bit thresholds (the defaults).

Sensitivity list: layers whose weight error grows fastest as bits drop come first (mean over
``b < 8`` of ``log2(MSE_b / MSE_8)``, descending; ties and weightless matmuls by topological
order, weightless last). No inference: weights only.
"""

from __future__ import annotations

import math
import time

import numpy as np

from tvm_mpq.allocation.bops import FP32, Precision
from tvm_mpq.errors import MpqError
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.metrics.local_metrics import mse
from tvm_mpq.quantization.quantizers import fake_quant_weight
from tvm_mpq.sensitivity.context import BitAllocation, MethodContext
from tvm_mpq.sensitivity.layer_metrics import LayerMetrics
from tvm_mpq.sensitivity.methods import SensitivityMethod, register_method
from tvm_mpq.frontends.model_graph import ModelGraph

DEFAULT_QEMS = (1.0, 4.0, 16.0, 64.0, 256.0)
DEFAULT_BITS = (8, 7, 6, 5, 4, 3, 2)


def weight_mse_table(graph: ModelGraph, table: LayerTable, bits: tuple[int, ...]) -> dict[str, dict[int, float]]:
    """``{layer: {b: MSE of its weights at b bits}}`` for every layer with a constant weight."""
    out: dict[str, dict[int, float]] = {}
    for layer in table:
        if layer.weight_param is None:
            continue
        w = layer.weight_operand(graph.params)
        out[layer.name] = {b: mse(w, fake_quant_weight(w, b, layer.channel_axis)) for b in bits}
    return out


def mixquant_bits(errors: dict[int, float], qem: float, reference_bits: int = 8) -> int:
    """The lowest ``b`` with ``errors[b] <= qem * errors[reference_bits]``."""
    bound = qem * errors[reference_bits]
    return min(b for b, e in errors.items() if e <= bound)


def parse_qems(values: object) -> tuple[float, ...]:
    """QEMs from a list or a ``"1,2,4"`` string; MpqError unless every one is a number >= 1."""
    items = values.split(",") if isinstance(values, str) else list(values)  # type: ignore[arg-type]
    qems = []
    for item in items:
        try:
            q = float(item)
        except (TypeError, ValueError):
            raise MpqError(f"QEM '{item}' is not a number (e.g. --qem 1,4,16)") from None
        if not math.isfinite(q) or q < 1.0:
            raise MpqError(f"QEM {item} is below 1: MixQuant needs QEM >= 1 (1 keeps 8-bit weights)")
        qems.append(q)
    if not qems:
        raise MpqError("MixQuant needs at least one QEM")
    return tuple(sorted(set(qems)))


@register_method
class MixQuant(SensitivityMethod):
    """MixQuant weight bit-widths for several QEMs (see module docstring)."""

    name = "mixquant"
    needs_activations = False

    def __init__(self, qems: object = DEFAULT_QEMS, bits: tuple[int, ...] = DEFAULT_BITS, a_bits: int = 8):
        self.qems = parse_qems(qems)
        bits = tuple(sorted({int(b) for b in bits}, reverse=True))
        if 8 not in bits or not all(2 <= b <= 8 for b in bits):
            raise MpqError(f"MixQuant bit-widths must lie in 2..8 and include 8, got {list(bits)}")
        if a_bits not in (2, 3, 4, 5, 6, 7, 8, 16, 32):
            raise MpqError(f"MixQuant activation bits must be 2..8, 16 or 32 (fp32), got {a_bits}")
        self.bits, self.a_bits = bits, a_bits
        self._errors: dict[str, dict[int, float]] = {}
        self._details: dict[str, dict] = {}
        self._seconds = 0.0
        self._measured = False

    def measure(self, ctx: MethodContext) -> None:
        start = time.perf_counter()
        self._errors = weight_mse_table(ctx.graph, ctx.table, self.bits)
        for name, errors in self._errors.items():
            growth = [math.log2(max(errors[b], 1e-30) / max(errors[8], 1e-30)) for b in self.bits if b < 8]
            self._details[name] = {"weight_mse": {str(b): e for b, e in errors.items()},
                                   "mse_growth_log2": float(np.mean(growth)) if growth else 0.0,
                                   "mixquant_w_bits": {f"{q:g}": mixquant_bits(errors, q) for q in self.qems}}
        self._seconds = time.perf_counter() - start
        self._measured = True

    def rank(self, table: LayerTable, metrics: dict[str, LayerMetrics]) -> list[str]:
        if not self._measured:
            raise RuntimeError("mixquant: measure(ctx) must run before rank")
        d = self._details
        return [l.name for l in sorted(table, key=lambda l: (l.name not in d,
                                                             -d[l.name]["mse_growth_log2"] if l.name in d else 0.0,
                                                             l.index))]

    def allocate(self, ctx: MethodContext) -> list[BitAllocation]:
        allocations = []
        for qem in self.qems:
            precisions: dict[str, Precision] = {}
            for layer in ctx.table:
                w = mixquant_bits(self._errors[layer.name], qem) if layer.name in self._errors else 8
                precisions[layer.name] = Precision(w, self.a_bits)
            allocations.append(BitAllocation(f"qem={qem:g}", f"qem{qem:g}", precisions,
                                             {"qem": qem, **weight_bit_stats(ctx.table, precisions, ctx.graph)}))
        return allocations

    def details(self) -> dict[str, dict]:
        return self._details

    def summary(self) -> dict:
        return {"qems": list(self.qems), "bits": list(self.bits), "a_bits": self.a_bits, "seconds": self._seconds,
                "inference_runs": 0}


def weight_bit_stats(table: LayerTable, precisions: dict[str, Precision], graph: ModelGraph) -> dict:
    """Average weight bits over layers with weights: plain, MAC-weighted, parameter-weighted."""
    layers = [l for l in table if l.weight_param is not None and precisions[l.name] != FP32]
    if not layers:
        return {"avg_w_bits": None, "macs_weighted_w_bits": None, "params_weighted_w_bits": None}
    bits = np.array([precisions[l.name].w_bits for l in layers], np.float64)
    macs = np.array([l.macs for l in layers], np.float64)
    sizes = np.array([graph.params[l.weight_param].size for l in layers], np.float64)
    return {"avg_w_bits": float(bits.mean()), "macs_weighted_w_bits": float(bits @ macs / macs.sum()),
            "params_weighted_w_bits": float(bits @ sizes / sizes.sum())}
