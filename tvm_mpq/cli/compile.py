"""``tvm-mpq compile``: a precision config (given, or analyzed for --rate) -> deployable library."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tvm_mpq.cli.common import add_model_options, add_tuning_options, load_model_and_calibration, tuning_from_args
from tvm_mpq.errors import MpqError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="compile a model under a precision config into a shared library")
    add_model_options(p)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--rate", type=float, help="BOPs reduction rate 0..100: analyze, allocate, then compile")
    how.add_argument("--config", type=Path, help="precision config JSON (from `tvm-mpq analyze --rate`)")
    p.add_argument("--method", default="quantunev2", help="sensitivity method for --rate (default quantunev2)")
    p.add_argument("--g", type=float, default=2.0, help="QuantuneV2 weight-delta weight (g > 1)")
    p.add_argument("--stage", default="A->C", choices=["A", "A->C", "C"],
                   help="IR-stage ablation: sensitivity at stage A applied per layer at A, at C (fused, default), "
                        "or sensitivity measured and applied at C")
    p.add_argument("--target", default="x86", help="deployment target (x86, aarch64, aarch64-dotprod, cuda)")
    add_tuning_options(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="shared library to write (model.so)")
    p.set_defaults(func=cmd_compile)


def cmd_compile(args: argparse.Namespace) -> int:
    from targets import get_target
    from tvm_mpq.calibration import CalibrationCache
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.validate import check_integer_config, keep_unsupported_fp32
    from tvm_mpq.config import PrecisionConfig
    from tvm_mpq.config.for_rate import config_for_rate
    from tvm_mpq.frontends import load_model, parse_input_shapes
    from tvm_mpq.graph import build_layer_table

    target = get_target(args.target)
    target.check_toolchain()
    tuning = tuning_from_args(args)
    if args.rate is not None and not 0 <= args.rate <= 100:
        raise MpqError(f"--rate {args.rate} is outside 0..100 (percent BOPs reduction)")
    if args.config is not None:
        config = PrecisionConfig.load(args.config)  # syntax first: no model import for a broken file
        graph = load_model(args.model, parse_input_shapes(args.input_shape))
        check_integer_config(config, build_layer_table(graph))  # before any compilation
    else:
        graph, feeds = load_model_and_calibration(args)
        print(f"{graph.name}: analyzing ({args.method}, stage {'C' if args.stage == 'C' else 'A'}) on "
              f"{len(feeds)} samples for rate {args.rate:g}%")
        config, _ = config_for_rate(graph, feeds, args.rate, args.method, observer=args.observer, g=args.g,
                                    cache=CalibrationCache(args.cache_dir), stage=args.stage)
        kept = keep_unsupported_fp32(config, build_layer_table(graph))
        if kept:
            print(f"{len(kept)} layer(s) have no integer kernel and stay fp32 ({', '.join(kept[:3])}"
                  f"{', ...' if len(kept) > 3 else ''}); achieved rate {config.provenance['bops_reduction_rate']:.1f}%")
    start = time.perf_counter()
    with target.build_context():
        compiled = compile_model(graph, config, target.tvm_target, stage=args.stage, tuning=tuning)
    seconds = time.perf_counter() - start
    library = target.export(compiled, args.output)
    config_path = library.with_suffix(".config.json")
    config.provenance.update({"target": args.target, "stage": args.stage, "n_qdq": compiled.n_qdq,
                              "n_qdq_naive": compiled.n_qdq_naive})
    config.save(config_path)
    stats_path = library.with_suffix(".compile.json")
    stats_path.write_text(json.dumps({"model": graph.name, "target": args.target, "compile_seconds": seconds,
                                      **compiled.stats}, indent=1))
    s = compiled.stats
    print(f"compiled {graph.name} for {args.target} in {seconds:.1f} s: {s['int8_layers']} int8 layer(s), "
          f"{len(config.fp32_layers())} fp32; n_qdq {compiled.n_qdq} (per-layer QDQ would need "
          f"{compiled.n_qdq_naive}), {s['n_requantize']} requantize(s)")
    build = s.get("build", {})
    if "tuning" in build:
        t = build["tuning"]
        print(f"tuning: {t['tasks']} kernel(s), {t['reused']} from the database, {t['tuned']} tuned "
              f"({t['seconds']:.0f} s); database {t['database']}")
    print(f"library: {library}\nconfig:  {config_path}\nstats:   {stats_path}")
    return 0
