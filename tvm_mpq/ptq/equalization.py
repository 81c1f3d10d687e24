"""Cross-layer equalization of a model: the graph rewrite, as a new stage-A :class:`ModelGraph`.

The model is bound and every layer named in the IR (fp32 precision annotations),
:class:`~relay_passes.equalize.EqualizeCrossLayer` rewrites it (exactly the same function in
fp32), and the MAC weights become parameters again under their names
(:class:`~relay_passes.lift_weights.LiftWeights`), so the layer table, the analysis and the
precision config see the same layers. The graph records what was done
(``transforms["cross_layer_equalization"]``: the pairs and their scales, read from the pass's
function attributes); a config made on it carries that record, and :func:`graph_for_config`
replays exactly those scales on the imported model (``compile --config``, ``export-onnx``).
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax

from relay_passes import (AnnotatePrecision, EqualizeCrossLayer, LiftWeights, PrecisionAnnotation,
                          RemovePrecisionAnnotations, UniqueBindingNames)
from relay_passes.equalize import equalized_pairs as module_pairs
from tvm_mpq.compiler.pipeline import bind_params_pass, frontend_recovery_passes
from tvm_mpq.compiler.stages import graph_with_lifted_weights
from tvm_mpq.config.precision_config import PrecisionConfig
from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import build_layer_table
from tvm_mpq.ptq.options import PtqOptions

TRANSFORM = "cross_layer_equalization"


def equalization_passes(graph: ModelGraph, lifted: dict[str, np.ndarray],
                        scales: dict[tuple[str, str], np.ndarray] | None = None) -> list[tvm.transform.Pass]:
    """Bind, recover an ONNX import's ReLU6 as maximum / minimum, name every layer (fp32
    annotations), equalize (DFQ scales, or ``scales``), lift
    each MAC weight back to a parameter (values into ``lifted``), drop the annotations."""
    table = build_layer_table(graph)
    names = {layer.name: PrecisionAnnotation.fp32(layer.name) for layer in table}
    weights = {layer.name: layer.weight_param for layer in table if layer.weight_param is not None}
    return [bind_params_pass(graph), relax.transform.FoldConstant(), *frontend_recovery_passes(), AnnotatePrecision(names, table),
            EqualizeCrossLayer(scales), LiftWeights(weights, lifted), RemovePrecisionAnnotations(),
            relax.transform.DeadCodeElimination(), UniqueBindingNames()]


def equalize(graph: ModelGraph, scales: dict[tuple[str, str], np.ndarray] | None = None) -> ModelGraph:
    """``graph`` with its equalizable conv pairs equalized (DFQ scales, or ``scales``)."""
    if TRANSFORM in graph.transforms:
        raise MpqError(f"model '{graph.name}' is already equalized")
    lifted: dict[str, np.ndarray] = {}
    with tvm.transform.PassContext(opt_level=3):
        try:
            mod = tvm.transform.Sequential(equalization_passes(graph, lifted, scales), name="tvm_mpq.equalize")(graph.mod)
        except ValueError as err:
            raise MpqError(f"cross-layer equalization of '{graph.name}': {err}") from None
    record = {"pairs": [pair.to_json() for pair in module_pairs(mod)]}
    return graph_with_lifted_weights(graph, mod, lifted, {**graph.transforms, TRANSFORM: record})


def equalized_pairs(graph: ModelGraph) -> list[dict]:
    """The pairs ``graph`` was equalized with (``[]`` if it was not)."""
    return list(graph.transforms.get(TRANSFORM, {}).get("pairs", []))


def graph_for_options(graph: ModelGraph, options: PtqOptions) -> ModelGraph:
    """The graph an analysis with ``options`` runs on (equalized when ``options.equalize``)."""
    return equalize(graph) if options.equalize else graph


def _is_pair_record(pair: object) -> bool:
    """Whether ``pair`` is one equalized pair as a config records it (``EqualizedPair.to_json``)."""
    if not isinstance(pair, dict) or not isinstance(pair.get("first"), str) or not isinstance(pair.get("second"), str):
        return False
    scales = pair.get("scales")
    return (isinstance(scales, list) and bool(scales)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in scales))


def graph_for_config(graph: ModelGraph, config: PrecisionConfig) -> ModelGraph:
    """The imported ``graph`` with the rewrites ``config`` was made on replayed (its recorded
    equalization scales), so that it compiles and exports exactly as analyzed."""
    transforms = config.provenance.get("graph_transforms", {})
    unknown = set(transforms) - {TRANSFORM}
    if unknown:
        raise MpqError(f"the config was made with graph rewrites this tvm-mpq does not know: {sorted(unknown)}")
    if TRANSFORM not in transforms or TRANSFORM in graph.transforms:
        return graph
    pairs = transforms[TRANSFORM].get("pairs", [])
    if not isinstance(pairs, list) or not all(_is_pair_record(p) for p in pairs):
        raise MpqError("the config's cross-layer equalization record is malformed: \"pairs\" must be a list of "
                       "{\"first\": layer, \"second\": layer, \"scales\": [positive finite numbers]}")
    scales = {(p["first"], p["second"]): np.asarray(p["scales"], np.float64) for p in pairs}
    equalized = equalize(graph, scales)
    if equalized.transforms[TRANSFORM] != transforms[TRANSFORM]:
        raise MpqError("replaying the config's cross-layer equalization did not reproduce its record")
    return equalized
