"""The benchmarking harness behind ``tvm-mpq sweep``: rates x methods -> built, run, timed, scored points.

Data flow, one module each:

* :mod:`~tvm_mpq.sweep.plan` — options (:class:`SweepOptions`), rates / methods, timing defaults;
* :mod:`~tvm_mpq.sweep.configs` — one analysis per method, a precision config per point;
* :mod:`~tvm_mpq.sweep.builds` — every point compiled and exported before any is timed;
* :mod:`~tvm_mpq.sweep.remote` — the RPC path (local server / ``--rpc`` / ``--tracker`` pool);
* :mod:`~tvm_mpq.sweep.measure` — points dealt out over the devices, run and timed there;
* :mod:`~tvm_mpq.sweep.interleave` — one device: samples run once, then round-robin timing rounds;
* :mod:`~tvm_mpq.sweep.rounds` — latency over rounds, ratios to fp32 within rounds, stability,
  monotonicity;
* :mod:`~tvm_mpq.sweep.runner` — :func:`run_sweep`: the steps above in order;
* :mod:`~tvm_mpq.sweep.report` / :mod:`~tvm_mpq.sweep.plot` — JSON, Markdown, PNG (both read
  points through :mod:`~tvm_mpq.sweep.fields`).

The evaluation samples and the fidelity figures are those of ``tvm-mpq eval`` and the
benchmarks: :mod:`tvm_mpq.evaluation.sample_set`, :mod:`tvm_mpq.evaluation.fidelity`.
"""

from tvm_mpq.sweep.plan import (DEFAULT_RATES, PointSpec, SweepOptions, TimingOptions, parse_methods,
                                parse_rates)
from tvm_mpq.sweep.report import CONTRACT_KEYS, POINT_KEYS, markdown, write_outputs
from tvm_mpq.sweep.runner import run_sweep

__all__ = ["CONTRACT_KEYS", "DEFAULT_RATES", "POINT_KEYS", "PointSpec", "SweepOptions", "TimingOptions",
           "markdown", "parse_methods", "parse_rates", "run_sweep", "write_outputs"]
