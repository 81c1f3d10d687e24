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
(the QDQ export where a layer is int8, the fp32 model otherwise). One round is not enough: a
process's figures differ from the next one's by up to 1.3x on a shared VM. Prints and saves
``report.json`` / ``report.md``.
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

    from benchkit.models import rate_builds
    from tvm_mpq.runtime.executor import host_target

    _graph, fp32_model, inputs, ort_feed, builds = rate_builds(name, rates, "quantunev2", 8, host_target())
    arrays = {f"tvm:{i:03d}": np.ascontiguousarray(x) for i, x in enumerate(inputs)}
    arrays.update({f"ort:{n}": x for n, x in ort_feed.items()})
    np.savez(out / f"{name}.inputs.npz", **arrays)
    onnx.save(fp32_model, out / f"{name}.fp32.onnx")
    runners = {"ort fp32": ("ort", str(out / f"{name}.fp32.onnx"))}
    for build in builds:
        library = out / f"{name}.{build.rate:g}.so"
        build.compiled.export_library(str(library))
        runners[f"tvm {build.rate:g}"] = ("tvm", str(library))
        if build.qdq is not None:
            qdq = out / f"{name}.{build.rate:g}.qdq.onnx"
            onnx.save(build.qdq, qdq)
            runners[f"ort qdq {build.rate:g}"] = ("ort", str(qdq))
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
                peer = f"ort qdq {rate:g}" if f"ort qdq {rate:g}" in runners else "ort fp32"
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
