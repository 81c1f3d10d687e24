"""Timing TVM executables and onnxruntime sessions the same way, and interleaved rounds.

Both runtimes get a warm-up, then ``repeat`` measurements of ``number`` runs (``number`` chosen
so one measurement lasts ``min_repeat_ms``). On a shared machine whose speed drifts, compare
builds with :func:`interleaved_min`: every runner once per round, the minimum over rounds."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Timing:
    """``repeat`` measurements of ``number`` runs each, ``number`` chosen so that one lasts at
    least ``min_repeat_ms``; ``repeat`` shrinks (to no fewer than 2) when the measurements of a
    slow (untuned) build would take more than ``max_seconds``."""

    repeat: int
    min_repeat_ms: float
    max_seconds: float = 30.0

    def plan(self, one_s: float) -> tuple[int, int]:
        """(number, repeat) for a run that takes ``one_s`` seconds."""
        one_s = max(one_s, 1e-7)
        number = max(1, int(np.ceil(self.min_repeat_ms / 1e3 / one_s)))
        repeat = max(min(2, self.repeat), min(self.repeat, int(self.max_seconds / (number * one_s))))
        return number, repeat


def summarize(per_run_s: list[float], number: int) -> dict:
    ms = sorted(t * 1e3 for t in per_run_s)
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "max_ms": ms[-1], "repeats": len(ms), "number": number}


def time_tvm(executable, inputs: list[np.ndarray], timing: Timing) -> dict:
    import tvm
    from tvm import relax

    dev = tvm.cpu()
    vm = relax.VirtualMachine(executable, dev)
    args = [tvm.runtime.tensor(np.ascontiguousarray(x), dev) for x in inputs]
    start = time.perf_counter()
    vm["main"](*args)  # warm-up + estimate
    one = time.perf_counter() - start
    number, repeat = timing.plan(one)
    res = vm.time_evaluator("main", dev, number=number, repeat=repeat)(*args)
    return summarize(list(res.results), number)


def ort_session(model, threads: int, optimized_path: Path | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def time_ort(sess, feed: dict[str, np.ndarray], timing: Timing) -> dict:
    sess.run(None, feed)
    start = time.perf_counter()
    sess.run(None, feed)
    number, repeat = timing.plan(time.perf_counter() - start)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            sess.run(None, feed)
        runs.append((time.perf_counter() - start) / number)
    return summarize(runs, number)


def ort_fused_ops(model, threads: int) -> list[str]:
    """The op types onnxruntime runs after its graph optimizations (e.g. QLinearConv)."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "opt.onnx"
        ort_session(model, threads, path)
        return [n.op_type for n in onnx.load(str(path)).graph.node]




def interleaved_min(runners: dict[str, Callable[[], object]], rounds: int, runs_per_round: int = 10) -> dict[str, list[float]]:
    """Per runner, the minimum time (ms) of ``runs_per_round`` runs in each of ``rounds`` rounds,
    the runners taking turns within every round (each warmed up first)."""
    for run in runners.values():
        run()
    out: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            best = float("inf")
            for _ in range(runs_per_round):
                start = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - start)
            out[name].append(best * 1e3)
    return out
