"""``tvm-mpq`` command line (DESIGN "CLI contract")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tvm_mpq.errors import MpqError


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="zoo name, .onnx file or torch.export .pt2 file")
    p.add_argument("--input-shape", action="append", metavar="NAME:DIMS",
                   help="static shape for a (dynamic) input, e.g. x:1x3x224x224; repeatable")
    p.add_argument("--calib", metavar="DIR|FILE.npz", help="calibration images or .npz of inputs "
                   "(default: the zoo model's bundled samples)")
    p.add_argument("--calib-size", type=int, default=16, metavar="N", help="calibration samples (default 16)")
    p.add_argument("--mean", type=float, nargs="+", default=[0.0], help="image preprocessing mean (for --calib DIR)")
    p.add_argument("--std", type=float, nargs="+", default=[1.0], help="image preprocessing std (for --calib DIR)")
    p.add_argument("--observer", default="minmax", help="activation observer: minmax, percentile, mse, entropy")
    p.add_argument("--cache-dir", type=Path, help="calibration cache (default ~/.cache/tvm-mpq or $TVM_MPQ_CACHE)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvm-mpq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="rank layers by quantization sensitivity")
    _add_model_options(p)
    from tvm_mpq.sensitivity import method_names

    p.add_argument("--method", default="quantunev2", help=f"one of {', '.join(method_names())}")
    p.add_argument("--g", type=float, default=2.0, help="QuantuneV2 weight-delta weight (g > 1)")
    p.add_argument("--rate", type=float, help="also allocate for this BOPs reduction rate (0..100) and write the config")
    p.add_argument("-o", "--output", type=Path, required=True, help="sensitivity report JSON")
    p.add_argument("--config-out", type=Path, help="precision config JSON (default: OUTPUT with .rate<R>.json)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("bops", help="validate a precision config against a model and report its BOPs")
    p.add_argument("model", help="zoo name, .onnx file or torch.export .pt2 file")
    p.add_argument("--input-shape", action="append", metavar="NAME:DIMS")
    p.add_argument("--config", type=Path, required=True, help="precision config JSON")
    p.set_defaults(func=cmd_bops)
    return parser


def cmd_bops(args: argparse.Namespace) -> int:
    from tvm_mpq.allocation import bops, bops_ratio, bops_reduction_rate, raw_reduction_rate
    from tvm_mpq.config import PrecisionConfig
    from tvm_mpq.frontends import load_model, parse_input_shapes
    from tvm_mpq.graph import build_layer_table

    config = PrecisionConfig.load(args.config)  # syntax first: no model import for a broken file
    table = build_layer_table(load_model(args.model, parse_input_shapes(args.input_shape)))
    config.validate(table)
    p = config.precisions()
    print(f"{args.config}: valid for {args.model} ({len(table)} layers)")
    print(f"BOPs {bops(table, p):.4g}; BOPs reduction rate {bops_reduction_rate(table, p):.2f}%; "
          f"bops_ratio {bops_ratio(table, p):.4f}; raw rate (Eq. 17) {raw_reduction_rate(table, p):.2f}%; "
          f"{len(config.fp32_layers())} fp32 layer(s)")
    return 0


def _load(args: argparse.Namespace):
    from tvm_mpq.calibration import load_calibration
    from tvm_mpq.frontends import load_model, parse_input_shapes

    graph = load_model(args.model, parse_input_shapes(args.input_shape))
    mean = args.mean[0] if len(args.mean) == 1 else tuple(args.mean)
    std = args.std[0] if len(args.std) == 1 else tuple(args.std)
    feeds = load_calibration(graph, args.calib, args.calib_size, mean, std)
    return graph, feeds


def cmd_analyze(args: argparse.Namespace) -> int:
    from tvm_mpq.allocation import allocate_by_rate
    from tvm_mpq.calibration import CalibrationCache, make_observer
    from tvm_mpq.config.build import build_config
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.sensitivity import analyze, make_method

    make_method(args.method)  # fail fast on a bad name
    make_observer(args.observer)
    if args.rate is not None and not 0 <= args.rate <= 100:
        raise MpqError(f"--rate {args.rate} is outside 0..100 (percent BOPs reduction)")
    graph, feeds = _load(args)
    table = build_layer_table(graph)
    if len(table) == 0:
        raise MpqError(f"model '{graph.name}' has no conv/matmul layers to quantize")
    print(f"{graph.name}: {len(table)} MAC layers, {table.total_macs() / 1e6:.1f} M MACs; "
          f"{len(feeds)} calibration samples; method {args.method}")
    report = analyze(graph, feeds, args.method, observer=args.observer, g=args.g,
                     cache=CalibrationCache(args.cache_dir), table=table)
    report.save(args.output)
    print(_summary(report))
    print(f"sensitivity report: {args.output}")
    if args.rate is not None:
        from tvm_mpq.calibration import calibrate

        ranges = report.measurement.act_ranges
        if not ranges:  # weight-only methods: calibrate the activation quantizers now
            ranges = {v: r[8] for v, r in calibrate(graph, feeds, table.activation_operands(), args.observer,
                                                   cache=CalibrationCache(args.cache_dir)).items()}
        precisions = allocate_by_rate(table, report.sensitivity, args.rate)
        config = build_config(graph, table, precisions, ranges,
                              {"method": args.method, "requested_rate": args.rate, "observer": args.observer,
                               "calib_size": len(feeds)})
        out = args.config_out or args.output.with_suffix(f".rate{args.rate:g}.json")
        config.save(out)
        fp32 = config.fp32_layers()
        print(f"rate {args.rate:g}%: achieved BOPs reduction {config.provenance['bops_reduction_rate']:.1f}% "
              f"(bops_ratio {config.provenance['bops_ratio']:.4f}); {len(fp32)} layer(s) stay fp32: "
              f"{', '.join(fp32) if fp32 else '-'}")
        print(f"precision config: {out}")
    return 0


def _summary(report) -> str:
    m = report.measurement
    lines = [f"analysis ({report.method}): {report.seconds:.1f} s, {m.inference_passes} inference pass(es) "
             f"over {report.calib_size} samples, {len(report.table)} layers",
             f"{'rank':>4}  {'layer':<36} {'W-SQNR':>7} {'A-SQNR':>7} {'W-delta':>8} {'A-delta':>8} {'MSE':>10}"]
    for rank, name in enumerate(report.sensitivity[:10]):
        lm, d = m.metrics[name], report.details.get(name, {})
        lines.append(f"{rank:>4}  {name[:36]:<36} {_f(lm.w_sqnr_db, 7, 2)} {_f(lm.a_sqnr_db, 7, 2)} "
                     f"{_f(d.get('w_sqnr_delta'), 8, 3)} {_f(d.get('a_sqnr_delta'), 8, 3)} {_f(lm.a_mse, 10, 4)}"
                     + ("  (MSE > 5x mean)" if d.get("high_mse") else ""))
    if len(report.sensitivity) > 10:
        lines.append(f"  ... {len(report.sensitivity) - 10} more in the report")
    return "\n".join(lines)


def _f(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MpqError as err:
        print(f"tvm-mpq: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
