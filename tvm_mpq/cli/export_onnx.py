"""``tvm-mpq export-onnx``: a precision config (given, or analyzed for --rate) -> ONNX QDQ model.

The model onnxruntime / TensorRT run carries the compiled model's per-layer decisions and scales
(:mod:`tvm_mpq.export.onnx_qdq`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tvm_mpq.cli.common import add_model_options, load_model_and_calibration
from tvm_mpq.errors import MpqError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-onnx", help="write a precision config as an ONNX QDQ model (onnxruntime, TensorRT)")
    add_model_options(p)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--rate", type=float, help="BOPs reduction rate 0..100: analyze, allocate, then export")
    how.add_argument("--config", type=Path, help="precision config JSON (from `tvm-mpq analyze --rate`)")
    p.add_argument("--method", default="quantunev2", help="sensitivity method for --rate (default quantunev2)")
    p.add_argument("--g", type=float, default=2.0, help="QuantuneV2 weight-delta weight (g > 1)")
    p.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write (model_qdq.onnx)")
    p.set_defaults(func=cmd_export_onnx)


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from tvm_mpq.calibration import CalibrationCache
    from tvm_mpq.compiler.validate import check_integer_config, keep_unsupported_fp32
    from tvm_mpq.config import PrecisionConfig
    from tvm_mpq.config.for_rate import config_for_rate
    from tvm_mpq.export.fp32_onnx import fp32_onnx, recording_sources
    from tvm_mpq.export.onnx_qdq import build_qdq_onnx
    from tvm_mpq.frontends import load_model, parse_input_shapes
    from tvm_mpq.graph import build_layer_table

    if args.rate is not None and not 0 <= args.rate <= 100:
        raise MpqError(f"--rate {args.rate} is outside 0..100 (percent BOPs reduction)")
    if args.output.suffix.lower() != ".onnx":
        raise MpqError(f"-o {args.output}: the output must be an .onnx file")
    with recording_sources() as torch_modules:
        if args.config is not None:
            config = PrecisionConfig.load(args.config)  # syntax first: no model import for a broken file
            graph = load_model(args.model, parse_input_shapes(args.input_shape))
            check_integer_config(config, build_layer_table(graph))
        else:
            graph, feeds = load_model_and_calibration(args)
            print(f"{graph.name}: analyzing ({args.method}) on {len(feeds)} samples for rate {args.rate:g}%")
            config, _ = config_for_rate(graph, feeds, args.rate, args.method, observer=args.observer, g=args.g,
                                        cache=CalibrationCache(args.cache_dir))
            kept = keep_unsupported_fp32(config, build_layer_table(graph))
            if kept:
                print(f"{len(kept)} layer(s) have no integer kernel and stay fp32 ({', '.join(kept[:3])}"
                      f"{', ...' if len(kept) > 3 else ''}); achieved rate {config.provenance['bops_reduction_rate']:.1f}%")
    exported = build_qdq_onnx(graph, config, fp32_onnx(graph, torch_modules.get(graph.name)))
    path = exported.save(args.output)
    config_path = path.with_suffix(".config.json")
    config.provenance.update({"exported_onnx": str(path)})
    config.save(config_path)
    print(f"exported {graph.name}: {len(exported.int8_layers)} int8 layer(s), {len(exported.fp32_layers)} fp32; "
          f"{exported.n_act_qdq} activation QDQ pair(s), {exported.n_weight_dq} int8 weight(s), "
          f"{exported.n_bias_dq} int32 bias(es), {exported.n_bn_folded} batch-norm(s) folded")
    print(f"onnx:   {path}\nconfig: {config_path}")
    return 0
