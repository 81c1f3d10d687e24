"""Zoo models for benchmarks: the stage-A graph and the fp32 ONNX model, loaded once; their
builds per BOPs reduction rate beside onnxruntime's peer models."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

LOADED: dict = {}


def load_model(name: str):
    """(stage-A graph, fp32 ONNX) of a model spec, loaded once."""
    from tvm_mpq.export.fp32_onnx import load_with_source

    if name not in LOADED:
        LOADED[name] = load_with_source(name)
    return LOADED[name]


def corpus_or_zoo(name: str, count: int) -> tuple:
    """``(graph, samples)`` of a corpus model (:mod:`tvm_mpq.corpus`, fetched once) or else a zoo
    model: its first ``count`` input samples (the corpus's generated inputs, the zoo's bundled
    calibration set)."""
    from tvm_mpq import zoo
    from tvm_mpq.corpus.catalog import CATALOG, by_name
    from tvm_mpq.corpus.fetch import fetch
    from tvm_mpq.corpus.inputs import feeds
    from tvm_mpq.zoo import load_model as load_graph

    if name in {m.name for m in CATALOG}:
        model = by_name(name)
        graph = load_graph(str(fetch(model)), model.shapes)
        return graph, feeds(model, graph, count)
    return load_graph(name), zoo.get(name).calibration(count)


@dataclass
class RateBuild:
    """One BOPs reduction rate of a zoo model: its config, the tvm-mpq build, the number of int8
    layers and onnxruntime's peer, the ``export-onnx`` QDQ model (None where no layer is int8)."""

    rate: float
    config: object
    compiled: object
    int8_layers: int
    qdq: object | None


def rate_builds(name: str, rates: list[float], method: str, calib_size: int, target):
    """A zoo model's input as each runtime takes it, and its :class:`RateBuild` per rate.

    Returns ``(graph, fp32_model, inputs, ort_feed, builds)``: ``inputs``, the first calibration
    sample's arrays in the graph's input order (tvm-mpq); ``ort_feed``, the same arrays by the
    ONNX model's input names; ``builds``, an iterator over the rates: the ``method`` config at
    that rate (``calib_size`` samples, one analysis, layers without an integer kernel kept fp32)
    compiled for ``target``."""
    from tvm_mpq import zoo
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.calibration import CalibrationCache
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.export import build_qdq_onnx
    from tvm_mpq.export.fp32_onnx import input_feed_names
    from tvm_mpq.graph import build_layer_table

    graph, fp32_model = load_model(name)
    feeds = zoo.get(name).calibration(calib_size)
    inputs = [feeds[0][s.name] for s in graph.inputs]
    ort_feed = {n: feeds[0][s.name] for n, s in zip(input_feed_names(fp32_model), graph.inputs)}

    def builds() -> Iterator[RateBuild]:
        table = build_layer_table(graph)
        cache, report = CalibrationCache(), None
        for rate in rates:
            config, report = config_for_rate(graph, feeds, rate, method, cache=cache, report=report)
            keep_unsupported_fp32(config, table)
            int8_layers = len(table) - len(config.fp32_layers())
            yield RateBuild(rate, config, compile_model(graph, config, target), int8_layers,
                            build_qdq_onnx(graph, config, fp32_model).model if int8_layers else None)

    return graph, fp32_model, inputs, ort_feed, builds()
