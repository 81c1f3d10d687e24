"""``tvm-mpq sweep``: latency and fidelity of a model vs BOPs reduction rate, per method, on a target.

Every point is built and exported with the target's compiler first; then, on the device, each
runs the evaluation samples and all of them, the fp32 baseline included, are timed with
``time_evaluator`` round-robin for ``--rounds`` rounds (latency ratios to fp32 taken within
each round); without ``--rpc`` / ``--tracker`` a local server is started (x86 natively,
aarch64 under QEMU). Writes OUTPUT (JSON, docs/design.md "Report contract"), OUTPUT.md and OUTPUT.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tvm_mpq.cli.common import (add_model_options, add_tuning_options, check_work_dirs, ptq_from_args,
                                 tuning_from_args)
from tvm_mpq.cli.stage_option import add_stage_option
from tvm_mpq.errors import MpqError
from tvm_mpq.output_files import check_output_dir, check_output_file


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` subcommand."""
    p = sub.add_parser("sweep", help="measure latency and fidelity vs BOPs reduction rate over RPC",
                       description=__doc__.splitlines()[0])
    add_model_options(p)
    p.add_argument("--target", required=True, help="x86, aarch64, aarch64-dotprod or cuda")
    p.add_argument("--rates", default="0,25,50,75,100", help="BOPs reduction rates in percent (default 0,25,50,75,100)")
    p.add_argument("--methods", default="quantunev2",
                   help="sensitivity methods, comma-separated (default quantunev2). Ranking methods (quantunev2, "
                        "inorder, weight-sqnr, top1) give one point per rate; bit-width methods (mixquant, pandey) "
                        "give one point per assignment of their own that the int8 kernels run (--rates does not "
                        "apply to them)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--rpc", metavar="HOST:PORT", help="run on this TVM RPC server (default: start a local one)")
    where.add_argument("--tracker", metavar="HOST:PORT", help="spread the points over this tracker's servers of --key")
    p.add_argument("--key", help="with --tracker: the server key to request; with --rpc: the server's key")
    p.add_argument("--eval-size", type=int, metavar="N",
                   help="evaluation samples per point, each one remote run (default 32; 8 under QEMU)")
    p.add_argument("--rounds", type=int, metavar="N",
                   help="interleaved timing rounds: each times every point and the fp32 baseline once, round-robin "
                        "(default 10; 3 under QEMU)")
    p.add_argument("--repeat", type=int, metavar="N",
                   help="time_evaluator repeats per point and round (default 3; fewer when they would take "
                        "longer than --max-time, down to 3 natively and to 1 under QEMU)")
    p.add_argument("--max-time", type=float, metavar="S",
                   help="timing budget per point and round in seconds (default 2; 35 under QEMU)")
    p.add_argument("--min-repeat-ms", type=float, metavar="MS", help="each repeat runs the model for at least this long "
                   "(default 100)")
    p.add_argument("--g", type=float, default=2.0, help="QuantuneV2 weight-delta weight (g > 1)")
    add_stage_option(p, "IR stage (as for compile)")
    p.add_argument("--keep-libs", type=Path, metavar="DIR", help="keep every point's exported library in DIR")
    p.add_argument("--no-setup", action="store_true",
                   help="aarch64: fail instead of setting up the cross toolchain and sysroot when missing")
    add_tuning_options(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="report JSON (.md and .png are written next to it)")
    p.set_defaults(func=cmd_sweep)


def options_from_args(args: argparse.Namespace):
    """The validated :class:`~tvm_mpq.sweep.SweepOptions` of the command line."""
    from targets import target_names
    from tvm_mpq.sweep.plan import SweepOptions, parse_methods, parse_rates

    if args.target not in target_names():
        raise MpqError(f"unknown --target '{args.target}' (have {', '.join(target_names())})")
    if args.tracker and not args.key:
        raise MpqError(f"--tracker {args.tracker} needs --key (the server key to request)")
    if args.key and not (args.tracker or args.rpc):
        raise MpqError("--key needs --rpc (the server's key) or --tracker (the key to request)")
    if args.output.suffix.lower() != ".json":
        raise MpqError(f"-o {args.output}: the report is JSON; name it report.json (the .md and .png go next to it)")
    check_output_file(args.output)
    if args.keep_libs is not None:
        check_output_dir(args.keep_libs, "--keep-libs")
    check_work_dirs(args)
    for name in ("eval_size", "repeat", "rounds"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise MpqError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.max_time is not None and args.max_time <= 0:
        raise MpqError(f"--max-time must be positive, got {args.max_time}")
    if args.min_repeat_ms is not None and args.min_repeat_ms < 0:
        raise MpqError(f"--min-repeat-ms must not be negative, got {args.min_repeat_ms}")
    return SweepOptions(
        model=args.model, target=args.target, rates=parse_rates(args.rates), methods=parse_methods(args.methods),
        rpc=args.rpc, tracker=args.tracker, key=args.key, eval_size=args.eval_size, rounds=args.rounds,
        repeat=args.repeat,
        max_seconds=args.max_time, min_repeat_ms=args.min_repeat_ms,
        input_shape=args.input_shape, calib=args.calib, calib_size=args.calib_size, mean=args.mean, std=args.std,
        observer=args.observer, ptq=ptq_from_args(args), cache_dir=args.cache_dir, g=args.g, stage=args.stage,
        keep_libs=args.keep_libs,
        setup=not args.no_setup, tuning=tuning_from_args(args))


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the sweep and print where the report went."""
    from tvm_mpq.calibration import make_observer
    from tvm_mpq.sweep import run_sweep

    options = options_from_args(args)
    make_observer(options.observer)  # fail fast on a bad observer name
    run_sweep(options, args.output)
    return 0
