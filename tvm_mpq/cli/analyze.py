"""``tvm-mpq analyze``: rank layers by quantization sensitivity (and allocate for --rate)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tvm_mpq.cli.common import (add_model_options, check_work_dirs, layer_names, load_model_and_calibration,
                                 ptq_from_args)
from tvm_mpq.cli.failures import stage
from tvm_mpq.errors import MpqError
from tvm_mpq.output_files import StagedOutputs, check_output_file, staged_outputs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="rank layers by quantization sensitivity")
    add_model_options(p)
    from tvm_mpq.sensitivity import method_names

    p.add_argument("--method", default="quantunev2", help=f"one of {', '.join(method_names())}")
    p.add_argument("--g", type=float, default=2.0, help="QuantuneV2 weight-delta weight (g > 1)")
    p.add_argument("--rate", type=float, help="also allocate for this BOPs reduction rate (0..100) and write the config")
    p.add_argument("-o", "--output", type=Path, required=True, help="sensitivity report JSON")
    p.add_argument("--config-out", type=Path, help="precision config JSON (default: OUTPUT with .rate<R>.json)")
    m = p.add_argument_group("method options (top1, mixquant, pandey, quantunev2-e2e)")
    m.add_argument("--top1-samples", type=int, metavar="N",
                   help="top1: samples the task metric is measured on (default: all labelled / calibration samples)")
    m.add_argument("--top1-labels", choices=("auto", "true", "pseudo"),
                   help="top1: true labels (error if the model has none), fp32 pseudo-labels, or auto (default)")
    m.add_argument("--qem", metavar="Q[,Q...]", help="mixquant: quantization error multipliers >= 1 (default 1,4,16,64,256)")
    m.add_argument("--candidates", metavar="WxAy,...", help="pandey: bit-width candidates, 'default' (W4A8,W8A8,W8A16) "
                   "or 'extended' (adds W4A16, W16A16)")
    m.add_argument("--bops-budget", metavar="R[,R...]", help="pandey: bops_ratio budgets (BOPs / BOPs_fp32, 0..1]; "
                   "default: the cost of each homogeneous lower candidate")
    m.add_argument("--sqnr-budget", metavar="DB[,DB...]", help="pandey: output-SQNR (fidelity) budgets in dB")
    m.add_argument("--pandey-samples", type=int, metavar="N", help="pandey: calibration samples for phases 1 and 2 (default all)")
    m.add_argument("--pandey-curve-points", type=int, metavar="N",
                   help="pandey: phase-2 points measured for the Pareto plot (default 32; budget points always)")
    m.add_argument("--e2e-budget", type=int, metavar="K",
                   help="quantunev2-e2e: layers of QuantuneV2's list measured end to end (default all)")
    m.add_argument("--e2e-samples", type=int, metavar="N",
                   help="quantunev2-e2e: calibration samples per end-to-end measurement (default all)")
    m.add_argument("--e2e-order", choices=("output-sqnr", "per-bop"),
                   help="quantunev2-e2e: order of the measured layers: lowest output SQNR first (default) "
                        "or output noise per BOP saved")
    p.set_defaults(func=cmd_analyze)


_METHOD_OPTIONS = {  # CLI option -> (method, constructor keyword)
    "top1_samples": ("top1", "samples"), "top1_labels": ("top1", "labels"), "qem": ("mixquant", "qems"),
    "candidates": ("pandey", "candidates"), "bops_budget": ("pandey", "bops_budgets"),
    "sqnr_budget": ("pandey", "sqnr_budgets"), "pandey_samples": ("pandey", "samples"),
    "pandey_curve_points": ("pandey", "curve_points"), "e2e_budget": ("quantunev2-e2e", "budget"),
    "e2e_samples": ("quantunev2-e2e", "samples"), "e2e_order": ("quantunev2-e2e", "order"),
}


def method_options(args: argparse.Namespace) -> dict:
    """Constructor options of ``args.method`` from its CLI options; MpqError for another method's."""
    options = {}
    for attr, (method, keyword) in _METHOD_OPTIONS.items():
        value = getattr(args, attr, None)
        if value is None:
            continue
        if method != args.method:
            raise MpqError(f"--{attr.replace('_', '-')} applies to --method {method}, not {args.method}")
        options[keyword] = value
    return options


def _eval_data(model: str):
    """Labelled samples and task of a zoo model (None, "generic" for model files)."""
    from tvm_mpq import zoo
    from tvm_mpq.sensitivity import EvalData

    if model not in zoo.names():
        return None, "generic"
    entry = zoo.get(model)
    return (EvalData(*entry.labelled(None)) if entry.labelled else None), entry.task


def cmd_analyze(args: argparse.Namespace) -> int:
    from tvm_mpq.allocation import allocate_by_rate
    from tvm_mpq.calibration import CalibrationCache, make_observer
    from tvm_mpq.config.build import build_config
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.sensitivity import analyze, g_option, make_method

    check_output_file(args.output)
    if args.config_out is not None:
        if args.rate is None:
            raise MpqError("--config-out names the precision config of --rate R: give --rate too")
        check_output_file(args.config_out, "--config-out")
        if args.config_out.resolve() == args.output.resolve():
            raise MpqError(f"--config-out {args.config_out} is the sensitivity report's path (-o): give another")
    check_work_dirs(args)
    options = method_options(args)
    make_method(args.method, **g_option(args.method, args.g), **options)  # fail fast on a bad name or option (--g too)
    make_observer(args.observer)
    if args.rate is not None and not 0 <= args.rate <= 100:
        raise MpqError(f"--rate {args.rate} is outside 0..100 (percent BOPs reduction)")
    graph, feeds = load_model_and_calibration(args)
    names = layer_names(graph)
    with stage("analyze", names):
        table = build_layer_table(graph)  # (not empty: load_model_and_calibration checks)
    print(f"{graph.name}: {len(table)} MAC layers, {table.total_macs() / 1e6:.1f} M MACs; "
          f"{len(feeds)} calibration samples; method {args.method}")
    eval_data, task = _eval_data(args.model)
    with stage("analyze", names):
        report = analyze(graph, feeds, args.method, observer=args.observer, g=args.g,
                         cache=CalibrationCache(args.cache_dir), table=table, options=options,
                         eval_data=eval_data, task=task)
    with staged_outputs() as outputs:
        with stage("write"):
            report.save(outputs.path(args.output))
        print(_summary(report))
        print(f"sensitivity report: {args.output}")
        with stage("write"):
            artifacts = report.write_artifacts(outputs.path(args.output))
        for path in artifacts:
            print(f"{args.method} artifact: {outputs.final(path)}")
        ranges: dict = {}
        if args.rate is not None or report.allocations:
            from tvm_mpq.calibration import calibrate

            ranges = report.measurement.act_ranges
            if not ranges:  # weight-only methods: calibrate the activation quantizers now
                with stage("calibrate", names):
                    ranges = {v: r[8] for v, r in calibrate(graph, feeds, table.activation_operands(), args.observer,
                                                           cache=CalibrationCache(args.cache_dir)).items()}
        for allocation in report.allocations:
            _write_allocation(args, graph, table, ranges, allocation, feeds, outputs)
        if args.rate is not None:
            with stage("analyze", names):
                precisions = allocate_by_rate(table, report.sensitivity, args.rate)
                config = build_config(graph, table, precisions, ranges,
                                      {"method": args.method, "requested_rate": args.rate, "observer": args.observer,
                                       "calib_size": len(feeds), "bias_correction": False})
                _refine_quantizers(args, graph, config, feeds)
            out = args.config_out or args.output.with_suffix(f".rate{args.rate:g}.json")
            with stage("write"):
                config.save(outputs.path(out))
            fp32 = config.fp32_layers()
            print(f"rate {args.rate:g}%: achieved BOPs reduction {config.provenance['bops_reduction_rate']:.1f}% "
                  f"(bops_ratio {config.provenance['bops_ratio']:.4f}); {len(fp32)} layer(s) stay fp32: "
                  f"{', '.join(fp32) if fp32 else '-'}")
            print(f"precision config: {out}")
    return 0


def _refine_quantizers(args: argparse.Namespace, graph, config, feeds) -> None:
    """Per-channel depthwise inputs and bias correction of the config's int8 layers, when asked
    for (``--channel-act``, ``--bias-correction``, ``--measured-bias``)."""
    from tvm_mpq.calibration import CalibrationCache
    from tvm_mpq.ptq.refine import refine_config

    refine_config(config, feeds, ptq_from_args(args), measured=graph, graph=graph, cache=CalibrationCache(args.cache_dir))


def _write_allocation(args: argparse.Namespace, graph, table, ranges: dict, allocation, feeds,
                      outputs: StagedOutputs) -> None:
    """Print one bit-width assignment and write it as a precision config (where the format can
    express it: weights 2..8 bits, activations 2..8 or 16 bits, or fp32)."""
    from tvm_mpq.allocation import FP32
    from tvm_mpq.config.build import build_config
    from tvm_mpq.config.precision_config import ACT_BITS, WEIGHT_BITS

    row = allocation.to_json(table)
    print(f"{allocation.label}: bops_ratio {row['bops_ratio']:.4f} (BOPs reduction rate "
          f"{row['bops_reduction_rate']:.1f}%), {row['n_simulated']}/{len(table)} layer(s) simulated (no int8 kernel)"
          + "".join(f", {k} {v:.4g}" for k, v in allocation.info.items() if isinstance(v, float)))
    bad = [n for n, p in allocation.precisions.items()
           if p != FP32 and (p.w_bits not in WEIGHT_BITS or p.a_bits not in ACT_BITS)]
    if bad:
        print(f"  no precision config: {len(bad)} layer(s) use bit-widths the config format cannot hold ({bad[0]}: "
              f"W{allocation.precisions[bad[0]].w_bits}A{allocation.precisions[bad[0]].a_bits})")
        return
    with stage("analyze", layer_names(graph)):
        config = build_config(graph, table, allocation.precisions, ranges,
                              {"method": args.method, "allocation": allocation.label, **allocation.info,
                               "kernels": allocation.kernels(), "observer": args.observer, "calib_size": len(feeds),
                               "bias_correction": False})
        _refine_quantizers(args, graph, config, feeds)
    out = args.output.with_suffix(f".{allocation.key}.json")
    with stage("write"):
        config.save(outputs.path(out))
    print(f"  precision config: {out}")


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
    scalars = {k: v for k, v in report.method_info.items() if isinstance(v, (int, float, str))}
    if scalars:
        lines.append(f"{report.method}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                      for k, v in scalars.items()))
    return "\n".join(lines)


def _f(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"
