"""The model at QuantuneV2's IR stages, as :class:`ModelGraph` s the analysis can run on.

* the source graph ("stage A", :data:`tvm_mpq.types.SOURCE`) — the imported model (conv,
  batch-norm, relu separate): ``ModelGraph`` as loaded;
* the folded graph ("stage C", :data:`tvm_mpq.types.FOLDED`) — batch-norm folded into every conv
  (TVM-style fold, :class:`FoldBatchNorm`), weights detached again as parameters under their
  source-graph names, so the layer table, the analysis and the precision config see the same
  layer names at both stages: :func:`folded_graph`.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from relay_passes import (AnnotatePrecision, FoldBatchNorm, LiftWeights, PrecisionAnnotation,
                          RemovePrecisionAnnotations, UniqueBindingNames)
from tvm_mpq.compiler.pipeline import bind_params_pass
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.graph.layer_table import build_layer_table


def folding_passes(graph: ModelGraph, lifted: dict[str, np.ndarray]) -> list[tvm.transform.Pass]:
    """Source graph -> folded graph: bind, name every layer in the IR (fp32 annotations), fold every
    batch-norm, lift each folded weight back to a parameter (values into ``lifted``), drop the
    annotations, give every binding a unique name."""
    table = build_layer_table(graph)
    names = {layer.name: PrecisionAnnotation.fp32(layer.name) for layer in table}
    weights = {layer.name: layer.weight_param for layer in table if layer.weight_param is not None}
    return [bind_params_pass(graph), relax.transform.FoldConstant(), AnnotatePrecision(names, table),
            FoldBatchNorm(None), relax.transform.FoldConstant(), relax.transform.CanonicalizeBindings(),
            relax.transform.DeadCodeElimination(), LiftWeights(weights, lifted), RemovePrecisionAnnotations(),
            relax.transform.DeadCodeElimination(), UniqueBindingNames()]


def folded_graph(graph: ModelGraph) -> ModelGraph:
    """``graph`` with batch-norm folded into the convs, weights as parameters (source names)."""
    lifted: dict[str, np.ndarray] = {}
    with tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(folding_passes(graph, lifted), name="tvm_mpq.folded_graph")(graph.mod)
    return graph_with_lifted_weights(graph, mod, lifted, dict(graph.transforms))


def graph_with_lifted_weights(graph: ModelGraph, mod: tvm.IRModule, lifted: dict[str, np.ndarray],
                              transforms: dict) -> ModelGraph:
    """``graph`` with ``mod`` (its weights lifted back to parameters, ``lifted``: their arrays by
    name) and ``transforms``; the passes' ``mpq_*`` attributes dropped from ``main``."""
    main = mod["main"]
    for key in [k for k in main.attrs.keys() if k.startswith("mpq_")]:
        main = main.without_attr(key)
    mod["main"] = main
    arrays = {p.name: lifted[p.name] for p in main.params if p.name in lifted}
    return ModelGraph(graph.name, mod, graph.inputs, arrays, graph.layer_names, graph.source, transforms)


stage_c_graph = folded_graph  # the former names (api/for_rate.py)
stage_c_passes = folding_passes
