"""Build a sweep's points: compile each config for the target and export its library.

Every point is built before any is timed (:mod:`~tvm_mpq.sweep.interleave` then times them
together). A point's report row (``points[i]`` of the contract) is filled here with everything
but what the device measures (``latency_ms``, ``fidelity``, ``accuracy``, ``server``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvm_mpq.errors import MpqError, last_line
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.sweep.plan import PointSpec, SweepOptions

Log = Callable[[str], None]


@dataclass(frozen=True)
class BuiltPoint:
    """A point's exported library; ``row``: its index in ``report["points"]``; ``all_fp32``:
    every layer is fp32 (the rate-0 point: it serves as the fp32 baseline of the timing)."""

    row: int
    label: str
    library: Path
    all_fp32: bool


def build_point(graph: ModelGraph, spec: PointSpec, config: Any, options: SweepOptions, target: Any,
                libs: Path, log: Log, prefix: str = "") -> tuple[dict, Path]:
    """Compile and export one point; its report row (without the device's measurements) and library."""
    prov = config.provenance
    fp32 = config.fp32_layers()
    rate = prov["bops_reduction_rate"]
    log(f"{prefix} {spec.label}: achieved BOPs reduction {rate:.1f}% (bops_ratio {prov['bops_ratio']:.4f}), "
        f"{len(fp32)} fp32 layer(s); compiling for {options.target} ...")
    stem = f"{graph.name}-{options.target}-{spec.method}-" + (spec.allocation or f"rate{spec.requested_rate:g}")
    compiled, library, compile_s, export_s = _compile_and_export(graph, config, options, target,
                                                                 libs / (_safe(stem) + ".so"), spec.label)
    size_mb = library.stat().st_size / 1e6
    row: dict[str, Any] = {
        "method": spec.method,
        "requested_rate": float(spec.requested_rate if spec.requested_rate is not None else rate),
        "bops_reduction_rate": float(rate), "bops_ratio": float(prov["bops_ratio"]),
        "raw_reduction_rate": float(prov.get("raw_reduction_rate", float("nan"))),
        "fp32_layers": fp32, "n_fp32_layers": len(fp32), "n_layers": len(config.layers),
        "n_qdq": int(compiled.n_qdq), "n_qdq_naive": int(compiled.n_qdq_naive),
        "model_size_mb": size_mb, "library": str(library) if options.keep_libs else None,
        "compile_seconds": compile_s, "export_seconds": export_s,
        "build": compiled.stats.get("build", {}),
        "latency_ms": None, "ratio_to_fp32": None, "fidelity": None, "accuracy": None, "server": None,
    }
    if spec.allocation:
        row["allocation"] = spec.allocation
    tuning = row["build"].get("tuning")
    if tuning:
        log(f"{prefix} {spec.label}: tuning database: {tuning['reused']} of {tuning['tasks']} kernel(s) reused, "
            f"{tuning['tuned']} tuned in {tuning['seconds']:.0f} s")
    log(f"{prefix} {spec.label}: compiled {compile_s:.1f} s + export {export_s:.1f} s, {size_mb:.2f} MB, "
        f"n_qdq {compiled.n_qdq}")
    return row, library


def build_fp32_baseline(graph: ModelGraph, options: SweepOptions, target: Any, libs: Path,
                        log: Log) -> tuple[Path, dict | None]:
    """The fp32 model (no precision config) for the target: the timing baseline of a sweep
    without a rate-0 point; its library and its build's tuning counts (None without tuning)."""
    log(f"fp32 baseline (no rate-0 point among the points): compiling for {options.target} ...")
    stem = _safe(f"{graph.name}-{options.target}-fp32-baseline")
    compiled, library, _, _ = _compile_and_export(graph, None, options, target, libs / (stem + ".so"), "fp32 baseline")
    tuning = compiled.stats.get("build", {}).get("tuning")
    if tuning:
        log(f"fp32 baseline: tuning database: {tuning['reused']} of {tuning['tasks']} kernel(s) reused, "
            f"{tuning['tuned']} tuned in {tuning['seconds']:.0f} s")
    return library, tuning


def _compile_and_export(graph: ModelGraph, config: Any, options: SweepOptions, target: Any, path: Path,
                        label: str) -> tuple[Any, Path, float, float]:
    start = time.perf_counter()
    try:
        compiled = target.compile(graph, config, stage=options.stage, tuning=options.tuning)
    except MpqError:
        raise
    except Exception as err:  # a TVM failure: one line naming the point, not a traceback
        raise MpqError(f"{label}: compiling for {options.target} failed: {last_line(err)}") from None
    compile_s = time.perf_counter() - start
    try:
        library = target.export(compiled, path)
    except MpqError:
        raise
    except Exception as err:  # the (cross) compiler failed
        raise MpqError(f"{label}: exporting the {options.target} library failed: {last_line(err)}") from None
    return compiled, library, compile_s, time.perf_counter() - start - compile_s


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
