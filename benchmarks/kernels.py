"""Kernel benchmark on the local x86 CPU: TVM fp32 vs int8 (untuned / kernel rules / tuned) vs onnxruntime.

Two parts, both on this machine's CPU with the same thread count for TVM and onnxruntime
(``--threads``, default all cores: ``TVM_NUM_THREADS`` and ORT ``intra_op_num_threads``):

1. **Op level.** The distinct conv2d / depthwise conv2d / dense shapes of the models' layer
   tables (default: per model and category -- conv kxk, pointwise 1x1, depthwise, dense -- the
   ``--shapes`` shapes with the most MACs in the model; ``--all-shapes``: every distinct shape).
   Each shape is timed

   * fp32 on TVM: ``conv2d + bias + relu`` / ``matmul + bias``;
   * int8 on TVM as the product lowers it (``relay_passes.quantized_arith.IntegerArith``, the
     precision pass's arithmetic): uint8 x int8 -> int32 (zero-point padding, bias folded into
     the accumulator), requantize epilogue ``* s -> relu -> quantize -> uint8`` (dense: the
     classifier's dequantized fp32 logits);

   each built (a) untuned (``TuningOptions(kernels=False)``: TVM's default loops), (b) with our
   kernel rules (the default build, :mod:`tvm_mpq.kernels.cpu_mac`), (c) with ``--tune-trials N > 0``
   MetaSchedule-tuned without our rules (``kernels=False, trials=N``: our rules vs MetaSchedule);
   and on onnxruntime: fp32 ``Conv+Relu`` / ``Gemm``, and the QDQ int8 version (uint8 input ->
   ``DequantizeLinear`` -> op with per-channel int8 ``DequantizeLinear`` weights and int32 bias ->
   ``Relu -> QuantizeLinear`` -> uint8), which onnxruntime fuses into ``QLinearConv`` / ``QGemm``
   (the fused op types are recorded). Input zero point 0 (post-ReLU activations), 128 for a
   3-channel image input.

2. **Whole model** (``--models``, default resnet18 and efficientnet-lite0): the precision config
   for each BOPs reduction rate (``--rates``, default 0,25,50,75,100: fp32 ... fully int8;
   ``config_for_rate`` with the QuantuneV2 sensitivity on ``--calib-size`` samples, as
   ``tvm-mpq compile --rate`` makes it), compiled (stage A->C) untuned and with the kernel rules
   (and, with ``--tune-trials N``, rules + MetaSchedule for the kernels no rule covers, which is
   ``tvm-mpq compile --tune-trials N``), next to onnxruntime on the model's fp32 ONNX (rate 0) and
   on the exported QDQ ONNX of the same config (:mod:`tvm_mpq.export`). Whether latency falls
   monotonically with the rate is checked per build.

Timing: TVM with the VM's ``time_evaluator``, onnxruntime with the same loop in Python
(``perf_counter``): after a warm-up, ``number`` runs per repeat (each repeat at least
``--min-repeat-ms``), ``--repeat`` repeats per op / ``--model-repeat`` per model (fewer, >= 2,
when a slow untuned build would exceed ``--max-seconds`` per measurement); the median of the
per-repeat means is reported. Untuned and rule builds use an empty tuning database, so no
MetaSchedule record leaks into them; tuned builds use the persistent per-target database
(``--tuning-root``, default the product's ``~/.cache/tvm-mpq/tuning``), so a rerun reuses records.
A build or export that fails is recorded (``error``; ``err`` in the tables) and the run goes on.

Durations measured on the 2-core development machine (AMD EPYC znver3, under load):

    python benchmarks/kernels.py                 # defaults: ~12-15 min (op level 7 of 45 shapes
                                                 # ~1 min; per model ~1.5 min analysis + ~45 s per rate)
    python benchmarks/kernels.py --models mtcnn-rnet --shapes 2 --repeat 2   # smoke test, ~2 min
    python benchmarks/kernels.py --all-shapes --repeat 10 --model-repeat 5   # all 45 shapes: ~25-30 min
    python benchmarks/kernels.py --tune-trials 64  # + MetaSchedule: 2 tasks per op shape + the model
                                                 # kernels no rule covers; each task took 4-5 min on the
                                                 # loaded 2-core machine even at 2 trials (builder and
                                                 # runner start-up): ~1 h+ for the default shapes, many
                                                 # hours with --all-shapes; the persistent database
                                                 # makes reruns cheap

Writes ``out/bench/kernels/report.json`` (all numbers + machine info), ``report.md`` (the tables)
and ``latency_vs_rate.png`` (whole-model latency vs achieved BOPs reduction rate per model and build).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchkit.machine import machine_info
from benchkit.models import load_model
from benchkit.progress import T0 as START
from benchkit.progress import log
from benchkit.ops import OpSpec, distinct_specs, make_case, model_op_specs, ort_models, tvm_fp32_module, tvm_int8_module
from benchkit.timing import Timing, ort_fused_ops, ort_session, time_ort, time_tvm

# ---------------------------------------------------------------------------------- op shapes
# ---------------------------------------------------------------------------------- builds
@dataclass
class Build:
    name: str
    options: object  # TuningOptions


def builds(tune_trials: int, tuning_root: Path, empty_root: Path, op_level: bool) -> list[Build]:
    from tvm_mpq.compiler.build import TuningOptions

    out = [Build("untuned", TuningOptions(trials=0, root=empty_root, kernels=False, verbose=False)),
           Build("rules", TuningOptions(trials=0, root=empty_root, kernels=True, verbose=False))]
    if tune_trials > 0:
        if op_level:  # MetaSchedule alone against our rules
            out.append(Build("tuned", TuningOptions(trials=tune_trials, root=tuning_root, kernels=False, verbose=True)))
        else:  # the product's --tune-trials: rules, MetaSchedule for the rest
            out.append(Build("rules+tuned", TuningOptions(trials=tune_trials, root=tuning_root, kernels=True,
                                                          verbose=True)))
    return out


def rules_fired(mod, target) -> list[str]:
    """Which kernel rule schedules each MAC PrimFunc of ``mod`` (None: TVM's default)."""
    import tvm

    from tvm_mpq.compiler.build import MAC_TASK_MARKERS, fuse
    from tvm_mpq.kernels import rule_for

    with target, tvm.transform.PassContext(opt_level=3):
        fused = fuse(mod, target)
    return sorted(str(rule_for(f, target)) for gv, f in fused.functions_items()
                  if isinstance(f, tvm.tirx.PrimFunc) and any(m in gv.name_hint for m in MAC_TASK_MARKERS))


# ---------------------------------------------------------------------------------- part 1
def bench_ops(specs: list[OpSpec], target, args, build_list: list[Build]) -> list[dict]:
    from tvm_mpq.compiler.build import build_module

    timing = Timing(args.repeat, args.min_repeat_ms, args.max_seconds)
    rows = []
    for i, spec in enumerate(specs):
        case = make_case(spec, seed=i)
        row = {"label": spec.label, "category": spec.category, "kind": spec.kind, "data_shape": spec.data_shape,
               "weight_shape": spec.weight_shape, "strides": spec.strides, "padding": spec.padding,
               "groups": spec.groups, "macs": spec.macs, "models": spec.models, "layers": spec.layers[:4],
               "count": spec.count, "tvm": {}, "ort": {}, "rules_fired": {}}
        log(f"op {i + 1}/{len(specs)}: {spec.label} ({spec.macs / 1e6:.1f} MMACs; {', '.join(spec.models)} x{spec.count})")
        for prec, mod, x in (("fp32", tvm_fp32_module(case), case.x_f32), ("int8", tvm_int8_module(case), case.x_u8)):
            row["rules_fired"][prec] = rules_fired(mod, target)
            for b in build_list:
                start = time.perf_counter()
                try:
                    exe, info = build_module(mod, target, b.options)
                    build_s = time.perf_counter() - start
                    t = time_tvm(exe, [x], timing)
                except Exception as err:  # keep going: one failing build should not lose the run
                    log(f"  tvm {prec} {b.name}: FAILED {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                    row["tvm"][f"{prec}/{b.name}"] = {"error": str(err).splitlines()[0][:300]}
                    continue
                t.update(build_seconds=round(build_s, 1), scheduled_by=info.get("scheduled_by"))
                row["tvm"][f"{prec}/{b.name}"] = t
                log(f"  tvm {prec:4s} {b.name:8s} {t['median_ms']:9.3f} ms  (build {build_s:.1f} s)")
        fp32_onnx, qdq_onnx = ort_models(case)
        for prec, model, x in (("fp32", fp32_onnx, case.x_f32), ("int8", qdq_onnx, case.x_u8)):
            try:
                sess = ort_session(model, args.threads)
                t = time_ort(sess, {"x": x}, timing)
                t["ops"] = ort_fused_ops(model, args.threads)
            except Exception as err:
                log(f"  ort {prec}: FAILED {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                row["ort"][prec] = {"error": str(err).splitlines()[0][:300]}
                continue
            row["ort"][prec] = t
            log(f"  ort {prec:4s}          {t['median_ms']:9.3f} ms  ({'+'.join(t['ops'])})")
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------- part 2
def bench_models(models: list[str], rates: list[float], target, args, build_list: list[Build]) -> list[dict]:
    from tvm_mpq import zoo
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.calibration import CalibrationCache
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.export import build_qdq_onnx
    from tvm_mpq.export.fp32_onnx import input_feed_names
    from tvm_mpq.graph import build_layer_table

    timing = Timing(args.model_repeat, args.min_repeat_ms, args.max_seconds)
    results = []
    for name in models:
        graph, fp32_model = load_model(name)
        table = build_layer_table(graph)
        feeds = zoo.get(name).calibration(args.calib_size) if name in zoo.names() else None
        if feeds is None:
            raise SystemExit(f"{name}: whole-model part needs a zoo model (calibration data)")
        feed = feeds[0]
        inputs = [feed[s.name] for s in graph.inputs]
        log(f"{name}: {len(table)} MAC layers; analysis ({args.method}) on {len(feeds)} samples")
        cache, report = CalibrationCache(), None
        result = {"model": name, "points": [], "method": args.method, "calib_size": len(feeds)}
        onnx_names = input_feed_names(fp32_model)
        ort_feed = {n: feed[s.name] for n, s in zip(onnx_names, graph.inputs)}
        for rate in rates:
            start = time.perf_counter()
            config, report = config_for_rate(graph, feeds, rate, args.method, cache=cache, report=report)
            keep_unsupported_fp32(config, table)
            achieved = float(config.provenance["bops_reduction_rate"])
            point = {"requested_rate": rate, "bops_reduction_rate": round(achieved, 2),
                     "bops_ratio": round(float(config.provenance["bops_ratio"]), 4),
                     "fp32_layers": len(config.fp32_layers()), "int8_layers": len(table) - len(config.fp32_layers()),
                     "tvm": {}, "ort": {}}
            log(f"{name} rate {rate:g}: achieved {achieved:.1f}%, {point['int8_layers']} int8 / "
                f"{point['fp32_layers']} fp32 layers (config {time.perf_counter() - start:.1f} s)")
            for b in build_list:
                start = time.perf_counter()
                try:
                    cm = compile_model(graph, config, target, tuning=b.options)
                    build_s = time.perf_counter() - start
                    t = time_tvm(cm.executable, inputs, timing)
                except Exception as err:
                    log(f"  tvm {b.name}: FAILED {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                    point["tvm"][b.name] = {"error": str(err).splitlines()[0][:300]}
                    continue
                t.update(build_seconds=round(build_s, 1), n_qdq=cm.n_qdq, scheduled_by=cm.stats["build"].get("scheduled_by"))
                if "tuning" in cm.stats["build"]:
                    t["tuning"] = cm.stats["build"]["tuning"]
                point["tvm"][b.name] = t
                log(f"  tvm {b.name:11s} {t['median_ms']:9.2f} ms  (build {build_s:.1f} s, {t['scheduled_by']})")
            try:
                if point["int8_layers"] == 0:
                    ort_model, kind = fp32_model, "fp32 onnx"
                else:
                    export = build_qdq_onnx(graph, config, fp32_model)
                    ort_model, kind = export.model, "qdq onnx"
                    if args.save_onnx:
                        export.save(args.out / "onnx" / f"{name}_rate{rate:g}.onnx")
                sess = ort_session(ort_model, args.threads)
                t = time_ort(sess, ort_feed, timing)
                t["model"] = kind
                point["ort"] = t
                log(f"  ort ({kind})  {t['median_ms']:9.2f} ms")
            except Exception as err:
                log(f"  ort: FAILED {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                point["ort"] = {"error": str(err).splitlines()[0][:300]}
            result["points"].append(point)
        result["monotonic"] = monotonic(result["points"], [b.name for b in build_list] + ["ort"], args.tolerance)
        for build, m in result["monotonic"].items():
            log(f"{name} {build}: latency {monotonic_text(m)}")
        results.append(result)
    return results


def _latency(point: dict, build: str) -> float | None:
    t = point["ort"] if build == "ort" else point["tvm"].get(build, {})
    return t.get("median_ms")


def monotonic(points: list[dict], build_names: list[str], tolerance_pct: float = 5.0) -> dict:
    """Per build: does latency fall as the achieved rate rises? Points with the same achieved
    rate (the same config: requested rates that allocate alike) are one point, their best time.
    ``violations``: every rise; ``monotonic_within_tolerance``: no rise above ``tolerance_pct``."""
    out = {}
    for build in build_names:
        best: dict[float, float] = {}
        for p in points:
            t = _latency(p, build)
            if t is not None:
                r = round(p["bops_reduction_rate"], 1)
                best[r] = min(t, best.get(r, t))
        series = sorted(best.items())
        rises = [(r0, t0, r1, t1) for (r0, t0), (r1, t1) in zip(series, series[1:]) if t1 > t0]
        out[build] = {"monotonic": not rises and len(series) > 1,
                      "monotonic_within_tolerance": len(series) > 1
                      and all(100 * (t1 / t0 - 1) <= tolerance_pct for _, t0, _, t1 in rises),
                      "tolerance_pct": tolerance_pct, "distinct_rates": len(series),
                      "violations": [f"{r0:g}% {t0:.2f} ms -> {r1:g}% {t1:.2f} ms (+{100 * (t1 / t0 - 1):.1f}%)"
                                     for r0, t0, r1, t1 in rises]}
    return out


def monotonic_text(m: dict) -> str:
    if m["distinct_rates"] < 2:
        return "fewer than two distinct achieved rates: nothing to check"
    if m["monotonic"]:
        return f"falls monotonically with the rate ({m['distinct_rates']} distinct achieved rates)"
    verdict = (f"falls monotonically within the {m['tolerance_pct']:g}% noise tolerance"
               if m["monotonic_within_tolerance"] else "does NOT fall monotonically with the rate")
    return f"{verdict}: " + "; ".join(m["violations"])


# ---------------------------------------------------------------------------------- report
def _ms(t: dict | None) -> str:
    if not t or "median_ms" not in t:
        return "err" if t else "-"
    v = t["median_ms"]
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or "median_ms" not in a or "median_ms" not in b:
        return "-"
    return f"{a['median_ms'] / b['median_ms']:.2f}"


def ops_markdown(rows: list[dict], build_names: list[str]) -> list[str]:
    """One row per op shape: ms per build and runtime, then fp32/int8 and TVM/ORT ratios
    (for the rules build, and the tuned build where there is one)."""
    compared = [b for b in ("rules", "tuned") if b in build_names]
    head = ["op", "MMACs"]
    for prec in ("fp32", "int8"):
        head += [f"TVM {prec} {b}" for b in build_names] + [f"ORT {prec}"]
    for b in compared:
        head += [f"fp32/int8 TVM {b}"]
    head += ["fp32/int8 ORT"]
    for b in compared:
        head += [f"TVM {b}/ORT fp32", f"TVM {b}/ORT int8"]
    head += ["rule fp32 / int8", "ORT int8 kernels"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        tvm, ort = r["tvm"], r["ort"]
        cells = [r["label"], f"{r['macs'] / 1e6:.1f}"]
        for prec in ("fp32", "int8"):
            cells += [_ms(tvm.get(f"{prec}/{b}")) for b in build_names] + [_ms(ort.get(prec))]
        cells += [_ratio(tvm.get(f"fp32/{b}"), tvm.get(f"int8/{b}")) for b in compared]
        cells += [_ratio(ort.get("fp32"), ort.get("int8"))]
        for b in compared:
            cells += [_ratio(tvm.get(f"fp32/{b}"), ort.get("fp32")), _ratio(tvm.get(f"int8/{b}"), ort.get("int8"))]
        rules = [",".join(sorted(set(r["rules_fired"].get(p, [])))) or "-" for p in ("fp32", "int8")]
        cells += [" / ".join(rules), "+".join(ort.get("int8", {}).get("ops", [])) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def models_markdown(results: list[dict], build_names: list[str]) -> list[str]:
    lines = []
    for res in results:
        head = ["rate req.", "achieved", "int8 / fp32 layers"] + [f"TVM {b} ms" for b in build_names] + \
               ["ORT ms", "ORT model", "TVM rules / ORT"]
        lines += [f"### {res['model']} ({res['method']} sensitivity, {res['calib_size']} calibration samples)", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for p in res["points"]:
            cells = [f"{p['requested_rate']:g}", f"{p['bops_reduction_rate']:.1f}", f"{p['int8_layers']} / {p['fp32_layers']}"]
            cells += [_ms(p["tvm"].get(b)) for b in build_names]
            cells += [_ms(p["ort"]), p["ort"].get("model", "-"), _ratio(p["tvm"].get("rules"), p["ort"])]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for build, m in res["monotonic"].items():
            lines.append(f"- {build}: latency {monotonic_text(m)}")
        for p in res["points"]:
            for build, t in [*p["tvm"].items(), ("ort", p["ort"])]:
                if isinstance(t, dict) and "error" in t:
                    lines.append(f"- error, rate {p['requested_rate']:g}, {build}: {t['error']}")
        lines.append("")
    return lines


def markdown(report: dict) -> str:
    m = report["machine"]
    flags = ", ".join(f for f, on in m["flags"].items() if on) or "none"
    lines = ["# Kernel benchmark: TVM fp32 vs int8 vs onnxruntime (local CPU)", "",
             f"CPU: {m['cpu']} ({m['machine']}, {m['cores']} cores; LLVM mcpu {m['llvm_mcpu']}; flags: {flags}); "
             f"threads: {m['threads']}; TVM {m['tvm_version']}, onnxruntime {m['onnxruntime_version']}; "
             f"load average at start {m['load_average_at_start']}.", "",
             "Latency: median of per-repeat means (TVM `time_evaluator`, ORT the same loop in Python). "
             "untuned: TVM's default schedules; rules: tvm_mpq.kernels; tuned: MetaSchedule "
             f"({report['options']['tune_trials']} trials/task).", ""]
    if report.get("ops"):
        lines += ["## Op level (fp32: conv+bias+relu / matmul+bias; int8: uint8 x int8 -> int32 + requantize "
                  "epilogue, as the precision pass lowers it; ORT int8: QDQ)", ""]
        lines += ops_markdown(report["ops"], report["op_builds"]) + [""]
    if report.get("models"):
        lines += ["## Whole model (stage A->C; ORT: fp32 ONNX at rate 0, exported QDQ ONNX otherwise)", ""]
        lines += models_markdown(report["models"], report["model_builds"])
    return "\n".join(lines)


def plot(results: list[dict], build_names: list[str], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for ax, res in zip(axes[0], results):
        pts = sorted(res["points"], key=lambda p: p["bops_reduction_rate"])
        for build in build_names + ["ort"]:
            xy = [(p["bops_reduction_rate"], _latency(p, build)) for p in pts]
            xy = [(x, y) for x, y in xy if y is not None]
            if not xy:
                continue
            best: dict[float, float] = {}
            for x, y in xy:  # requested rates that allocate alike: one point on the line (the best)
                best[x] = min(y, best.get(x, y))
            line, = ax.plot(*zip(*sorted(best.items())), marker="o",
                            label="onnxruntime (fp32 / QDQ)" if build == "ort" else f"TVM {build}")
            ax.scatter(*zip(*xy), s=12, color=line.get_color(), alpha=0.5)
        ax.set_yscale("log")
        ax.set_xlabel("BOPs reduction rate (%)")
        ax.set_ylabel("latency (ms, log)")
        ax.set_title(res["model"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,efficientnet-lite0",
                   help="zoo models: their op shapes (part 1) and whole-model latency (part 2)")
    p.add_argument("--rates", default="0,25,50,75,100", help="BOPs reduction rates for part 2")
    p.add_argument("--shapes", type=int, default=1,
                   help="op shapes per model and category (conv, pointwise, depthwise, dense), most MACs first")
    p.add_argument("--all-shapes", action="store_true", help="every distinct op shape of the models")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for TVM and onnxruntime")
    p.add_argument("--repeat", type=int, default=5, help="timing repeats per op (median)")
    p.add_argument("--model-repeat", type=int, default=3, help="timing repeats per whole model")
    p.add_argument("--min-repeat-ms", type=float, default=50.0, help="minimum duration of one repeat")
    p.add_argument("--max-seconds", type=float, default=30.0,
                   help="time budget of one measurement: fewer repeats (>= 2) for slow untuned builds")
    p.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials per task (0: skip tuned builds)")
    p.add_argument("--tuning-root", type=Path, default=None, help="tuning databases (default the product's)")
    p.add_argument("--tolerance", type=float, default=5.0,
                   help="percent rise between rates still counted as timing noise in the monotonicity check")
    p.add_argument("--method", default="quantunev2", help="sensitivity method for the rate configs")
    p.add_argument("--calib-size", type=int, default=8, help="calibration samples for the rate configs")
    p.add_argument("--skip-ops", action="store_true", help="skip part 1 (op level)")
    p.add_argument("--skip-models", action="store_true", help="skip part 2 (whole model)")
    p.add_argument("--save-onnx", action="store_true", help="also keep the exported QDQ ONNX models")
    p.add_argument("-o", "--out", type=Path, default=Path("out/bench/kernels"))
    args = p.parse_args(argv)
    if args.repeat < 1 or args.model_repeat < 1 or args.threads < 1:
        p.error("--repeat, --model-repeat and --threads must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    # Thread counts before TVM's runtime starts its pool.
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TVM_MPQ_NO_PROGRESS", "1")
    import tvm  # noqa: F401

    from targets import get_target
    from tvm_mpq.compiler.build import DEFAULT_TUNING_ROOT

    target = get_target("x86", num_cores=args.threads).tvm_target
    models = [m for m in args.models.split(",") if m]
    rates = [float(r) for r in args.rates.split(",") if r]
    tuning_root = args.tuning_root or DEFAULT_TUNING_ROOT
    empty_root = Path(tempfile.mkdtemp(prefix="tvm-mpq-bench-nodb-"))
    op_builds = builds(args.tune_trials, tuning_root, empty_root, op_level=True)
    model_builds = builds(args.tune_trials, tuning_root, empty_root, op_level=False)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_info(args.threads, target),
              "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "op_builds": [b.name for b in op_builds], "model_builds": [b.name for b in model_builds]}
    m = report["machine"]
    log(f"{m['cpu']} ({m['llvm_mcpu']}; avx2 {m['flags']['avx2']}, avx512f {m['flags']['avx512f']}, "
        f"vnni {m['flags']['avx512_vnni'] or m['flags']['avx_vnni']}), {args.threads} thread(s), TVM {m['tvm_version']}, "
        f"onnxruntime {m['onnxruntime_version']}")

    def save() -> None:
        (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
        (args.out / "report.md").write_text(markdown(report))

    if not args.skip_ops:
        per_model = {}
        for name in models:
            log(f"{name}: reading the layer table")
            graph, _ = load_model(name)
            per_model[name] = model_op_specs(graph, name)
        specs = distinct_specs(per_model, None if args.all_shapes else args.shapes)
        n_all = len(distinct_specs(per_model, None))
        log(f"op level: {len(specs)} of {n_all} distinct shapes; builds {', '.join(b.name for b in op_builds)}")
        report["ops"] = bench_ops(specs, target, args, op_builds)
        save()
        print("\n".join(ops_markdown(report["ops"], report["op_builds"])), flush=True)
    if not args.skip_models:
        report["models"] = bench_models(models, rates, target, args, model_builds)
        save()
        print("\n".join(models_markdown(report["models"], report["model_builds"])), flush=True)
        if plot(report["models"], report["model_builds"], args.out / "latency_vs_rate.png"):
            log(f"plot: {args.out / 'latency_vs_rate.png'}")
    report["seconds"] = round(time.perf_counter() - START, 1)
    save()
    log(f"written: {args.out}/report.json, report.md (total {report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
