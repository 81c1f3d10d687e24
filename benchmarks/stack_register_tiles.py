"""Register tiles on the stack (under 1 KiB of accumulators) against larger tiles in a
per-tile workspace allocation, in one process, interleaved.

    python benchmarks/stack_register_tiles.py [--models sudachi-tagger,minilm,mobilenetv2,...]
        [--rates 0,100] [--rounds 7] [--runs 10] [-o out/bench/stack_register_tiles]
    python benchmarks/stack_register_tiles.py --ops [--rounds 7] [--runs 20]

"stack": the pipeline (:data:`tvm_mpq.kernels.cpu_mac.STACK_TILE_BYTES`: a GEMM or conv
register tile holds under 1 KiB of accumulators, which TVM 0.27 keeps on the stack, where LLVM
promotes them to registers); "heap": the tile the registers alone bound (an AVX-512 4 x 5 tile of
16-lane vectors is 1280 bytes, a ``TVMBackendAllocWorkspace`` call per tile, memory LLVM may keep
on the stack across the reduction). Each config is compiled both ways for this host; both builds
take turns in every round (each runner's minimum of ``--runs`` runs per round; medians over
rounds, the ratio taken within rounds), with the largest output difference between them. On
AVX2 and NEON targets the registers bound the tile first: both builds are the same.
``--ops``: single ``[M, K] x [K, N]`` + bias ``Gemm`` ONNX models of sudachi-tagger's shapes
(``benchkit.ops``' seeded dense cases) through ``compile_model``, both builds and onnxruntime
interleaved, in microseconds. Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

HOWS = ("stack", "heap")

OP_SHAPES = ((256, 156, 156), (256, 624, 156), (256, 156, 624), (256, 64, 3788), (256, 160, 160))
"""``M x K x N`` of the ``--ops`` products: sudachi-tagger's (its 156 hidden columns computed on
160 and sliced, its feed-forward, its 3788-tag classifier) and the same product on 160 columns."""


def time_ops(args, info: dict, target, build_as) -> None:
    """``build_as(how)``: a context inside which the pipeline builds as ``how``."""
    import statistics
    import tempfile

    import numpy as np
    import onnx
    import tvm
    from tvm import relax

    from benchkit.machine import flags_text
    from benchkit.ops import OpSpec, make_case, ort_models
    from benchkit.timing import interleaved_min, ort_session
    from benchkit.two_builds import write_report
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.zoo import load_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed, (m, k, n) in enumerate(OP_SHAPES):
            case = make_case(OpSpec("dense", (m, k), (k, n)), seed)
            path = Path(tmp) / f"matmul_{m}x{k}x{n}.onnx"
            onnx.save(ort_models(case)[0], path)
            graph = load_model(str(path))
            session = ort_session(str(path), args.threads)
            data = case.x_f32
            tensor = tvm.runtime.tensor(data)
            want = session.run(None, {"x": data})[0]
            runners = {"ort": lambda session=session, data=data: session.run(None, {"x": data})}
            for how in HOWS:
                with build_as(how):
                    executable = compile_model(graph, None, target).executable
                run = relax.VirtualMachine(executable, tvm.cpu())["main"]
                np.testing.assert_allclose(run(tensor).numpy(), want, rtol=1e-4, atol=1e-4)
                runners[how] = (lambda run=run, tensor=tensor: run(tensor))
            times = interleaved_min(runners, args.rounds, args.runs)
            row = {"shape": f"{m} x {k} x {n}", **{f"{name}_us": round(statistics.median(t) * 1e3, 1)
                                                   for name, t in times.items()}}
            for name in HOWS:
                row[f"{name}_over_ort"] = round(statistics.median([a / b for a, b in zip(times[name], times["ort"])]), 2)
            rows.append(row)
            print(row, flush=True)
    lines = ["# One matmul + bias: register tiles on the stack vs in a workspace vs onnxruntime (microseconds)", "",
             f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| M x K x N | stack | heap | onnxruntime | stack / ort | heap / ort |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['shape']} | {r['stack_us']} | {r['heap_us']} | {r['ort_us']} | {r['stack_over_ort']} | "
              f"{r['heap_over_ort']} |" for r in rows]
    write_report(args.out, info, rows, lines)


def main() -> None:
    import contextlib

    from benchkit.machine import machine_info
    from benchkit.two_builds import compare_two_builds, constants_set, parse_args, with_constant

    args = parse_args(__doc__, "0,100", "out/bench/stack_register_tiles",
                      models="sudachi-tagger,minilm,mobilenetv2,efficientnet-lite0,resnet18",
                      ops="single matmuls, both builds and onnxruntime")
    from tvm_mpq.kernels import cpu_mac
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    info = machine_info(args.threads, target)
    if args.ops:
        if args.out == Path("out/bench/stack_register_tiles"):
            args.out = Path("out/bench/stack_register_tiles_ops")
        args.runs = max(args.runs, 20)
        time_ops(args, info, target, lambda how: constants_set(cpu_mac, STACK_TILE_BYTES=0)
                 if how == "heap" else contextlib.nullcontext())
        return
    compare_two_builds(args, info, HOWS, with_constant(cpu_mac, "STACK_TILE_BYTES", 0, "heap", target),
                       "Register tiles on the stack vs in a workspace allocation")


if __name__ == "__main__":
    main()
