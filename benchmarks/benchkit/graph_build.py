"""A Relax module built for a target by the build's own passes, with or without one of its graph
passes (the A/B of a pass's benchmark)."""

from __future__ import annotations


def build_without(mod, target, left_out: str | None = None):
    """``mod`` built for ``target`` by ``tvm_mpq.compiler.build.build_module``, with the graph
    pass named ``left_out`` (``tvm_mpq.target_build.passes.graph_passes``, which the build reads
    from that module) removed: ``(executable, {kernel: what scheduled it})``. ValueError if the
    target's graph passes have no pass of that name."""
    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.target_build import passes as target_passes

    graph_passes = target_passes.graph_passes
    if left_out is not None:
        if left_out not in [p.info.name for p in graph_passes(target)]:
            raise ValueError(f"no graph pass named {left_out!r} for {target}")
        target_passes.graph_passes = lambda t: [p for p in graph_passes(t) if p.info.name != left_out]
    try:
        executable, info = build_module(mod, target)
    finally:
        target_passes.graph_passes = graph_passes
    return executable, info["kernels"]
