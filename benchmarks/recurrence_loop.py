"""Long recurrences unrolled (a graph node per step, every step's recurrent product a dense layer)
against one loop kernel per recurrent node (``tvm_mpq.kernels.recurrence``, the default over
more than ``UNROLL_STEPS`` steps): compile time, latency and fidelity, in one process.

    python benchmarks/recurrence_loop.py [--models eeg-seizure-lstm,pyannote-segmentation]
        [--input-shape pyannote-segmentation=input:1x1x16000] [--threads 2] [--rounds 7] [--runs 5]
        [-o out/bench/recurrence_loop]

Per corpus model (8 calibration inputs, 8 held-out): the model imported both ways, each
analyzed (QuantuneV2) and compiled fp32 and fully int8 (seconds: import, analysis, each
compile), then the four builds and onnxruntime (fp32, the same ONNX file, same threads) timed
interleaved (each runner's minimum of ``--runs`` runs per round; medians over ``--rounds``).
Fidelity: each fp32 build against onnxruntime and each fully int8 build against its fp32 (output
SQNR over the held-out inputs). ``--input-shape MODEL=NAME:DIMS`` times a shorter input where the
unrolled build of the catalog's would take too long (pyannote's 589 frames: over 15 minutes).
Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

HOWS = ("unrolled", "loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="eeg-seizure-lstm,pyannote-segmentation")
    parser.add_argument("--input-shape", action="append", default=["pyannote-segmentation=input:1x1x16000"],
                        help="MODEL=NAME:DIMS (x-separated), e.g. pyannote-segmentation=input:1x1x16000")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/recurrence_loop"))
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    import onnx
    import tvm
    from tvm import relax

    from benchkit.machine import flags_text, machine_info
    from benchkit.timing import interleaved_min, ort_session
    from benchkit.two_builds import write_report
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.corpus.catalog import by_name
    from tvm_mpq.corpus.fetch import fetch
    from tvm_mpq.corpus.inputs import feeds as corpus_feeds
    from tvm_mpq.frontends.onnx_frontend import from_onnx_model, read_onnx
    from tvm_mpq.frontends.onnx_recurrent import UNROLL_STEPS
    from tvm_mpq.metrics.task_metrics import output_sqnr_db
    from tvm_mpq.runtime.executor import flatten_outputs, host_target, host_tensor

    shapes_override: dict[str, dict[str, tuple[int, ...]]] = {}
    for item in args.input_shape:
        model, spec = item.split("=", 1)
        name, dims = spec.split(":", 1)
        shapes_override.setdefault(model, {})[name] = tuple(int(d) for d in dims.split("x"))
    target = host_target()
    info = machine_info(args.threads, target)
    rows = []
    for name in args.models.split(","):
        entry = by_name(name)
        path = fetch(entry)
        shapes = {**entry.shapes, **shapes_override.get(name, {})}
        source = read_onnx(path)
        builds, seconds, held_out = {}, {}, None
        for how in HOWS:
            began = time.perf_counter()
            unroll = 10 ** 9 if how == "unrolled" else UNROLL_STEPS  # (every sequence unrolled, or the default)
            graph = from_onnx_model(source, name, shapes, str(path), unroll_steps=unroll)
            seconds[f"{how} import"] = time.perf_counter() - began
            samples = corpus_feeds(entry, graph, 16)
            calib, held_out = samples[:8], samples[8:]
            began = time.perf_counter()
            builds[(how, "fp32")] = compile_model(graph, None, target)
            seconds[f"{how} compile fp32"] = time.perf_counter() - began
            began = time.perf_counter()
            config, _ = config_for_rate(graph, calib, 100, "quantunev2")
            seconds[f"{how} analysis"] = time.perf_counter() - began
            began = time.perf_counter()
            builds[(how, "int8")] = compile_model(graph, config, target)
            seconds[f"{how} compile int8"] = time.perf_counter() - began
            print(f"{name} {how}: {', '.join(f'{k} {v:.1f} s' for k, v in seconds.items() if k.startswith(how))}",
                  flush=True)
        session = ort_session(onnx.load(str(path)), args.threads)
        runners, outputs = {}, {}
        for (how, precision), built in builds.items():
            vm = relax.VirtualMachine(built.executable, tvm.cpu())
            inputs = [host_tensor(held_out[0][s.name]) for s in built.graph.inputs]
            runners[f"{how} {precision}"] = (lambda vm=vm, inputs=inputs: vm["main"](*inputs))
            outputs[(how, precision)] = [flatten_outputs(vm["main"](*[host_tensor(f[s.name]) for s in built.graph.inputs]))
                                         for f in held_out]
        runners["onnxruntime fp32"] = lambda: session.run(None, held_out[0])
        reference = [session.run(None, f) for f in held_out]
        times = interleaved_min(runners, args.rounds, args.runs)
        ms = {k: round(statistics.median(v), 3) for k, v in times.items()}
        fidelity = {f"{how} fp32 vs onnxruntime": round(output_sqnr_db(outputs[(how, "fp32")], reference), 1)
                    for how in HOWS}
        fidelity.update({f"{how} int8 vs its fp32": round(output_sqnr_db(outputs[(how, "int8")], outputs[(how, "fp32")]), 1)
                         for how in HOWS})
        layers = {how: builds[(how, "int8")].stats.get("int8_layers") for how in HOWS}
        qdq = {how: builds[(how, "int8")].n_qdq for how in HOWS}
        rows.append({"model": name, "shapes": {k: list(v) for k, v in shapes.items()}, "seconds": seconds, "ms": ms,
                     "fidelity_db": fidelity, "int8_layers": layers, "n_qdq": qdq})
    lines = [f"# Long recurrences: unrolled vs one loop kernel ({flags_text(info)}, {args.threads} threads)", "",
             "| model (input) | build | import + analysis + compiles, s | fp32 ms | int8 ms | onnxruntime fp32 ms "
             "| fp32 vs onnxruntime | int8 vs fp32 | int8 layers / Q/DQ |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        shape = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in row["shapes"].items())
        for how in HOWS:
            total = sum(v for k, v in row["seconds"].items() if k.startswith(how))
            lines.append(f"| {row['model']} ({shape}) | {how} | {total:.1f} | {row['ms'][f'{how} fp32']} | "
                         f"{row['ms'][f'{how} int8']} | {row['ms']['onnxruntime fp32']} | "
                         f"{row['fidelity_db'][f'{how} fp32 vs onnxruntime']} dB | "
                         f"{row['fidelity_db'][f'{how} int8 vs its fp32']} dB | "
                         f"{row['int8_layers'][how]} / {row['n_qdq'][how]} |")
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
