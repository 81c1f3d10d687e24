"""``tvm-mpq analyze``: rank layers by quantization sensitivity (and allocate for --rate)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tvm_mpq.cli.common import add_model_options, load_model_and_calibration
from tvm_mpq.errors import MpqError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="rank layers by quantization sensitivity")
    add_model_options(p)
    from tvm_mpq.sensitivity import method_names

    p.add_argument("--method", default="quantunev2", help=f"one of {', '.join(method_names())}")
    p.add_argument("--g", type=float, default=2.0, help="QuantuneV2 weight-delta weight (g > 1)")
    p.add_argument("--rate", type=float, help="also allocate for this BOPs reduction rate (0..100) and write the config")
    p.add_argument("-o", "--output", type=Path, required=True, help="sensitivity report JSON")
    p.add_argument("--config-out", type=Path, help="precision config JSON (default: OUTPUT with .rate<R>.json)")
    p.set_defaults(func=cmd_analyze)


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
    graph, feeds = load_model_and_calibration(args)
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
