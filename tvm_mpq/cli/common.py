"""Options and loading shared by the subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_model_options(p: argparse.ArgumentParser) -> None:
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


def load_model_and_calibration(args: argparse.Namespace):
    from tvm_mpq.calibration import load_calibration
    from tvm_mpq.frontends import load_model, parse_input_shapes

    graph = load_model(args.model, parse_input_shapes(args.input_shape))
    mean = args.mean[0] if len(args.mean) == 1 else tuple(args.mean)
    std = args.std[0] if len(args.std) == 1 else tuple(args.std)
    feeds = load_calibration(graph, args.calib, args.calib_size, mean, std)
    return graph, feeds
