"""The frame of the benchmarks that compare two builds of each zoo config (``batch_norm_fold.py``,
``vector_rounding.py``, ``channel_padding.py``, ``channel_pad.py``, ``stride_as_channels.py``,
``pad_tile_pixels.py``, ``row_tile_threads.py``, ...; those that leave one pass out are
:func:`compare_with_pass_left_out` whole): their command line, each model's QuantuneV2
config per rate with the input the builds are timed on, the two builds (a pass left out, a
module constant set), their interleaved timing and the report."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator
from itertools import groupby
from dataclasses import dataclass
from pathlib import Path


def parse_args(doc: str, rates: str, out: str, models: str = "efficientnet-lite0,resnet18,mobilenetv2",
               ops: str | None = None) -> argparse.Namespace:
    """``--models --rates --threads --rounds --runs -o`` (``models``, ``rates``, ``out``: the
    benchmark's defaults; ``ops``: the help of an ``--ops`` switch, for benchmarks that also time
    single ops); sets ``TVM_NUM_THREADS`` (before TVM's thread pool starts)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    if ops is not None:
        parser.add_argument("--ops", action="store_true", help=ops)
    parser.add_argument("--models", default=models)
    parser.add_argument("--rates", default=rates)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("-o", "--out", type=Path, default=Path(out))
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    return args


@dataclass
class ZooPoint:
    """One model's config at one rate, and the input (host tensors) its builds run on."""

    model: str
    rate: float
    graph: object
    config: object
    inputs: list


def zoo_points(models: str, rates: str, **config_options) -> Iterator[ZooPoint]:
    """Each model's (comma-separated: zoo or corpus names) QuantuneV2 config at each rate
    (``config_for_rate`` with ``config_options``; layers without an integer kernel kept fp32),
    one analysis per model; where every rate is 0 (fp32 builds alone) InOrder's, which skips
    the sensitivity analysis (an fp32 config is the same whatever ranked the layers)."""
    import numpy as np

    from tvm_mpq.api import config_for_rate
    from tvm_mpq.calibration import CalibrationCache
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.runtime.executor import host_tensor

    rate_values = [float(r) for r in rates.split(",")]
    method = "quantunev2" if any(rate_values) else "inorder"  # (fp32 configs alone: no ranking to measure)
    for name in models.split(","):
        graph, feeds = _graph_and_feeds(name)
        table = build_layer_table(graph)
        inputs = [host_tensor(np.ascontiguousarray(feeds[0][s.name])) for s in graph.inputs]
        report = None
        for rate in rate_values:
            config, report = config_for_rate(graph, feeds, rate, method, cache=CalibrationCache(), report=report,
                                             **config_options)
            keep_unsupported_fp32(config, table)
            yield ZooPoint(name, rate, graph, config, inputs)


def _graph_and_feeds(name: str) -> tuple[object, list]:
    """A zoo model (16 calibration samples) or a corpus model (8, :mod:`tvm_mpq.corpus.inputs`)."""
    from tvm_mpq import zoo
    from tvm_mpq.corpus.catalog import CATALOG

    corpus = {m.name: m for m in CATALOG}
    if name in corpus:
        from tvm_mpq.corpus.fetch import fetch
        from tvm_mpq.corpus.inputs import feeds

        graph = zoo.load_model(str(fetch(corpus[name])), corpus[name].shapes)
        return graph, feeds(corpus[name], graph, 8)
    entry = zoo.get(name)
    return entry.build_graph(), entry.calibration(16)


def with_pass_left_out(module, name: str, without: str, target) -> Callable[["ZooPoint", str], object]:
    """``compile_point(point, how)`` for :func:`time_two_builds`: the point's config compiled for
    ``target`` by the pipeline, or, for ``how == without``, with the pass class ``name`` of
    ``module`` replaced by one that does nothing (the build reads the pass from its module at
    each compile)."""
    import tvm

    from tvm_mpq.compiler import compile_model

    rewrite = getattr(module, name)
    left_out = tvm.transform.module_pass(lambda mod, _ctx: mod, opt_level=0, name=name)

    def compile_point(point: ZooPoint, how: str):
        if how == without:
            setattr(module, name, lambda *_args, **_kwargs: left_out)
        try:
            return compile_model(point.graph, point.config, target)
        finally:
            setattr(module, name, rewrite)

    return compile_point


def compare_with_pass_left_out(doc: str, rates: str, out: str, models: str, pass_module: str, pass_name: str,
                               hows: tuple[str, str], title: str) -> list[dict]:
    """The whole of a benchmark that times each config built by the pipeline (``hows[0]``) and with
    the pass class ``pass_name`` of ``pass_module`` left out (``hows[1]``), for this host: its
    command line (:func:`parse_args` with the benchmark's defaults, first: it sets the thread
    count before TVM starts), :func:`with_pass_left_out` and :func:`compare_two_builds`."""
    import importlib

    args = parse_args(doc, rates, out, models)
    from benchkit.machine import machine_info
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    return compare_two_builds(args, machine_info(args.threads, target), hows,
                              with_pass_left_out(importlib.import_module(pass_module), pass_name, hows[1], target),
                              title)


@contextlib.contextmanager
def constants_set(module, **values) -> Iterator[None]:
    """Inside it, each ``module.<name>`` is ``values[name]`` (a build reads the module's constant
    at each compile); restored after."""
    kept = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in kept.items():
            setattr(module, name, value)


def with_constant(module, name: str, value, when: str, target) -> Callable[["ZooPoint", str], object]:
    """``compile_point(point, how)`` for :func:`time_two_builds`: the point's config compiled for
    ``target`` by the pipeline, with ``module.name`` set to ``value`` while ``how == when`` (the
    build reads the constant at each compile)."""
    from tvm_mpq.compiler import compile_model

    def compile_point(point: ZooPoint, how: str):
        with constants_set(module, **{name: value}) if how == when else contextlib.nullcontext():
            return compile_model(point.graph, point.config, target)

    return compile_point


def compare_two_builds(args: argparse.Namespace, info: dict, hows: tuple[str, str],
                       compile_point: Callable[["ZooPoint", str], object], title: str) -> list[dict]:
    """Every point of ``args.models`` / ``args.rates`` (the CLI's default quantizers) built both
    ``hows`` ways and timed (:func:`time_two_builds`); prints each, then writes and prints the
    report (``# title``, the machine, one row per model and rate: ``{how}_ms``, ``ratio`` first /
    second, ``max_rel_diff``). Returns the rows."""
    from benchkit.machine import flags_text

    first, second = hows
    rows = []
    points = zoo_points(args.models, args.rates, bias_correction=True, channel_act=True)
    for timed in time_two_builds(points, hows, compile_point, args.rounds, args.runs):
        rows.append({"model": timed["model"], "rate": timed["rate"], f"{first}_ms": timed["ms"][first],
                     f"{second}_ms": timed["ms"][second], "ratio": timed["ratio"], "max_rel_diff": timed["max_rel_diff"]})
        r = rows[-1]
        print(f"{r['model']} rate {r['rate']:g}: {first} {r[first + '_ms']:.3f} ms, {second} {r[second + '_ms']:.3f} ms, "
              f"ratio {r['ratio']:.3f}, max rel diff {r['max_rel_diff']:.1e}", flush=True)
    lines = [f"# {title}", "",
             f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved", "",
             f"| model | rate | {first} ms | {second} ms | ratio | max rel. output diff |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rate']:g} | {r[first + '_ms']:.3f} | {r[second + '_ms']:.3f} | {r['ratio']:.3f} | "
              f"{r['max_rel_diff']:.1e} |" for r in rows]
    write_report(args.out, info, rows, lines)
    return rows


def time_two_builds(points: Iterator[ZooPoint], hows: tuple[str, str], compile_point: Callable[[ZooPoint, str], object],
                    rounds: int, runs: int) -> Iterator[dict]:
    """For each model and rate: ``compile_point(point, how)`` (a compiled model) for both ``hows``,
    timed interleaved (each runner's minimum of ``runs`` runs per round, ``rounds`` rounds).
    Yields ``{"model", "rate", "ms": {how: median}, "ratio": median of first / second within
    rounds, "max_rel_diff": largest output difference relative to the second's largest value,
    "compiled": {how: compiled model}, "inputs": the point's input tensors}``."""
    import statistics

    import numpy as np
    import tvm
    from tvm import relax

    from benchkit.timing import interleaved_min
    from tvm_mpq.runtime.executor import flatten_outputs

    for name, model_points in groupby(points, key=lambda p: p.model):
        runners, outputs, compiled, inputs = {}, {}, {}, {}
        for point in model_points:
            inputs[point.rate] = point.inputs
            for how in hows:
                compiled[(point.rate, how)] = built = compile_point(point, how)
                vm = relax.VirtualMachine(built.executable, tvm.cpu())
                runners[(point.rate, how)] = (lambda vm=vm, inputs=point.inputs: vm["main"](*inputs))
                outputs[(point.rate, how)] = flatten_outputs(vm["main"](*point.inputs))
            print(f"{name} rate {point.rate:g}: both builds compiled", flush=True)
        times = interleaved_min({f"{r:g} {h}": run for (r, h), run in runners.items()}, rounds, runs)
        for rate in sorted({r for r, _ in runners}):
            first, second = (times[f"{rate:g} {how}"] for how in hows)
            diff = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
                       for a, b in zip(outputs[(rate, hows[0])], outputs[(rate, hows[1])]))
            yield {"model": name, "rate": rate, "ms": {how: round(statistics.median(times[f"{rate:g} {how}"]), 3)
                                                       for how in hows},
                   "ratio": round(statistics.median(a / b for a, b in zip(first, second)), 3), "max_rel_diff": diff,
                   "compiled": {how: compiled[(rate, how)] for how in hows}, "inputs": inputs[rate]}


def time_op_builds(hows: tuple[str, ...], build_as: Callable[[str], object], build: Callable[[], object],
                   data: "np.ndarray", run_ort: Callable[["np.ndarray"], "np.ndarray"], rounds: int, runs: int) -> dict:
    """One op built each of ``hows`` ways (``build()``, an executable, inside the context
    ``build_as(how)``), each build's output checked against onnxruntime's (``run_ort(data)``),
    then every build and onnxruntime timed interleaved. Returns ``{"{how}_us": median, "ort_us":
    median, "{how}_over_ort": median ratio within rounds}`` (microseconds)."""
    import statistics

    import numpy as np
    import tvm
    from tvm import relax

    from benchkit.timing import interleaved_min

    tensor = tvm.runtime.tensor(data)
    want = run_ort(data)
    runners = {"ort": lambda: run_ort(data)}
    for how in hows:
        with build_as(how):
            executable = build()
        run = relax.VirtualMachine(executable, tvm.cpu())["main"]
        np.testing.assert_allclose(run(tensor).numpy(), want, rtol=1e-4, atol=1e-4)
        runners[how] = (lambda run=run: run(tensor))
    times = interleaved_min(runners, rounds, runs)
    row = {f"{name}_us": round(statistics.median(t) * 1e3, 1) for name, t in times.items()}
    for how in hows:
        row[f"{how}_over_ort"] = round(statistics.median([a / b for a, b in zip(times[how], times["ort"])]), 2)
    return row


def write_report(out: Path, info: dict, rows: list[dict], lines: list[str]) -> None:
    """``report.json`` (machine and rows) and ``report.md`` (``lines``) under ``out``; prints the table."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
