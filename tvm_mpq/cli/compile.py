"""``tvm-mpq compile``: a precision config (given, or analyzed for --rate) -> deployable library."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tvm_mpq.cli.common import (add_config_source_options, add_model_options, add_tuning_options, check_work_dirs,
                                 config_from_args, layer_names, tuning_from_args)
from tvm_mpq.cli.failures import stage
from tvm_mpq.cli.stage_option import add_stage_option
from tvm_mpq.output_files import check_output_file, staged_outputs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="compile a model under a precision config into a shared library")
    add_model_options(p)
    add_config_source_options(p, "compile")
    add_stage_option(p, "IR-stage ablation: sensitivity on the source graph applied per layer there (source), "
                        "on the folded, fused graph (source->folded, default), or measured and applied on the "
                        "folded graph (folded)")
    p.add_argument("--target", default="x86", help="deployment target (x86, aarch64, aarch64-dotprod, cuda)")
    p.add_argument("--mcpu", help="x86 only: the LLVM CPU to build for (default this host's, e.g. znver3); "
                                  "e.g. sapphirerapids or alderlake for a VNNI (vpdpbusd) server")
    p.add_argument("--cuda-fast-math", action="store_true",
                   help="cuda only: nvcc's --use_fast_math (approximate float division): about 10%% faster "
                        "fully int8 EfficientNet-Lite0 on an H200, but requantized codes may then differ from "
                        "the CPU build's where a quotient is near a rounding tie (default: exact division)")
    p.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                   help="cuda only: launch every kernel from the VM instead of replaying the model's static "
                        "part as one CUDA graph (the default; same outputs, EfficientNet-Lite0 fully int8 "
                        "0.420 -> 0.355 ms on an H200). A graph is captured at the first run, so a library "
                        "built with one cannot be profiled with a device sync between kernels")
    add_tuning_options(p, device_options=True)
    p.add_argument("--print-ir", action="store_true",
                   help="print the module the precision pass lowers: each conv/matmul with its precision "
                        "annotation (R.mpq.precision: layer name, bits, scales), then the layer list")
    p.add_argument("-o", "--output", type=Path, required=True, help="shared library to write (model.so)")
    p.set_defaults(func=cmd_compile)


def cmd_compile(args: argparse.Namespace) -> int:
    import contextlib

    import tvm

    from targets import get_target
    from tvm_mpq.compiler.inspect_ir import PrintBefore
    from tvm_mpq.compiler.tuning import check_tuning
    from tvm_mpq.errors import MpqError

    check_output_file(args.output)
    check_work_dirs(args)
    if args.mcpu and args.target != "x86":
        raise MpqError(f"--mcpu applies to --target x86 (got --target {args.target})")
    for flag, given in (("--cuda-fast-math", args.cuda_fast_math), ("--no-cuda-graph", not args.cuda_graph)):
        if given and args.target != "cuda":
            raise MpqError(f"{flag} applies to --target cuda (got --target {args.target})")
    target = get_target(args.target, **({"mcpu": args.mcpu} if args.mcpu else {}),
                        **({"fast_math": True} if args.cuda_fast_math else {}),
                        **({"cuda_graph": False} if not args.cuda_graph else {}))
    target.check_toolchain()
    tuning = tuning_from_args(args)
    check_tuning(target.tvm_target, tuning)  # before the analysis: --tune-trials for aarch64 needs a device
    graph, config = config_from_args(args, args.stage)
    start = time.perf_counter()
    printing = (tvm.transform.PassContext(instruments=[PrintBefore("LowerToInteger")]) if args.print_ir
                else contextlib.nullcontext())
    with stage("compile", layer_names(graph)), printing:
        compiled = target.compile(graph, config, stage=args.stage, tuning=tuning)
    seconds = time.perf_counter() - start
    library = args.output
    config_path = library.with_suffix(".config.json")
    stats_path = library.with_suffix(".compile.json")
    config.provenance.update({"target": args.target, "stage": args.stage, "n_qdq": compiled.n_qdq,
                              "n_qdq_naive": compiled.n_qdq_naive})
    stats = {"model": graph.name, "target": args.target, "compile_seconds": seconds, **compiled.stats}
    with staged_outputs() as outputs:
        with stage("export"):
            target.export(compiled, outputs.path(library))
        with stage("write"):
            config.save(outputs.path(config_path))
            outputs.path(stats_path).write_text(json.dumps(stats, indent=1))
    s = compiled.stats
    print(f"compiled {graph.name} for {args.target} in {seconds:.1f} s: {s['int8_layers']} int8 layer(s), "
          f"{len(config.fp32_layers())} fp32; n_qdq {compiled.n_qdq} (per-layer QDQ would need "
          f"{compiled.n_qdq_naive}), {s['n_requantize']} requantize(s)")
    build = s.get("build", {})
    if "tuning" in build:
        t = build["tuning"]
        print(f"tuning: {t['tasks']} kernel(s), {t['reused']} from the database, {t['tuned']} tuned "
              f"on {t['device']} ({t['seconds']:.0f} s); database {t['database']}")
    if "cuda_graph_captures" in build:
        n = build["cuda_graph_captures"]
        print(f"cuda graphs: {n} captured region(s), replayed after the first run" if n else
              "cuda graphs: none (every kernel launched from the VM)")
    print(f"library: {library}\nconfig:  {config_path}\nstats:   {stats_path}")
    return 0
