"""Compile a Relax module for the local CPU and run it (used by calibration and analysis)."""

from tvm_mpq.runtime.executor import CompiledGraph, compile_graph, host_target

__all__ = ["CompiledGraph", "compile_graph", "host_target"]
