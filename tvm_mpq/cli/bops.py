"""``tvm-mpq bops``: validate a precision config against a model and report its BOPs."""

from __future__ import annotations

import argparse
from pathlib import Path

from tvm_mpq.cli.common import layer_names, load_graph
from tvm_mpq.cli.failures import stage


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bops", help="validate a precision config against a model and report its BOPs")
    p.add_argument("model", help="zoo name, .onnx file or torch.export .pt2 file")
    p.add_argument("--input-shape", action="append", metavar="NAME:DIMS")
    p.add_argument("--config", type=Path, required=True, help="precision config JSON")
    p.set_defaults(func=cmd_bops)


def cmd_bops(args: argparse.Namespace) -> int:
    from tvm_mpq.allocation import bops, bops_ratio, bops_reduction_rate, raw_reduction_rate
    from tvm_mpq.config import PrecisionConfig
    from tvm_mpq.graph import build_layer_table

    with stage("config"):
        config = PrecisionConfig.load(args.config)  # syntax first: no model import for a broken file
    graph = load_graph(args)
    with stage("config", layer_names(graph)):
        table = build_layer_table(graph)
        config.validate(table)
    p = config.precisions()
    print(f"{args.config}: valid for {args.model} ({len(table)} layers)")
    print(f"BOPs {bops(table, p):.4g}; BOPs reduction rate {bops_reduction_rate(table, p):.2f}%; "
          f"bops_ratio {bops_ratio(table, p):.4f}; raw rate (Eq. 17) {raw_reduction_rate(table, p):.2f}%; "
          f"{len(config.fp32_layers())} fp32 layer(s)")
    return 0
