"""``tvm-mpq eval``: the QuantuneV2 paper's experiments on zoo models (Tables 2, 3, 8; Fig. 3/8).

Writes ``OUT/report.json``, ``OUT/report.md`` and per model ``OUT/<model>/*.png`` plus every
method's sensitivity report under ``OUT/<model>/sensitivity/``. Progress goes to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tvm_mpq.cli.stage_option import SOURCE, add_stage_option
from tvm_mpq.errors import MpqError
from tvm_mpq.output_files import check_output_dir, staged_outputs


def _list(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _rates(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in _list(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"rates must be numbers, e.g. 100,50,40,30,20 (got '{value}')") from None


def register(sub: argparse._SubParsersAction) -> None:
    from tvm_mpq.evaluation.method_runs import METHODS
    from tvm_mpq.evaluation.experiment import DEFAULT_MODELS, DEFAULT_RATES

    p = sub.add_parser("eval", help="the paper's experiments (Tables 2/3/8, recovery curves) on zoo models")
    p.add_argument("--models", type=_list, default=DEFAULT_MODELS, metavar="M[,M...]",
                   help=f"zoo models (default {','.join(DEFAULT_MODELS)})")
    p.add_argument("--methods", type=_list, default=METHODS, metavar="M[,M...]",
                   help=f"methods compared (default and choices: {','.join(METHODS)})")
    p.add_argument("--rates", type=_rates, default=DEFAULT_RATES, metavar="R[,R...]",
                   help="BOPs reduction rates in percent (default 100,50,40,30,20)")
    p.add_argument("-o", "--output", type=Path, default=Path("out/eval"), help="output folder (default out/eval)")
    s = p.add_argument_group("sample counts (default: per-model profile, see tvm_mpq/evaluation/model_data.py)")
    s.add_argument("--calib-size", type=int, metavar="N", help="calibration samples")
    s.add_argument("--eval-samples", type=int, metavar="N", help="evaluation samples (labelled models: first N)")
    s.add_argument("--top1-samples", type=int, metavar="N", help="Top-1 order's samples")
    s.add_argument("--pandey-samples", type=int, metavar="N", help="Pandey et al.'s phase-1/2 samples")
    s.add_argument("--curve-points", type=int, metavar="N", help="measured points per recovery curve")
    s.add_argument("--curve-samples", type=int, metavar="N", help="evaluation samples the recovery curves run on")
    add_stage_option(p, "IR graph the baselines analyse (QuantuneV2: always the folded graph); default source",
                     option="--baseline-stage", default=SOURCE, measured_only=True)
    p.add_argument("--observer", default="minmax", help="activation observer (default minmax)")
    p.add_argument("--g", type=float, default=2.0, help="QuantuneV2 weight-delta weight (g > 1)")
    p.add_argument("--mixquant-qem", type=float, default=4.0, help="MixQuant QEM of its rate points (default 4)")
    p.add_argument("--no-ablation", action="store_true", help="skip Table 8")
    p.add_argument("--no-local-metrics", action="store_true", help="skip the local-metric study (Fig. 3)")
    p.add_argument("--no-method-curves", action="store_true", help="skip the methods' recovery curves (Fig. 8)")
    p.add_argument("--check-integer", action="store_true",
                   help="also compile QuantuneV2's first rate < 100 with the integer compiler and compare")
    p.add_argument("--report-from", type=Path, metavar="REPORT.json",
                   help="only rewrite report.md next to an existing report.json (no analysis)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from tvm_mpq import zoo
    from tvm_mpq.calibration import make_observer
    from tvm_mpq.evaluation.experiment import EvalOptions, run_eval

    if args.report_from is not None:
        return _rewrite_markdown(args.report_from)
    check_output_dir(args.output, "-o")
    unknown = [m for m in args.models if m not in zoo.names()]
    if unknown:
        raise MpqError(f"unknown zoo model(s) {', '.join(unknown)} (zoo: {', '.join(zoo.names())})")
    make_observer(args.observer)
    for name in ("calib_size", "eval_samples", "top1_samples", "pandey_samples", "curve_samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise MpqError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    options = EvalOptions(
        out=args.output, models=args.models, methods=args.methods, rates=args.rates,
        counts={"calib": args.calib_size, "eval": args.eval_samples, "top1": args.top1_samples,
                "pandey": args.pandey_samples, "curve_points": args.curve_points,
                "curve_samples": args.curve_samples},
        baseline_stage=args.baseline_stage, observer=args.observer, g=args.g, mixquant_qem=args.mixquant_qem,
        ablation=not args.no_ablation, local_metrics=not args.no_local_metrics,
        method_curves=not args.no_method_curves, check_integer=args.check_integer)
    options.validate()
    os.environ.setdefault("TVM_MPQ_NO_PROGRESS", "1")
    start = time.perf_counter()

    def log(message: str) -> None:
        elapsed = time.perf_counter() - start
        print(f"[{int(elapsed) // 60:3d}:{int(elapsed) % 60:02d}] {message}", flush=True)

    log(f"eval: models {', '.join(options.models)}; methods {', '.join(options.methods)}; "
        f"rates {', '.join(f'{r:g}' for r in options.rates)} -> {args.output}")
    report = run_eval(options, log)
    print(f"report: {args.output / 'report.md'}", file=sys.stdout)
    return 0 if report["models"] else 1


def _rewrite_markdown(path: Path) -> int:
    import json

    from tvm_mpq.evaluation.report_markdown import markdown

    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise MpqError(f"cannot read eval report {path}: {err}") from None
    if not isinstance(report, dict) or "models" not in report:
        raise MpqError(f"{path} is not a tvm-mpq eval report.json")
    out = path.with_name("report.md")
    with staged_outputs() as outputs:
        outputs.path(out).write_text(markdown(report))
    print(f"report: {out}")
    return 0
