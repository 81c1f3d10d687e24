"""Options and loading shared by the subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from tvm_mpq.cli.failures import stage
from tvm_mpq.errors import MpqError
from tvm_mpq.output_files import check_output_dir
from tvm_mpq.ptq.options import WEIGHT_ROUNDINGS


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="zoo name, .onnx file or torch.export .pt2 file")
    p.add_argument("--input-shape", action="append", metavar="NAME:DIMS",
                   help="static shape for a (dynamic) input, e.g. x:1x3x224x224; repeatable, or comma-separated: ids:1x64,length:1")
    p.add_argument("--calib", metavar="DIR|FILE.npz", help="calibration images or .npz of inputs "
                   "(default: the zoo model's bundled samples)")
    p.add_argument("--calib-size", type=int, default=16, metavar="N", help="calibration samples (default 16)")
    p.add_argument("--mean", type=float, nargs="+", default=[0.0], help="image preprocessing mean (for --calib DIR)")
    p.add_argument("--std", type=float, nargs="+", default=[1.0], help="image preprocessing std (for --calib DIR)")
    p.add_argument("--cache-dir", type=Path, help="calibration cache (default ~/.cache/tvm-mpq or $TVM_MPQ_CACHE)")
    add_quantizer_options(p)


DEFAULT_OBSERVER = "minmax"
"""The activation observer of analyze/compile/sweep/export-onnx unless ``--observer``."""
DEFAULT_BIAS_CORRECTION = True
"""Bias correction is on unless ``--no-bias-correction``: on efficientnet-lite0 it took top-1
agreement with fp32 from 0.750 to 0.906 fully int8 and from 0.844 to 0.969 at 50% (output SQNR
17.9 -> 22.5 dB, 21.6 -> 25.1 dB; ``benchmarks/quant_quality.py``, README "Quantization
quality"), where the mse / percentile observers and cross-layer equalization measured no better."""
DEFAULT_CHANNEL_ACT = True
"""Depthwise conv inputs are quantized per channel unless ``--no-channel-act``
(:mod:`tvm_mpq.ptq.channel_ranges`; measured in docs/results.md "Per-channel depthwise inputs")."""


DEFAULT_MEASURED_BIAS = False
"""Depthwise convs keep the analytic bias correction unless ``--measured-bias``
(:mod:`tvm_mpq.ptq.measured_bias`)."""


DEFAULT_WEIGHT_ROUNDING = "nearest"
"""Int8 weights are rounded to nearest unless ``--weight-rounding hessian``
(:mod:`tvm_mpq.ptq.weight_rounding`; measured in docs/results.md "Hessian-weighted weight rounding")."""


def add_quantizer_options(p: argparse.ArgumentParser) -> None:
    """``--observer``, ``--equalize``, ``--bias-correction`` (how the int8 layers are quantized;
    recorded in the precision config's provenance)."""
    q = p.add_argument_group("quantizers (recorded in the config's provenance)")
    q.add_argument("--observer", default=DEFAULT_OBSERVER,
                   help=f"activation observer: minmax, percentile, mse, entropy (default {DEFAULT_OBSERVER})")
    q.add_argument("--equalize", action="store_true",
                   help="cross-layer equalization of conv pairs (DFQ scales; exact in fp32, ReLU6 bounds made per channel)")
    q.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=DEFAULT_BIAS_CORRECTION,
                   help="correct each int8 layer's bias by the expected error of its quantized weight "
                        f"(one fp32 pass over the calibration set; default {'on' if DEFAULT_BIAS_CORRECTION else 'off'}; "
                        "batch-norm folded stages only, off at --stage A)")
    q.add_argument("--channel-act", action=argparse.BooleanOptionalAction, default=DEFAULT_CHANNEL_ACT,
                   help="quantize the input of each int8 depthwise conv per channel (free in the integer kernel; "
                        f"two fp32 passes over the calibration set; default {'on' if DEFAULT_CHANNEL_ACT else 'off'})")
    q.add_argument("--measured-bias", action=argparse.BooleanOptionalAction, default=DEFAULT_MEASURED_BIAS,
                   help="with bias correction: correct each int8 depthwise conv by its mean output error measured on "
                        "the int8 model, in execution order (one compile, one pass over the calibration set per "
                        f"depthwise conv; default {'on' if DEFAULT_MEASURED_BIAS else 'off'})")
    q.add_argument("--weight-rounding", choices=WEIGHT_ROUNDINGS, default=DEFAULT_WEIGHT_ROUNDING,
                   help="round each int8 weight to nearest, or up / down to minimise its layer's output error on the "
                        "calibration inputs (hessian: one fp32 pass; batch-norm folded stages only, nearest at "
                        f"--stage A; default {DEFAULT_WEIGHT_ROUNDING})")


def ptq_from_args(args: argparse.Namespace):
    """The :class:`~tvm_mpq.ptq.PtqOptions` of ``--equalize`` / ``--bias-correction`` / ``--channel-act``."""
    from tvm_mpq.ptq import PtqOptions

    if args.measured_bias and not args.bias_correction:
        raise MpqError("--measured-bias refines bias correction: drop --no-bias-correction or add --no-measured-bias")
    return PtqOptions(equalize=args.equalize, bias_correction=args.bias_correction, channel_act=args.channel_act,
                      measured_bias=args.measured_bias, weight_rounding=args.weight_rounding)


def add_tuning_options(p: argparse.ArgumentParser, device_options: bool = False) -> None:
    """``--tune-trials N``, ``--tuning-db DIR``, ``--tune-timeout S``, ``--tune-strategy``,
    ``--no-kernels`` (MetaSchedule, see tvm_mpq/compiler/tuning.py); ``device_options``: also
    ``--rpc`` / ``--tracker`` / ``--key``, the device candidates are measured on (``sweep`` has
    its own, for timing and tuning alike)."""
    p.add_argument("--tune-trials", type=int, default=0, metavar="N",
                   help="MetaSchedule trials per kernel not yet in the tuning database of the target and device "
                        "(XGBoost cost model; default 0: use the database and the built-in kernels only); for "
                        "another architecture than this host's the candidates are cross-compiled here and measured "
                        "on the device given by --rpc or --tracker/--key")
    p.add_argument("--tuning-db", type=Path, metavar="DIR",
                   help="root of the tuning databases, one per target and device (default ~/.cache/tvm-mpq/tuning "
                        "or $TVM_MPQ_TUNING_DIR)")
    p.add_argument("--tune-timeout", type=float, metavar="S",
                   help="tuning on a device: the longest one measurement (session, upload, run) and the wait for a "
                        "free server of the key may take (default 300 s)")
    p.add_argument("--tune-strategy", choices=["evolutionary", "replay-trace"], default="evolutionary",
                   help="MetaSchedule search: evolutionary (default; XGBoost cost model) or replay-trace (random "
                        "samples of the design space, no cost model: for smoke runs with a few trials)")
    p.add_argument("--no-kernels", action="store_true",
                   help="do not apply tvm-mpq's kernel schedules (TVM's unscheduled default; for comparisons)")
    if device_options:
        p.set_defaults(tuning_device_options=True)
        where = p.add_mutually_exclusive_group()
        where.add_argument("--rpc", metavar="HOST:PORT",
                           help="with --tune-trials: measure candidates on this TVM RPC server (its database is "
                                "the device's)")
        where.add_argument("--tracker", metavar="HOST:PORT",
                           help="with --tune-trials: measure candidates on the servers of --key at this tracker, "
                                "in parallel")
        p.add_argument("--key", help="with --tracker: the server key (it also names the device's database); "
                                     "with --rpc: the server's key")


def tuning_from_args(args: argparse.Namespace):
    """The :class:`~tvm_mpq.compiler.tuning.TuningOptions` of ``--tune-trials/--tuning-db/
    --tune-timeout/--tune-strategy/--no-kernels``, on the device of ``--rpc`` / ``--tracker --key``
    when the command has those options for tuning (``compile``)."""
    from tvm_mpq.compiler.tuning import DEFAULT_TUNING_ROOT, DEVICE_TIMEOUT_S, TuningDevice, TuningOptions

    if args.tune_trials < 0:
        raise MpqError(f"--tune-trials must be >= 0, got {args.tune_trials}")
    timeout = DEVICE_TIMEOUT_S if args.tune_timeout is None else args.tune_timeout
    if timeout <= 0:
        raise MpqError(f"--tune-timeout must be positive, got {timeout:g}")
    device = None
    if getattr(args, "tuning_device_options", False) and (args.rpc or args.tracker):
        device = TuningDevice(rpc=args.rpc, tracker=args.tracker, key=args.key)
    elif getattr(args, "tuning_device_options", False) and args.key:
        raise MpqError("--key needs --rpc (the server's key) or --tracker (the key to request)")
    replay = args.tune_strategy == "replay-trace"
    return TuningOptions(trials=args.tune_trials, root=args.tuning_db or DEFAULT_TUNING_ROOT,
                         kernels=not args.no_kernels, device=device, device_timeout_s=timeout,
                         strategy=args.tune_strategy, cost_model="random" if replay else "xgb")


def check_work_dirs(args: argparse.Namespace) -> None:
    """MpqError unless the directories the command writes besides its outputs (``--cache-dir``,
    ``--tuning-db``, where given) are directories it can write in; before any work."""
    for option in ("cache_dir", "tuning_db"):
        directory = getattr(args, option, None)
        if directory is not None:
            check_output_dir(directory, f"--{option.replace('_', '-')}")


def layer_names(graph) -> dict[str, str]:
    """Names an error message may mention (weight parameters, layer names) -> the layer's name."""
    return {**graph.layer_names, **{layer: layer for layer in graph.layer_names.values()}}


def load_graph(args: argparse.Namespace):
    """The model of ``args.model`` / ``--input-shape`` (stage ``import``)."""
    from tvm_mpq.frontends import parse_input_shapes
    from tvm_mpq.zoo import load_model

    shapes = parse_input_shapes(args.input_shape)
    with stage("import"):
        return load_model(args.model, shapes)


def load_model_and_calibration(args: argparse.Namespace):
    """The model (cross-layer equalized with ``--equalize``) and its calibration feeds."""
    from tvm_mpq.calibration import load_calibration
    from tvm_mpq.ptq.equalization import graph_for_options

    from tvm_mpq.graph import build_layer_table

    graph = load_graph(args)
    if len(build_layer_table(graph)) == 0:  # before calibration: nothing to calibrate for
        raise MpqError(f"model '{graph.name}' has no conv/matmul layers to quantize")
    with stage("equalize", layer_names(graph)):
        graph = graph_for_options(graph, ptq_from_args(args))
    mean = args.mean[0] if len(args.mean) == 1 else tuple(args.mean)
    std = args.std[0] if len(args.std) == 1 else tuple(args.std)
    with stage("calibrate", layer_names(graph)):
        feeds = load_calibration(graph, args.calib, args.calib_size, mean, std)
    return graph, feeds


def add_config_source_options(p: argparse.ArgumentParser, verb: str) -> None:
    """``--rate R | --config cfg.json`` (one required), ``--method``, ``--g`` and ``--int8-attention``."""
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--rate", type=float, help=f"BOPs reduction rate 0..100: analyze, allocate, then {verb}")
    how.add_argument("--config", type=Path, help="precision config JSON (from `tvm-mpq analyze --rate`)")
    p.add_argument("--method", default="quantunev2", help="sensitivity method for --rate (default quantunev2)")
    p.add_argument("--g", type=float, default=2.0, help="QuantuneV2 weight-delta weight (g > 1)")
    p.add_argument("--int8-attention", action="store_true",
                   help="with --rate: matmuls of two activations (attention) may run int8 too (default: fp32)")


def config_from_args(args: argparse.Namespace, ir_stage: str = "A->C"):
    """(graph, precision config) from ``--config`` (its layers checked against the model before
    anything else; a precision the integer kernels cannot run is the lowering's error) or from
    ``--rate`` (analyzed with ``--method`` on the calibration set, layers without an integer
    kernel kept fp32; ``--rate 0`` without ``--equalize`` is the fp32 model, no calibration
    needed)."""
    from tvm_mpq.calibration import CalibrationCache
    from tvm_mpq.config import PrecisionConfig
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.ptq.equalization import graph_for_config

    if args.rate is not None and not 0 <= args.rate <= 100:
        raise MpqError(f"--rate {args.rate} is outside 0..100 (percent BOPs reduction)")
    if args.rate is not None:
        from tvm_mpq.sensitivity import g_option, make_method

        make_method(args.method, **g_option(args.method, args.g))  # a bad --method or --g before any work
    if args.config is not None:
        with stage("config"):
            config = PrecisionConfig.load(args.config)  # syntax first: no model import for a broken file
        graph = load_graph(args)
        with stage("config", layer_names(graph)):
            config.validate(build_layer_table(graph))  # before any compilation
        with stage("equalize", layer_names(graph)):
            graph = graph_for_config(graph, config)  # the graph rewrites the config was made on
        return graph, config
    if args.rate == 0 and not getattr(args, "equalize", False):  # fp32: nothing to calibrate or rank
        from tvm_mpq.compiler.pipeline import fp32_config

        graph = load_graph(args)
        config = fp32_config(graph)
        config.provenance.update({"rate": 0.0, "bops_reduction_rate": 0.0, "bops_ratio": 1.0})
        print(f"{graph.name}: rate 0%: every layer fp32 (no calibration or analysis)")
        return graph, config
    graph, feeds = load_model_and_calibration(args)
    ptq = ptq_from_args(args)
    applied = ptq.at_stage(ir_stage)
    print(f"{graph.name}: analyzing ({args.method}, stage {'C' if ir_stage == 'C' else 'A'}) on "
          f"{len(feeds)} samples for rate {args.rate:g}%; quantizers: {args.observer} observer, {ptq.describe()}")
    with stage("analyze", layer_names(graph)):
        config, _ = config_for_rate(graph, feeds, args.rate, args.method, observer=args.observer, g=args.g,
                                    cache=CalibrationCache(args.cache_dir), stage=ir_stage,
                                    bias_correction=applied.bias_correction, channel_act=applied.channel_act,
                                    measured_bias=applied.measured_bias, weight_rounding=applied.weight_rounding,
                                    int8_attention=args.int8_attention)
        kept = config.provenance.get("fp32_no_integer_kernel", [])
    if kept:
        print(f"{len(kept)} layer(s) have no integer kernel and stay fp32 ({', '.join(kept[:3])}"
              f"{', ...' if len(kept) > 3 else ''}); achieved rate {config.provenance['bops_reduction_rate']:.1f}%")
    return graph, config
