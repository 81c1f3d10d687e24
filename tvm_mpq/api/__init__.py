"""The public entry point: a model and a BOPs reduction rate in, a precision config and a
compiled mixed-precision executable out.

:func:`quantize` is the whole flow in one call; :func:`config_for_rate` is its first half
(analysis + allocation), for callers that compile or export the config themselves or allocate
several rates from one analysis (the sweep). Both are reachable as ``tvm_mpq.quantize`` /
``tvm_mpq.config_for_rate``. This package sits above the analysis and the compiler in the import
graph (docs/design.md, "Floors"): it may import sensitivity, compiler and targets; nothing below
imports it.
"""

from tvm_mpq.api.for_rate import analysis_graph, config_for_rate
from tvm_mpq.api.end_to_end import Quantized, quantize

__all__ = ["Quantized", "analysis_graph", "config_for_rate", "quantize"]
