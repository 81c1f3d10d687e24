"""What a sensitivity method receives (:class:`MethodContext`) and what a bit-width method returns
(:class:`BitAllocation`).

Methods that need inference beyond the two measurement passes (Top-1 one layer at a time, Pandey
et al.) read everything from the context: the model, its layer table, the calibration feeds,
the calibrated activation quantizers, optional labelled samples and the model's task. They run
precision assignments through :meth:`MethodContext.run`, which compiles the model once
(:class:`~tvm_mpq.sensitivity.probe.PrecisionProbe`) and switches precisions at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from tvm_mpq.allocation.bops import FP32, INT8, Precision, bops_ratio, bops_reduction_rate
from tvm_mpq.calibration.calibrate import CalibrationCache, calibrate
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import LayerTable
from tvm_mpq.quantization.quantizers import ActQParams, act_qparams
from tvm_mpq.sensitivity.layer_metrics import Measurement
from tvm_mpq.sensitivity.probe import PrecisionProbe
from tvm_mpq.types import Feed, Outputs


@dataclass
class EvalData:
    """Samples a task metric is computed on; ``labels`` (one per feed) where true labels exist."""

    feeds: list[Feed]
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.feeds):
            raise ValueError(f"{len(self.labels)} labels for {len(self.feeds)} feeds")


def kernel_for(p: Precision) -> str:
    """``"fp32"``, ``"int8"`` (W8A8: a real integer kernel exists) or ``"simulated"`` (QDQ only)."""
    if p == FP32:
        return "fp32"
    return "int8" if p == INT8 else "simulated"


@dataclass
class BitAllocation:
    """One per-layer precision assignment chosen by a bit-width method.

    ``label`` names it in reports (``"qem=2"``, ``"bops_ratio<=0.05"``); ``key`` is the same,
    safe for file names; ``info`` holds the method's numbers for it (QEM, predicted or measured
    output SQNR, ...). Every layer of the model has an entry in ``precisions``.
    """

    label: str
    key: str
    precisions: dict[str, Precision]
    info: dict = field(default_factory=dict)

    def kernels(self) -> dict[str, str]:
        """Per layer: ``"int8"`` (real integer kernel), ``"simulated"`` (QDQ) or ``"fp32"``."""
        return {name: kernel_for(p) for name, p in self.precisions.items()}

    def to_json(self, table: LayerTable) -> dict:
        """Label, info, BOPs figures and per-layer ``{"w_bits", "a_bits", "kernel"}`` (or ``"fp32"``)."""
        layers = {}
        for name, p in self.precisions.items():
            layers[name] = "fp32" if p == FP32 else {"w_bits": p.w_bits, "a_bits": p.a_bits, "kernel": kernel_for(p)}
        kernels = self.kernels()
        return {"label": self.label, "key": self.key, **self.info,
                "bops_ratio": bops_ratio(table, self.precisions),
                "bops_reduction_rate": bops_reduction_rate(table, self.precisions),
                "n_simulated": sum(k == "simulated" for k in kernels.values()),
                "layers": layers}


@dataclass
class MethodContext:
    """Everything a method may read; inference goes through :meth:`run` (compiled once).

    ``feeds`` is the calibration set (activation ranges, unlabeled fidelity); ``eval_data`` the
    labelled samples where the model has them; ``task`` the zoo task (``"generic"`` for files).
    """

    graph: ModelGraph
    table: LayerTable
    feeds: list[Feed]
    measurement: Measurement
    observer: str = "minmax"
    cache: CalibrationCache | None = None
    eval_data: EvalData | None = None
    task: str = "generic"
    _ranges: dict[int, dict[str, tuple[float, float]]] = field(default_factory=dict, repr=False)
    _probe: PrecisionProbe | None = field(default=None, repr=False)
    _reference: dict[int, tuple[list[Feed], Outputs]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.measurement.act_ranges:
            self._ranges[8] = dict(self.measurement.act_ranges)

    def calibrate(self, bits: tuple[int, ...]) -> None:
        """Calibrate every activation quantizer for ``bits`` now (one fp32 pass for all missing)."""
        missing = tuple(sorted({b for b in bits if b < 32} - set(self._ranges)))
        if not missing:
            return
        ranges = calibrate(self.graph, self.feeds, self.table.activation_operands(), self.observer,
                           bits=missing, cache=self.cache)
        for b in missing:
            self._ranges[b] = {v: by_bits[b] for v, by_bits in ranges.items()}

    def act_ranges(self, bits: int = 8) -> dict[str, tuple[float, float]]:
        """Calibrated ``(lo, hi)`` per activation tensor at ``bits`` (calibrating if needed)."""
        self.calibrate((bits,))
        return self._ranges[bits]

    def act_qparams(self, var: str, bits: int) -> ActQParams:
        """The calibrated quantizer of activation tensor ``var`` at ``bits``."""
        return act_qparams(*self.act_ranges(bits)[var], bits)

    def probe(self) -> PrecisionProbe:
        """The switchable model (compiled on first use)."""
        if self._probe is None:
            self._probe = PrecisionProbe(self.graph, self.table, self.act_qparams)
        return self._probe

    def run(self, precisions: Mapping[str, Precision], feeds: list[Feed]) -> Outputs:
        """Outputs of the model with ``precisions`` (missing layers fp32) on ``feeds``."""
        return self.probe().run(precisions, feeds)

    def reference(self, feeds: list[Feed]) -> Outputs:
        """fp32 outputs on ``feeds`` (computed once per feed list)."""
        key = id(feeds)
        if key not in self._reference or self._reference[key][0] is not feeds:
            self._reference[key] = (feeds, self.run({}, feeds))
        return self._reference[key][1]
