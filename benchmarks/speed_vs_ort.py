"""tvm-mpq against onnxruntime on this CPU, same thread count, timed interleaved in one run.

For each model and BOPs reduction rate: the tvm-mpq build of that config (``compile_model``,
QuantuneV2 on ``--calib-size`` calibration samples), onnxruntime on the fp32 ONNX model and on
the ``export-onnx`` QDQ model of the same config. All of a model's runners take turns within
every round (``--rounds``), each round keeping the best of ``--runs`` runs, so a shared
machine's drift hits them alike; the table reports the median over rounds of those per-round
minima. Per point it gives

* tvm / ort: against onnxruntime on the same config (the fp32 model at rate 0, the QDQ export
  otherwise), and against the faster of onnxruntime's fp32 and QDQ runs (what a user would pick);
* int8 speed-up: tvm-mpq's fp32 build over this point, per round;
* where the time goes (``tvm_mpq.runtime.profiler``): ms by kernel kind, from one profiled run
  of ``--profile-runs`` inferences.

On a machine of few cores the runtimes taking turns in one process slow each other (the worker
threads of the one before still spin): ``speed_alone.py`` times each runtime alone in a process
of its own, the processes taking turns.

``--ops`` adds single ops (fp32 and int8, TVM and onnxruntime, interleaved), each runtime
given its own layout as inside a model: onnxruntime NCHW, tvm-mpq channels-last on x86. Writes
``report.json``, ``report.md`` and ``latency_vs_rate.png`` under ``-o``::

    python benchmarks/speed_vs_ort.py                       # resnet18, efficientnet-lite0, mobilenetv2
    python benchmarks/speed_vs_ort.py --models mtcnn-rnet --rates 0,100 --rounds 2   # smoke run
    python benchmarks/speed_vs_ort.py --mcpu znver3   # tvm-mpq's AVX2 kernels, on an AVX-512 host

``--mcpu`` builds tvm-mpq for another x86 CPU that this host can run (an AVX2-only ``znver3``
or ``x86-64-v3`` on an AVX-512 machine): its kernels then take that CPU's vector width and
instructions, while onnxruntime still picks its kernels from this host's CPU, so the ratios are
the AVX2 build against onnxruntime's best on this machine, not against onnxruntime on that CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import numpy as np

from benchkit.machine import flags_text, machine_info
from benchkit.models import rate_builds
from benchkit.ops import OpSpec, channels_last_input, make_case, ort_models, tvm_fp32_module, tvm_int8_module
from benchkit.progress import log
from benchkit.timing import interleaved_min, ort_session

OPS = [OpSpec("conv2d", (1, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1)),
       OpSpec("conv2d", (1, 3, 224, 224), (64, 3, 7, 7), (2, 2), (3, 3, 3, 3)),
       OpSpec("conv2d", (1, 112, 14, 14), (672, 112, 1, 1)),
       OpSpec("conv2d", (1, 64, 56, 56), (128, 64, 1, 1), (2, 2)),
       OpSpec("conv2d", (1, 672, 14, 14), (672, 1, 5, 5), (1, 1), (2, 2, 2, 2), 672),
       OpSpec("conv2d", (1, 96, 112, 112), (96, 1, 3, 3), (2, 2), (0, 1, 0, 1), 96),
       OpSpec("dense", (1, 1280), (1280, 1000))]


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def bench_model(name: str, args: argparse.Namespace, target) -> dict:
    import tvm
    from tvm import relax

    from tvm_mpq.runtime.profiler import profile_kernels, time_by_kind

    _graph, fp32_model, inputs, ort_feed, builds = rate_builds(name, args.rates, args.method, args.calib_size, target)
    dev = tvm.cpu()
    runners, points = {}, []
    runners["ort fp32"] = (lambda s=ort_session(fp32_model, args.threads): s.run(None, ort_feed))
    for build in builds:
        rate, config, cm = build.rate, build.config, build.compiled
        achieved = float(config.provenance["bops_reduction_rate"])
        point = {"rate": rate, "achieved_rate": round(achieved, 1), "n_qdq": cm.n_qdq,
                 "int8_layers": build.int8_layers, "scheduled_by": cm.stats["build"]["scheduled_by"]}
        rows = profile_kernels(cm.executable, inputs, cm.stats["build"]["kernels"], args.profile_runs)
        point["ms_by_kind"] = {k: round(v, 3) for k, v in time_by_kind(rows).items()}
        point["slowest_kernels"] = [{"name": r.name, "kind": r.kind, "calls": r.calls, "ms": round(r.ms, 3)}
                                    for r in rows[:8]]
        vm = relax.VirtualMachine(cm.executable, dev)
        args_tvm = [tvm.runtime.tensor(np.ascontiguousarray(x), dev) for x in inputs]
        runners[f"tvm {rate:g}"] = (lambda vm=vm, a=args_tvm: vm["main"](*a))
        if build.qdq is not None:
            runners[f"ort qdq {rate:g}"] = (lambda s=ort_session(build.qdq, args.threads): s.run(None, ort_feed))
        points.append(point)
        log(f"{name} rate {rate:g}: achieved {achieved:.1f}%, {point['int8_layers']} int8 layers, n_qdq {cm.n_qdq}")
    log(f"{name}: timing {len(runners)} runners interleaved, {args.rounds} rounds x {args.runs} runs")
    times = interleaved_min(runners, args.rounds, args.runs)
    fp32_tvm = times[f"tvm {args.rates[0]:g}"] if args.rates[0] == 0 else None
    for point in points:
        rate = point["rate"]
        tvm_ms = times[f"tvm {rate:g}"]
        same = times.get(f"ort qdq {rate:g}", times["ort fp32"])
        best_ort = [min(a, b) for a, b in zip(times["ort fp32"], same)]
        point.update({
            "tvm_ms": _median(tvm_ms), "ort_same_config_ms": _median(same), "ort_fp32_ms": _median(times["ort fp32"]),
            "ort_model": "qdq" if f"ort qdq {rate:g}" in times else "fp32",
            "tvm_over_ort": _median([t / o for t, o in zip(tvm_ms, same)]),
            "tvm_over_best_ort": _median([t / o for t, o in zip(tvm_ms, best_ort)]),
            "tvm_rounds_ms": [round(t, 3) for t in tvm_ms]})
        if fp32_tvm is not None:
            point["speedup_over_tvm_fp32"] = _median([f / t for f, t in zip(fp32_tvm, tvm_ms)])
        log(f"  rate {rate:g}: tvm {point['tvm_ms']:.2f} ms, ort {point['ort_same_config_ms']:.2f} ms "
            f"({point['ort_model']}), tvm/ort {point['tvm_over_ort']:.2f}, vs best ort {point['tvm_over_best_ort']:.2f}")
    return {"model": name, "points": points, "monotonic": monotonic(points, args.tolerance)}


def monotonic(points: list[dict], tolerance_pct: float) -> dict:
    """Whether tvm-mpq's latency is non-increasing in the rate, within ``tolerance_pct``: judged
    on the latency relative to tvm-mpq's fp32 build taken within each round (the median of
    ``1 / speedup_over_tvm_fp32``), as the sweep judges it, so that the machine changing speed
    between rounds does not count; on the medians of the absolute times where there is no fp32
    point."""
    def relative(p: dict) -> float:
        return 1.0 / p["speedup_over_tvm_fp32"] if "speedup_over_tvm_fp32" in p else p["tvm_ms"]

    violations = []
    for a, b in zip(points, points[1:]):
        if relative(b) > relative(a) * (1 + tolerance_pct / 100):
            violations.append(f"{a['rate']:g}% -> {b['rate']:g}%: {relative(a):.3f} -> {relative(b):.3f}"
                              + (" of fp32" if "speedup_over_tvm_fp32" in b else " ms"))
    return {"non_increasing_within_tolerance": not violations, "tolerance_pct": tolerance_pct,
            "judged_on": "within-round latency / fp32 latency", "violations": violations}


def bench_ops(args: argparse.Namespace, target) -> list[dict]:
    import tvm
    from tvm import relax

    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.kernels import activation_layout

    dev = tvm.cpu()
    runners = {}
    for i, spec in enumerate(OPS):
        case = make_case(spec, seed=i)
        fp32_onnx, qdq_onnx = ort_models(case)
        nhwc = activation_layout(target) == "NHWC"  # the op as it runs inside a model on this target
        for prec, mod, x in (("fp32", tvm_fp32_module(case, nhwc), case.x_f32),
                             ("int8", tvm_int8_module(case, nhwc), case.x_u8)):
            x = channels_last_input(x) if nhwc else x
            vm = relax.VirtualMachine(build_module(mod, target)[0], dev)
            runners[(i, f"tvm {prec}")] = (lambda vm=vm, a=tvm.runtime.tensor(x, dev): vm["main"](a))
        for prec, model, x in (("fp32", fp32_onnx, case.x_f32), ("int8", qdq_onnx, case.x_u8)):
            runners[(i, f"ort {prec}")] = (lambda s=ort_session(model, args.threads), x=x: s.run(None, {"x": x}))
    # every op's runners take turns in every round: a second in which the machine slows down
    # hits one round of a few ops, not every round of one op
    measured = interleaved_min(runners, args.rounds, args.runs)
    rows = []
    for i, spec in enumerate(OPS):
        times = {name: t for (op, name), t in measured.items() if op == i}
        row = {"op": spec.label, "macs": spec.macs, **{k: _median(v) for k, v in times.items()}}
        row["tvm_int8_speedup"] = _median([f / i for f, i in zip(times["tvm fp32"], times["tvm int8"])])
        row["tvm_fp32_over_ort_fp32"] = _median([t / o for t, o in zip(times["tvm fp32"], times["ort fp32"])])
        row["tvm_int8_over_ort_int8"] = _median([t / o for t, o in zip(times["tvm int8"], times["ort int8"])])
        rows.append(row)
        log(f"{spec.label:32s} tvm fp32 {row['tvm fp32']:.3f} int8 {row['tvm int8']:.3f} | ort fp32 {row['ort fp32']:.3f} "
            f"int8 {row['ort int8']:.3f} ms | int8 speed-up {row['tvm_int8_speedup']:.2f}")
    return rows


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# tvm-mpq vs onnxruntime, {m['cpu']} ({flags_text(m)}), {m['threads']} threads, "
             f"tvm-mpq built for mcpu {m['llvm_mcpu']}", "",
             f"`{report['command']}`; medians over {report['rounds']} interleaved rounds of per-round minima; "
             f"load average at start {m['load_average_at_start']}.", ""]
    for res in report["models"]:
        lines += [f"## {res['model']}", "",
                  "| rate (achieved) | n_qdq | tvm-mpq ms | onnxruntime ms (same config) | tvm/ort | tvm / best ort | "
                  "speed-up over tvm fp32 | MAC ms | non-MAC ms (layout, Q/DQ, pool, elementwise, VM) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for p in res["points"]:
            k = p["ms_by_kind"]
            mac = sum(v for kind, v in k.items() if kind.startswith("MAC"))
            other = ", ".join(f"{k[c]:.2f}" for c in ("layout", "quantize/dequantize", "pool/reduction",
                                                       "elementwise/other", "VM"))
            lines.append(f"| {p['rate']:g} ({p['achieved_rate']:g}) | {p['n_qdq']} | {p['tvm_ms']:.2f} | "
                         f"{p['ort_same_config_ms']:.2f} ({p['ort_model']}) | {p['tvm_over_ort']:.2f} | "
                         f"{p['tvm_over_best_ort']:.2f} | {p.get('speedup_over_tvm_fp32', float('nan')):.2f} | "
                         f"{mac:.2f} | {other} |")
        mono = res["monotonic"]
        lines += ["", "Latency " + ("non-increasing in the rate" if mono["non_increasing_within_tolerance"] else
                                    "NOT non-increasing: " + "; ".join(mono["violations"]))
                  + f" (latency / fp32 latency within each round, tolerance {mono['tolerance_pct']:g}%).", ""]
    if report.get("ops"):
        lines += ["## Single ops", "", "| op | tvm fp32 | tvm int8 | ort fp32 | ort int8 (QDQ) | tvm int8 speed-up | "
                  "tvm/ort fp32 | tvm/ort int8 |", "|---|---|---|---|---|---|---|---|"]
        for r in report["ops"]:
            lines.append(f"| {r['op']} | {r['tvm fp32']:.3f} | {r['tvm int8']:.3f} | {r['ort fp32']:.3f} | "
                         f"{r['ort int8']:.3f} | {r['tvm_int8_speedup']:.2f} | {r['tvm_fp32_over_ort_fp32']:.2f} | "
                         f"{r['tvm_int8_over_ort_int8']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = report["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, res in zip(axes[0], models):
        x = [p["achieved_rate"] for p in res["points"]]
        ax.plot(x, [p["tvm_ms"] for p in res["points"]], "o-", label="tvm-mpq")
        ax.plot(x, [p["ort_same_config_ms"] for p in res["points"]], "s--", label="onnxruntime (same config)")
        ax.axhline(res["points"][0]["ort_fp32_ms"], color="gray", linestyle=":", label="onnxruntime fp32")
        ax.set(title=res["model"], xlabel="BOPs reduction rate (%)", ylabel="ms")
        ax.legend(fontsize=8)
    m = report["machine"]
    fig.suptitle(f"{m['cpu']} ({flags_text(m)}), {m['threads']} threads, tvm-mpq for {m['llvm_mcpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,efficientnet-lite0,mobilenetv2")
    p.add_argument("--rates", default="0,25,50,75,100")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=10, help="runs per runner per round (its minimum is kept)")
    p.add_argument("--method", default="quantunev2")
    p.add_argument("--calib-size", type=int, default=8)
    p.add_argument("--profile-runs", type=int, default=10)
    p.add_argument("--tolerance", type=float, default=5.0, help="monotonicity tolerance (%%)")
    p.add_argument("--ops", action="store_true", help="also time single ops")
    p.add_argument("--mcpu", help="build tvm-mpq for this LLVM x86 CPU instead of the host's (e.g. znver3: "
                   "AVX2 kernels on an AVX-512 host); onnxruntime keeps the host's kernels")
    p.add_argument("-o", "--out", type=Path, default=Path("out/bench/speed"))
    args = p.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",")]
    return args


def main(argv=None) -> None:
    import sys

    args = parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's thread pool starts
    from targets import get_target
    from tvm_mpq.runtime.executor import host_target

    target = get_target("x86", mcpu=args.mcpu).tvm_target if args.mcpu else host_target()
    report = {"command": "python benchmarks/speed_vs_ort.py " + " ".join(sys.argv[1:]),
              "machine": machine_info(args.threads, target), "rounds": args.rounds, "runs": args.runs,
              "models": [], "ops": []}
    log(f"machine: {report['machine']['cpu']} ({flags_text(report['machine'])}), {args.threads} threads")
    if args.ops:
        report["ops"] = bench_ops(args, target)
    for name in [m for m in args.models.split(",") if m]:
        report["models"].append(bench_model(name, args, target))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    (args.out / "report.md").write_text(markdown(report))
    if report["models"]:
        plot(report, args.out / "latency_vs_rate.png")
    print(markdown(report))
    log(f"written: {args.out}/report.json, report.md, latency_vs_rate.png")


if __name__ == "__main__":
    main()
