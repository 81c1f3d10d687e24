"""The benchmarking harness behind ``tvm-mpq sweep``: rates x methods -> built, run, scored points.

Data flow, one module each:

* :mod:`~tvm_mpq.sweep.plan` — options (:class:`SweepOptions`), rates / methods, timing defaults;
* :mod:`~tvm_mpq.sweep.data` — the evaluation samples (held out from calibration; labels if any);
* :mod:`~tvm_mpq.sweep.configs` — one analysis per method, a precision config per point;
* :mod:`~tvm_mpq.sweep.remote` — the RPC path (local server / ``--rpc`` / ``--tracker`` pool);
* :mod:`~tvm_mpq.sweep.runner` — :func:`run_sweep`: build, export, upload, run, time, score;
* :mod:`~tvm_mpq.sweep.report` / :mod:`~tvm_mpq.sweep.plot` — JSON, Markdown, PNG.
"""

from tvm_mpq.sweep.plan import (DEFAULT_RATES, PointSpec, SweepOptions, TimingOptions, parse_methods,
                                parse_rates)
from tvm_mpq.sweep.report import CONTRACT_KEYS, POINT_KEYS, markdown, write_outputs
from tvm_mpq.sweep.runner import measure_point, run_sweep

__all__ = ["CONTRACT_KEYS", "DEFAULT_RATES", "POINT_KEYS", "PointSpec", "SweepOptions", "TimingOptions",
           "markdown", "measure_point", "parse_methods", "parse_rates", "run_sweep", "write_outputs"]
