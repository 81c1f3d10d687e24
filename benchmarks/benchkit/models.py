"""Zoo models for benchmarks: the stage-A graph and the fp32 ONNX model, loaded once."""

from __future__ import annotations

LOADED: dict = {}


def load_model(name: str):
    """(stage-A graph, fp32 ONNX) of a model spec, loaded once."""
    from tvm_mpq.export.fp32_onnx import load_with_source

    if name not in LOADED:
        LOADED[name] = load_with_source(name)
    return LOADED[name]
