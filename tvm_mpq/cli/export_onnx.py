"""``tvm-mpq export-onnx``: a precision config (given, or analyzed for --rate) -> ONNX QDQ model.

The model onnxruntime / TensorRT run carries the compiled model's per-layer decisions and scales
(:mod:`tvm_mpq.export.onnx_qdq`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tvm_mpq.cli.common import (add_config_source_options, add_model_options, check_work_dirs, config_from_args,
                                 layer_names)
from tvm_mpq.cli.failures import stage
from tvm_mpq.errors import MpqError
from tvm_mpq.output_files import check_output_file, staged_outputs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-onnx", help="write a precision config as an ONNX QDQ model (onnxruntime, TensorRT)")
    add_model_options(p)
    add_config_source_options(p, "export")
    p.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write (model_qdq.onnx)")
    p.set_defaults(func=cmd_export_onnx)


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from tvm_mpq.export.fp32_onnx import fp32_onnx, recording_sources
    from tvm_mpq.export.onnx_qdq import build_qdq_onnx

    if args.output.suffix.lower() != ".onnx":
        raise MpqError(f"-o {args.output}: the output must be an .onnx file")
    check_output_file(args.output)
    check_work_dirs(args)
    with recording_sources() as torch_modules:
        graph, config = config_from_args(args)
    with stage("export", layer_names(graph)):
        exported = build_qdq_onnx(graph, config, fp32_onnx(graph, torch_modules.get(graph.name)))
    config_path = args.output.with_suffix(".config.json")
    config.provenance.update({"exported_onnx": str(args.output)})
    with staged_outputs() as outputs, stage("write"):
        exported.save(outputs.path(args.output))
        config.save(outputs.path(config_path))
    print(f"exported {graph.name}: {len(exported.int8_layers)} int8 layer(s), {len(exported.fp32_layers)} fp32; "
          f"{exported.n_act_qdq} activation QDQ pair(s), {exported.n_weight_dq} int8 weight(s), "
          f"{exported.n_bias_dq} int32 bias(es), {exported.n_bn_folded} batch-norm(s) folded")
    print(f"onnx:   {args.output}\nconfig: {config_path}")
    return 0
