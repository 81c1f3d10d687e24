"""Register tiles of any size on the stack (``StackRegisterTiles`` in the CPU TIR pipeline)
against the same tiles under TVM 0.27's own TIR pipeline, in one process, interleaved.

    python benchmarks/stack_register_tiles.py [--models sudachi-tagger,minilm,mobilenetv2,...]
        [--rates 0,100] [--rounds 7] [--runs 10] [-o out/bench/stack_register_tiles]
    python benchmarks/stack_register_tiles.py --ops [--rounds 7] [--runs 20]

"stack": the pipeline (the registers alone bound a GEMM's or conv's register tile, and
:class:`tvm_mpq.kernels.stack_tiles.StackRegisterTiles` keeps every tile an ``alloca``, which
LLVM promotes to registers); "heap": TVM's own TIR pipeline (a ``TVMBackendAllocWorkspace``
call per tile of 1 KiB or more, memory LLVM may keep on the stack across the reduction; an
AVX-512 4 x 5 tile of 16-lane vectors is 1280 bytes). Each config is compiled both ways for this
host; both builds take turns in every round (each runner's minimum of ``--runs`` runs per round;
medians over rounds, the ratio taken within rounds), with the largest output difference between
them. On AVX2 and NEON targets the registers bound the tile under 1 KiB: the builds are the
same. ``--ops``: single ``[M, K] x [K, N]`` + bias ``Gemm`` ONNX models of sudachi-tagger's
shapes (``benchkit.ops``' seeded dense cases) through ``compile_model``, both builds and
onnxruntime interleaved, in microseconds. Prints and saves ``report.json`` / ``report.md``.
(Until 2026-12-07 it also built "small": tiles capped under 1 KiB of accumulators, the pipeline
of 2026-12-06 20:04-23:00 UTC, whose cap was removed; the docs' "small" columns come from commit
``092cee1``.)
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
    import tempfile

    import onnx

    from benchkit.machine import flags_text
    from benchkit.ops import OpSpec, make_case, ort_models
    from benchkit.timing import ort_session
    from benchkit.two_builds import time_op_builds, write_report
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
            rows.append({"shape": f"{m} x {k} x {n}", **time_op_builds(
                HOWS, build_as, lambda graph=graph: compile_model(graph, None, target).executable, case.x_f32,
                lambda x, session=session: session.run(None, {"x": x})[0], args.rounds, args.runs)})
            print(rows[-1], flush=True)
    lines = ["# One matmul + bias: register tiles on the stack vs in a workspace vs onnxruntime (microseconds)",
             "", f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| M x K x N | " + " | ".join(HOWS) + " | onnxruntime | " + " | ".join(f"{h} / ort" for h in HOWS) + " |",
             "|---|" + "---|" * (2 * len(HOWS) + 1)]
    lines += [f"| {r['shape']} | " + " | ".join(str(r[f"{h}_us"]) for h in HOWS) + f" | {r['ort_us']} | "
              + " | ".join(str(r[f"{h}_over_ort"]) for h in HOWS) + " |" for r in rows]
    write_report(args.out, info, rows, lines)


def main() -> None:
    import contextlib

    from benchkit.machine import machine_info
    from benchkit.two_builds import compare_two_builds, constants_set, parse_args, with_constant

    args = parse_args(__doc__, "0,100", "out/bench/stack_register_tiles",
                      models="sudachi-tagger,minilm,mobilenetv2,efficientnet-lite0,resnet18",
                      ops="single matmuls, both builds and onnxruntime")
    from tvm_mpq.kernels import stack_tiles
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    info = machine_info(args.threads, target)
    if args.ops:
        if args.out == Path("out/bench/stack_register_tiles"):
            args.out = Path("out/bench/stack_register_tiles_ops")
        args.runs = max(args.runs, 20)
        time_ops(args, info, target, lambda how: constants_set(stack_tiles, STACK_ALLOCATION_BYTES=0)
                 if how == "heap" else contextlib.nullcontext())
        return
    compare_two_builds(args, info, HOWS, with_constant(stack_tiles, "STACK_ALLOCATION_BYTES", 0, "heap", target),
                       "Register tiles on the stack vs in a workspace allocation (TVM's TIR pipeline)")


if __name__ == "__main__":
    main()
