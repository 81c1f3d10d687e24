"""Register tiles of any size on the stack (``StackRegisterTiles`` in the CPU TIR pipeline)
against the tiles under 1 KiB that TVM 0.27 alone keeps there, or the larger tiles in a per-tile
workspace allocation, in one process, interleaved.

    python benchmarks/stack_register_tiles.py [--against small|heap]
        [--models sudachi-tagger,minilm,mobilenetv2,...] [--rates 0,100] [--rounds 7] [--runs 10]
        [-o out/bench/stack_register_tiles]
    python benchmarks/stack_register_tiles.py --ops [--rounds 7] [--runs 20]

"stack": the pipeline (the registers alone bound a GEMM's or conv's register tile, and
:class:`tvm_mpq.kernels.stack_tiles.StackRegisterTiles` keeps every tile an ``alloca``, which
LLVM promotes to registers); "small": tiles under 1 KiB of accumulators
(:data:`tvm_mpq.kernels.cpu_mac.STACK_TILE_BYTES` = 1023, the pipeline of 2026-12-06 20:04-23:00
UTC; an AVX-512 4 x 5 tile of 16-lane vectors is 1280 bytes); "heap": the stack's tiles under
TVM's own TIR pipeline (a ``TVMBackendAllocWorkspace`` call per tile over 1 KiB, memory LLVM may
keep on the stack across the reduction). Each config is compiled both ways for this host; both
builds take turns in every round (each runner's minimum of ``--runs`` runs per round; medians
over rounds, the ratio taken within rounds), with the largest output difference between them.
On AVX2 and NEON targets the registers bound the tile under 1 KiB: the builds are the same.
``--ops``: single ``[M, K] x [K, N]`` + bias ``Gemm`` ONNX models of sudachi-tagger's shapes
(``benchkit.ops``' seeded dense cases) through ``compile_model``, the three builds and
onnxruntime interleaved, in microseconds. Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

HOWS = ("stack", "small", "heap")

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
    lines = ["# One matmul + bias: register tiles on the stack, under 1 KiB, in a workspace; onnxruntime (microseconds)",
             "", f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| M x K x N | " + " | ".join(HOWS) + " | onnxruntime | " + " | ".join(f"{h} / ort" for h in HOWS) + " |",
             "|---|" + "---|" * (2 * len(HOWS) + 1)]
    lines += [f"| {r['shape']} | " + " | ".join(str(r[f"{h}_us"]) for h in HOWS) + f" | {r['ort_us']} | "
              + " | ".join(str(r[f"{h}_over_ort"]) for h in HOWS) + " |" for r in rows]
    write_report(args.out, info, rows, lines)


def build_as(how: str):
    """The context inside which the pipeline compiles as ``how`` (:data:`HOWS`)."""
    import contextlib

    from benchkit.two_builds import constants_set
    from tvm_mpq.kernels import cpu_mac, stack_tiles

    if how == "small":
        return constants_set(cpu_mac, STACK_TILE_BYTES=1023)
    if how == "heap":
        return constants_set(stack_tiles, STACK_ALLOCATION_BYTES=0)
    return contextlib.nullcontext()


def main() -> None:
    from benchkit.machine import machine_info
    from benchkit.two_builds import compare_two_builds, parse_args
    from tvm_mpq.compiler import compile_model

    args = parse_args(__doc__, "0,100", "out/bench/stack_register_tiles",
                      models="sudachi-tagger,minilm,mobilenetv2,efficientnet-lite0,resnet18",
                      ops="single matmuls, the three builds and onnxruntime",
                      extra=[("--against", dict(choices=HOWS[1:], default="small",
                                                 help="the build the stack's is timed beside"))])
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    info = machine_info(args.threads, target)
    if args.ops:
        if args.out == Path("out/bench/stack_register_tiles"):
            args.out = Path("out/bench/stack_register_tiles_ops")
        args.runs = max(args.runs, 20)
        time_ops(args, info, target, build_as)
        return

    def compile_point(point, how: str):
        with build_as(how):
            return compile_model(point.graph, point.config, target)

    compare_two_builds(args, info, ("stack", args.against), compile_point,
                       f"Register tiles on the stack vs {args.against}")


if __name__ == "__main__":
    main()
