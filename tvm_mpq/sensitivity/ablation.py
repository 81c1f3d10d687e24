"""QuantuneV2's ablation steps (the paper's Table 8) as registered sensitivity methods.

Each step adds one ingredient to the previous one; the last step is the full method
(``quantunev2``). The IR-opt step is not a ranking but the graph the analysis runs on (the folded
graph, stage C: ``config_for_rate(..., stage="folded")`` / ``tvm_mpq.compiler.stages``), so the
ranking methods here are:

* ``qv2-w-sqnr``: weight SQNR, lowest first (weights only, no inference);
* ``qv2-w-delta``: weight SQNR delta (Eq. 16), most negative first (weights only);
* ``qv2-wa-delta``: ``g * rank(weight delta) + rank(activation delta)`` without the MSE prefix;
* ``quantunev2``: the above with layers of MSE > 5x mean first (Algorithm 2).

:data:`ABLATION_STEPS` lists the table's rows: (label, method, analysis stage).
"""

from __future__ import annotations

from tvm_mpq.sensitivity.methods import register_method
from tvm_mpq.sensitivity.quantunev2 import QuantuneV2
from tvm_mpq.types import FOLDED, SOURCE

ABLATION_STEPS: tuple[tuple[str, str, str], ...] = (
    ("W-SQNR order", "qv2-w-sqnr", SOURCE),
    ("+ IR-opt (stage C)", "qv2-w-sqnr", FOLDED),
    ("+ W SQNR delta", "qv2-w-delta", FOLDED),
    ("+ W&A SQNR mixup", "qv2-wa-delta", FOLDED),
    ("+ MSE mixup (QuantuneV2)", "quantunev2", FOLDED),
)
"""Table 8 rows, cumulative: (row label, registered method, analysis stage)."""


@register_method
class WeightSqnrVariant(QuantuneV2):
    """Ablation step 1: rank by weight SQNR, lowest first (ties: topological order)."""

    name = "qv2-w-sqnr"
    needs_activations = False

    def __init__(self, g: float = 2.0, mse_factor: float = 5.0):
        super().__init__(g, mse_factor, delta=False, activations=False, mse_first=False)


@register_method
class WeightDeltaVariant(QuantuneV2):
    """Ablation step 2: rank by weight SQNR delta (Eq. 16), most negative first."""

    name = "qv2-w-delta"
    needs_activations = False

    def __init__(self, g: float = 2.0, mse_factor: float = 5.0):
        super().__init__(g, mse_factor, delta=True, activations=False, mse_first=False)


@register_method
class MixupVariant(QuantuneV2):
    """Ablation step 3: weight and activation SQNR deltas mixed by ``g``, no MSE prefix."""

    name = "qv2-wa-delta"

    def __init__(self, g: float = 2.0, mse_factor: float = 5.0):
        super().__init__(g, mse_factor, delta=True, activations=True, mse_first=False)
