"""tvm-mpq against onnxruntime, each runtime timed alone in a process of its own, the processes
taking turns.

    python benchmarks/speed_alone.py [--models resnet18,efficientnet-lite0,mobilenetv2]
        [--rates 0,100] [--threads 2] [--rounds 7] [--runs 10] [-o out/bench/speed_alone]

Why: timed in one process, taking turns (``speed_vs_ort.py``), each runtime's worker threads
still spin after its turn and take cores from the other's on a small machine (on a 2-core VM, a
256 x 64 x 3788 product on onnxruntime took 0.67 ms alone, 0.91 ms beside tvm-mpq; a 16-us layer
norm took up to 3.7 ms right after onnxruntime's turn: docs/results.md). Here the parent
builds each model's QuantuneV2 config per rate once (the tvm-mpq library exported, the fp32 and
QDQ ONNX models written), then in each of ``--rounds`` rounds starts one process per runner in
turn (tvm-mpq at each rate, onnxruntime on the fp32 model and on each rate's QDQ export), which
loads its model, runs it for half a second and reports the minimum of ``--runs`` runs after.
Medians over rounds; each ratio is taken within rounds, against onnxruntime on the same config
(fp32 at rate 0, the QDQ export otherwise). One round is not enough: a process's figures differ
from the next one's by up to 1.3x on a shared VM. Prints and saves ``report.json`` /
``report.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


WARM_UP_S = 0.5
"""Seconds a fresh process runs its model before timing: tvm-mpq's fully int8 mobilenetv2 took
2.5-3.1 ms over its first runs in a new process, 1.59 ms from about the tenth (2-core Xeon,
2026-12-07)."""


def child(kind: str, model: str, inputs: str, runs: int) -> None:
    """Load one runner (``tvm``: an exported library; ``ort``: an ONNX file), run it for
    :data:`WARM_UP_S` and print the minimum of ``runs`` runs after (ms) as JSON."""
    import time

    import numpy as np

    feeds = dict(np.load(inputs))
    if kind == "tvm":
        import tvm
        from tvm import relax

        vm = relax.VirtualMachine(tvm.runtime.load_module(model), tvm.cpu())
        args = [tvm.runtime.tensor(feeds[k]) for k in sorted(k for k in feeds if k.startswith("tvm:"))]
        run = lambda: vm["main"](*args)  # noqa: E731
    else:
        from benchkit.timing import ort_session

        session = ort_session(model, int(os.environ["TVM_NUM_THREADS"]))
        feed = {k[4:]: v for k, v in feeds.items() if k.startswith("ort:")}
        run = lambda: session.run(None, feed)  # noqa: E731
    warm_until = time.perf_counter() + WARM_UP_S
    while time.perf_counter() < warm_until:
        run()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    print(json.dumps({"ms": best * 1e3}))


def prepare(name: str, rates: list[float], out: Path) -> dict[str, tuple[str, str]]:
    """Each runner of ``name``: ``{runner: (kind, model path)}``, with the input file written."""
    import numpy as np
    import onnx

    from benchkit.models import load_model
    from tvm_mpq import zoo
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.calibration import CalibrationCache
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.export import build_qdq_onnx
    from tvm_mpq.export.fp32_onnx import input_feed_names
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.runtime.executor import host_target

    graph, fp32_model = load_model(name)
    table = build_layer_table(graph)
    feeds = zoo.get(name).calibration(8)
    first = feeds[0]
    arrays = {f"tvm:{i:03d}": np.ascontiguousarray(first[s.name]) for i, s in enumerate(graph.inputs)}
    arrays.update({f"ort:{n}": first[s.name] for n, s in zip(input_feed_names(fp32_model), graph.inputs)})
    np.savez(out / f"{name}.inputs.npz", **arrays)
    onnx.save(fp32_model, out / f"{name}.fp32.onnx")
    runners = {"ort fp32": ("ort", str(out / f"{name}.fp32.onnx"))}
    cache, report = CalibrationCache(), None
    for rate in rates:
        config, report = config_for_rate(graph, feeds, rate, "quantunev2", cache=cache, report=report)
        keep_unsupported_fp32(config, table)
        library = out / f"{name}.{rate:g}.so"
        compile_model(graph, config, host_target()).export_library(str(library))
        runners[f"tvm {rate:g}"] = ("tvm", str(library))
        if rate > 0:
            qdq = out / f"{name}.{rate:g}.qdq.onnx"
            onnx.save(build_qdq_onnx(graph, config, fp32_model).model, qdq)
            runners[f"ort qdq {rate:g}"] = ("ort", str(qdq))
    return runners


def time_alone(kind: str, model: str, inputs: Path, runs: int, threads: int) -> float:
    env = {**os.environ, "TVM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, __file__, "--child", kind, model, str(inputs), str(runs)],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["ms"]


def main() -> None:
    import statistics

    from benchkit.machine import flags_text, machine_info
    from benchkit.two_builds import parse_args, write_report
    from tvm_mpq.runtime.executor import host_target

    args = parse_args(__doc__, "0,100", "out/bench/speed_alone", models="resnet18,efficientnet-lite0,mobilenetv2")
    rates = [float(r) for r in args.rates.split(",")]
    info = machine_info(args.threads, host_target())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            runners = prepare(name, rates, Path(tmp))
            inputs = Path(tmp) / f"{name}.inputs.npz"
            times: dict[str, list[float]] = {r: [] for r in runners}
            for _ in range(args.rounds):
                for runner, (kind, model) in runners.items():
                    times[runner].append(time_alone(kind, model, inputs, args.runs, args.threads))
            for rate in rates:
                peer = "ort fp32" if rate == 0 else f"ort qdq {rate:g}"
                ours = times[f"tvm {rate:g}"]
                rows.append({"model": name, "rate": rate, "tvm_ms": round(statistics.median(ours), 3),
                             "ort_ms": round(statistics.median(times[peer]), 3), "ort_runner": peer,
                             "ratio": round(statistics.median(a / b for a, b in zip(ours, times[peer])), 3)})
                print(rows[-1], flush=True)
    lines = ["# tvm-mpq / onnxruntime, each runtime alone in a process of its own", "",
             f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds, one process per runner per round, "
             f"minimum of {args.runs} runs each", "",
             "| model | rate | tvm-mpq ms | onnxruntime ms | tvm / ort |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rate']:g} | {r['tvm_ms']:.3f} | {r['ort_ms']:.3f} ({r['ort_runner']}) | "
              f"{r['ratio']:.2f} |" for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
