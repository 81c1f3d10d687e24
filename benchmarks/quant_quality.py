"""Quantization quality: tvm-mpq's int8 models against fp32, beside onnxruntime's quantize_static.

For each model, on the same calibration samples (``load_calibration``: the zoo's first
``--calib-size``, as the CLI) and the same held-out samples (``held_out``: the sweep's and eval's
named evaluation set, e.g. ``efficientnet-lite0/held-out[16:48]``), at each BOPs reduction rate:

* tvm-mpq (the ``--methods`` ranking, the integer model compiled for this host) with each
  quantizer variant ``OBSERVER[+cle][+bc][+ca][+mb]``: the activation observer (minmax,
  percentile, mse, entropy), cross-layer equalization (``+cle``), bias correction (``+bc``),
  per-channel depthwise inputs (``+ca``) and depthwise bias corrections measured on the int8
  model (``+mb``, ``--measured-bias``) and Hessian-weighted weight rounding (``+hr``,
  ``--weight-rounding hessian``), e.g. ``minmax`` (the CLI default before this benchmark),
  ``mse+bc``, ``minmax+bc+ca`` (the CLI default now);
* onnxruntime ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations, after
  ``quant_pre_process``, opset 13) with its MinMax / Percentile / Entropy calibrators; below 100%
  the Conv/Gemm nodes of the layers tvm-mpq keeps fp32 (the first variant's decisions) are
  passed as ``nodes_to_exclude``, so both quantize the same layers.

Every figure is scored by ``tvm_mpq.evaluation.fidelity`` (the sweep's and eval's one code path)
against the same fp32 reference (tvm-mpq's fp32 build on this host): top-1 / top-5 agreement and
output SQNR, LFW accuracy (mtcnn-rnet), label accuracy (ppocr-cls), decoded-text agreement and
similarity (ppocr-rec).

    python benchmarks/quant_quality.py [--models efficientnet-lite0] [--rates 100,50]
        [--variants minmax,mse,percentile,minmax+bc,mse+bc,minmax+cle,minmax+cle+bc,mse+cle+bc]
        [--methods quantunev2[,quantunev2-e2e]] [--ort minmax,percentile,entropy]

Writes out/bench/quality/report.json, report.md and report.png (top-1 agreement per variant and
rate; skipped without matplotlib), and prints the table. With more than one ``--methods``
ranking the report adds ``tvm-mpq eval``'s tally for the quantizers users get
(:func:`ranking_tally`): quantunev2-e2e and QuantuneV2 against each other ranking, better / equal
/ behind per requested rate, and the held-out samples only one of the two builds changes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

OBSERVERS = ("minmax", "percentile", "mse", "entropy")
ORT_CALIBRATORS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
DEFAULT_VARIANTS = "minmax,percentile,mse,minmax+bc,minmax+bc+ca,minmax+bc+ca+mb,mse+bc,percentile+bc,minmax+cle,minmax+cle+bc,mse+cle+bc"


def parse_variant(spec: str) -> tuple[str, bool, bool, bool, bool, str]:
    """``OBSERVER[+cle][+bc][+ca][+mb][+hr]`` -> (observer, cross-layer equalization, bias
    correction, per-channel depthwise inputs, depthwise bias corrections measured on the int8
    model, weight rounding: ``hessian`` with ``+hr``, else ``nearest``)."""
    parts = spec.split("+")
    if parts[0] not in OBSERVERS or any(p not in ("cle", "bc", "ca", "mb", "hr") for p in parts[1:]) \
            or len(set(parts)) != len(parts) or ("mb" in parts and "bc" not in parts):
        raise ValueError(f"variant {spec!r} is not OBSERVER[+cle][+bc][+ca][+mb][+hr] with OBSERVER one of "
                         f"{', '.join(OBSERVERS)} (+mb with +bc)")
    return parts[0], "cle" in parts, "bc" in parts, "ca" in parts, "mb" in parts, "hessian" if "hr" in parts else "nearest"


# -- tvm-mpq ---------------------------------------------------------------------------------

def tvm_points(name: str, graph, calib: list, task: str, reference, rates: list[float], variant: str,
               method: str, cache) -> list[dict]:
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.evaluation.fidelity import figures
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.ptq.equalization import equalize

    observer, cle, bias_correction, channel_act, measured_bias, weight_rounding = parse_variant(variant)
    start = time.perf_counter()
    measured = equalize(graph) if cle else graph
    table = build_layer_table(measured)
    points, report = [], None
    for rate in rates:
        config, report = config_for_rate(measured, calib, rate, method, observer=observer, cache=cache,
                                         report=report, bias_correction=bias_correction, channel_act=channel_act,
                                         measured_bias=measured_bias, weight_rounding=weight_rounding)
        keep_unsupported_fp32(config, table)
        compiled = compile_model(measured, config)
        outs = [compiled.run(f) for f in reference.samples.feeds]
        points.append({"tool": "tvm-mpq", "variant": variant, "method": method, "requested_rate": rate,
                       "bops_reduction_rate": round(config.provenance["bops_reduction_rate"], 1),
                       "fp32_layers": config.fp32_layers(), "bias_corrected": compiled.stats.get("bias_corrected", 0),
                       **figures(task, outs, reference), "flips": top1_flips(task, outs, reference)})
        print(f"{name} tvm-mpq {method} {variant} rate {rate:g}: {_short(points[-1])}", flush=True)
    points[0]["seconds"] = round(time.perf_counter() - start, 1)
    points[0]["analysis"] = {"seconds": round(report.seconds, 1), "inference_passes": report.measurement.inference_passes,
                             "method_info": {k: v for k, v in report.method_info.items()
                                             if isinstance(v, (int, float, str))}}
    return points


def input_grid_point(name: str, graph, calib: list, task: str, reference) -> dict:
    """The fp32 model with only its inputs on the 8-bit grid (:mod:`benchkit.input_grid`): what
    the first quantize alone costs every int8 build."""
    from benchkit.input_grid import on_input_grid

    from tvm_mpq.evaluation.fidelity import figures
    from tvm_mpq.target_build import compile_for_runs

    compiled = reference.model or compile_for_runs(graph)  # (the fp32 build the reference ran on)
    outs = [compiled.run(f) for f in on_input_grid(reference.samples.feeds, calib)]
    point = {"tool": "fp32, inputs on the 8-bit grid", "variant": "-", "method": "-", "requested_rate": 0,
             "fp32_layers": None,
             **figures(task, outs, reference), "flips": top1_flips(task, outs, reference)}
    print(f"{name} fp32 with its inputs on the 8-bit grid: {_short(point)}", flush=True)
    return point


def _short(point: dict) -> str:
    values = {**point["fidelity"], **point["accuracy"]}
    flips = "".join(f"; flip #{f['sample']} (fp32 {f['fp32_top2'][0]:.3f} / {f['fp32_top2'][1]:.3f})"
                    for f in point.get("flips", []))
    return ", ".join(f"{k} {v:.3f}" for k, v in values.items()) + flips


def _top2_probabilities(output) -> np.ndarray:
    """The two highest class probabilities of a sample's first output (softmax unless it already
    is a probability vector)."""
    r = np.asarray(output[0], np.float64).reshape(-1)
    if r.min() < 0 or abs(r.sum() - 1.0) >= 1e-3:
        r = np.exp(r - r.max())
        r /= r.sum()
    return np.sort(r)[::-1][:2]


def is_classifier(task: str, reference) -> bool:
    """A task scored by top-1 agreement whose first output is one class vector per sample (not
    one per position, as a text recognizer's)."""
    from tvm_mpq.evaluation.fidelity import fidelity_metric_names

    first = np.asarray(reference.outputs[0][0])
    return "top1_agreement" in fidelity_metric_names(task) and first.size == first.shape[-1]


def top1_flips(task: str, outputs: list, reference) -> list[dict]:
    """The held-out samples whose top-1 class differs from fp32's (classification tasks), each with
    fp32's two highest probabilities: how close to a tie fp32 itself was."""
    if not is_classifier(task, reference):
        return []
    return [{"sample": k, "fp32_top2": [round(float(v), 4) for v in _top2_probabilities(ref)]}
            for k, (out, ref) in enumerate(zip(outputs, reference.outputs))
            if np.argmax(np.asarray(out[0])) != np.argmax(np.asarray(ref[0]))]


def near_ties(task: str, reference, within: float = 0.1) -> int | None:
    """How many held-out samples fp32 itself classifies with its top two probabilities closer than
    ``within`` (None for other tasks)."""
    if not is_classifier(task, reference):
        return None
    return sum(int(np.subtract(*_top2_probabilities(ref)) < within) for ref in reference.outputs)


# -- onnxruntime -----------------------------------------------------------------------------

def layer_nodes(model, graph, names: list[str]) -> list[str]:
    """The ONNX node (of ``model``) of each named layer of ``graph``, found by weight content."""
    from tvm_mpq.export.onnx_graph import OnnxGraph, onnx_weight, same_directions
    from tvm_mpq.graph import build_layer_table

    g = OnnxGraph(model)
    table = build_layer_table(graph)
    taken: set[str] = set()
    out = []
    for name in names:
        layer = table.by_name[name]
        if layer.weight_param is None:
            continue
        weight = layer.weight_operand(graph.params)
        for node in g.nodes:
            w = onnx_weight(g, node)
            if node.name in taken or w is None or w.operand.shape != weight.shape:
                continue
            if (node.op_type == "Conv") == ("conv" in layer.kind) and same_directions(w.operand, weight,
                                                                                     layer.channel_axis):
                taken.add(node.name)
                out.append(node.name)
                break
        else:
            raise RuntimeError(f"layer {name} has no ONNX node")
    return out


def ort_points(name: str, graph, fp32_model, calib: list, task: str, reference,
               exclusions: dict[float, list[str]], calibrator: str, work: Path) -> list[dict]:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from tvm_mpq.evaluation.fidelity import figures
    from tvm_mpq.export.onnx_graph import with_opset

    source = work / f"{name}.onnx"
    prepared = work / f"{name}.pre.onnx"
    if not prepared.exists():  # per-channel QDQ (DequantizeLinear axis) needs opset >= 13
        onnx.save(with_opset(fp32_model, 13), str(source))
        quant_pre_process(str(source), str(prepared))
    model = onnx.load(str(prepared))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calib)

        def get_next(self):
            return next(self.items, None)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    points = []
    for rate, fp32_layers in exclusions.items():
        out_path = work / f"{name}.{calibrator}.{rate:g}.onnx"
        start = time.perf_counter()
        quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, ORT_CALIBRATORS[calibrator]),
                        nodes_to_exclude=layer_nodes(model, graph, fp32_layers))
        seconds = time.perf_counter() - start
        session = ort.InferenceSession(str(out_path), options, providers=["CPUExecutionProvider"])
        outs = [[np.asarray(o) for o in session.run(None, f)] for f in reference.samples.feeds]
        points.append({"tool": "onnxruntime", "variant": calibrator, "requested_rate": rate,
                       "fp32_layers": fp32_layers, "seconds": round(seconds, 1), **figures(task, outs, reference),
                       "flips": top1_flips(task, outs, reference)})
        print(f"{name} onnxruntime {calibrator} rate {rate:g}: {_short(points[-1])}", flush=True)
    return points


# -- driver ----------------------------------------------------------------------------------

def held_out_up_to(name: str, calib_size: int, eval_size: int):
    """The held-out set of ``eval_size`` samples, or of as many as the model has after its
    calibration samples (ppocr-rec bundles 37 text strips: 21 after 16)."""
    from tvm_mpq.errors import MpqError
    from tvm_mpq.evaluation.sample_set import held_out

    for size in range(eval_size, 0, -1):
        try:
            return held_out(name, calib_size, size)
        except MpqError:
            if size == 1:
                raise
    raise ValueError(f"--eval-size must be positive, got {eval_size}")


def run_model(name: str, args: argparse.Namespace, work: Path) -> dict:
    from benchkit.models import load_model

    from tvm_mpq import zoo
    from tvm_mpq.calibration import CalibrationCache, load_calibration
    from tvm_mpq.evaluation.fidelity import figures, fp32_reference

    entry = zoo.get(name)
    graph, fp32_model = load_model(name)
    calib = load_calibration(graph, None, args.calib_size)
    samples = held_out_up_to(name, max(args.calib_size, args.eval_start), args.eval_size)
    reference = fp32_reference(graph, samples)
    result = {"model": name, "task": entry.task, "calib_samples": len(calib), "eval": samples.to_json(),
              "fp32": figures(entry.task, reference.outputs, reference),
              "fp32_near_ties": near_ties(entry.task, reference), "points": []}
    result["points"].append(input_grid_point(name, graph, calib, entry.task, reference))
    cache = CalibrationCache(args.cache_dir)
    for method in args.methods:
        variants = args.variants if method == args.methods[0] else args.method_variants
        for variant in variants:
            result["points"] += tvm_points(name, graph, calib, entry.task, reference, args.rates, variant, method,
                                           cache)
    first = next(p for p in result["points"] if p["tool"] == "tvm-mpq")
    exclusions = {p["requested_rate"]: p["fp32_layers"] for p in result["points"]
                  if p["tool"] == "tvm-mpq" and (p["variant"], p["method"]) == (first["variant"], first["method"])}
    for calibrator in args.ort:
        result["points"] += ort_points(name, graph, fp32_model, calib, entry.task, reference, exclusions,
                                       calibrator, work)
    return result


def metric_names(result: dict) -> list[str]:
    point = next(iter(result["points"]), None)
    return [] if point is None else [*point["fidelity"], *point["accuracy"]]


OURS = ("quantunev2-e2e", "quantunev2")
"""The rankings the tally compares with every other ``--methods`` ranking (the refined one first)."""


def ranking_tally(result: dict) -> list[str]:
    """Markdown lines: each of :data:`OURS` measured here against every other ranking built with
    the same quantizers, as ``tvm-mpq eval``'s tally counts it (better / equal / behind at the
    requested rates) on the model's first figure and on output SQNR, with the worst gap and
    the held-out samples only one of the two changes (fp32's own top two probabilities), so a
    difference of one near-tie sample reads as what it is. Empty with fewer than two rankings."""
    points = [p for p in result["points"] if p["tool"] == "tvm-mpq" and p.get("method", "-") != "-"]
    methods = list(dict.fromkeys(p["method"] for p in points))
    names = metric_names(result)
    if len(methods) < 2 or not names:
        return []
    figure = names[0]
    by_key = {(p["method"], p["variant"], p["requested_rate"]): p for p in points}
    lines = ["Ranking tally (requested rates; better / equal / behind):", "",
             f"| ranking | against | quantizers | {figure} | worst gap | output SQNR | samples only one changes |",
             "|---|---|---|---|---|---|---|"]
    for ours in (m for m in OURS if m in methods):
        for other in (m for m in methods if m != ours and not (m in OURS and OURS.index(m) < OURS.index(ours))):
            for variant in dict.fromkeys(p["variant"] for p in points if p["method"] == ours):
                rates = [r for (m, v, r) in by_key if m == ours and v == variant and (other, variant, r) in by_key]
                if not rates:
                    continue
                pairs = [(by_key[(ours, variant, r)], by_key[(other, variant, r)]) for r in sorted(rates, reverse=True)]
                values = [(_figure(a, figure), _figure(b, figure)) for a, b in pairs]
                counts, gaps = _counts(values), [a - b for a, b in values]
                sqnr = (_counts([(a["fidelity"]["output_sqnr_db"], b["fidelity"]["output_sqnr_db"]) for a, b in pairs],
                                tolerance=0.05) if all("output_sqnr_db" in p["fidelity"] for pair in pairs for p in pair)
                        else "-")
                lines.append(f"| {ours} | {other} | {variant} | {counts} | {min(gaps):+.3f} | {sqnr} | "
                             f"{_one_sided_flips(pairs)} |")
    return lines + [""]


def _figure(point: dict, name: str) -> float:
    """One of a point's figures (fidelity to fp32, or accuracy against labels)."""
    return point["fidelity"][name] if name in point["fidelity"] else point["accuracy"][name]


def _counts(pairs: list[tuple[float, float]], tolerance: float = 1e-9) -> str:
    """``better / equal / behind`` over ``(ours, theirs)`` pairs (higher is better)."""
    better = sum(a > b + tolerance for a, b in pairs)
    behind = sum(a < b - tolerance for a, b in pairs)
    return f"{better} / {len(pairs) - better - behind} / {behind}"


def _one_sided_flips(pairs: list[tuple[dict, dict]]) -> str:
    """Per rate, the samples whose top-1 class one build changes and the other keeps
    (``+`` only the other ranking's build changes it, ``-`` only ours)."""
    cells = []
    for ours, theirs in pairs:
        mine = {f["sample"]: f for f in ours.get("flips", [])}
        other = {f["sample"]: f for f in theirs.get("flips", [])}
        marks = [f"-#{k} ({mine[k]['fp32_top2'][0]:.3f} / {mine[k]['fp32_top2'][1]:.3f})" for k in sorted(set(mine) - set(other))]
        marks += [f"+#{k} ({other[k]['fp32_top2'][0]:.3f} / {other[k]['fp32_top2'][1]:.3f})"
                  for k in sorted(set(other) - set(mine))]
        if marks:
            cells.append(f"{ours['requested_rate']:g}%: " + ", ".join(marks))
    return "; ".join(cells) or "-"


def markdown(report: dict) -> str:
    host = report["host"]
    lines = [f"# Quantization quality vs fp32", "",
             f"CPU: {host['cpu']}; flags: {host['flags_text']}; {host['cores']} cores; tvm {host['tvm_version']}, "
             f"onnxruntime {host['onnxruntime_version']}; {report['created']}", "",
             f"Command: `{report['command']}`", ""]
    for r in report["results"]:
        names = metric_names(r)
        labelled = r["fp32"]["accuracy"]
        lines += [f"## {r['model']} ({r['eval']['name']}: {r['eval']['samples']} held-out samples, "
                  f"{r['calib_samples']} calibration)", ""]
        if labelled:
            lines += ["fp32 against true labels: " + ", ".join(f"{k} {v:.3f}" for k, v in labelled.items()), ""]
        if r.get("fp32_near_ties") is not None:
            lines += [f"fp32's top two classes lie within 0.1 probability of each other on {r['fp32_near_ties']} of "
                      f"{r['eval']['samples']} held-out samples.", ""]
        lines += ["| rate req. | tool | ranking | quantizers | fp32 layers | " + " | ".join(names)
                  + " | top-1 changed on (fp32's top two probabilities) |",
                  "|---|---|---|---|---|" + "---|" * len(names) + "---|"]
        for p in sorted(r["points"], key=lambda p: (-p["requested_rate"], p["tool"] != "tvm-mpq")):
            values = {**p["fidelity"], **p["accuracy"]}
            cells = " | ".join(f"{values[n]:.1f}" if n.endswith("_db") else f"{values[n]:.3f}" for n in names)
            ranking = p.get("method", "(tvm-mpq's)" if p["fp32_layers"] else "-")
            flips = ", ".join(f"#{f['sample']} ({f['fp32_top2'][0]:.2f} / {f['fp32_top2'][1]:.2f})"
                              for f in p.get("flips", [])) or "-"
            lines.append(f"| {p['requested_rate']:g} | {p['tool']} | {ranking} | {p['variant']} | "
                         f"{'all' if p['fp32_layers'] is None else len(p['fp32_layers'])} | {cells} | {flips} |")
        lines.append("")
        lines += ranking_tally(r)
    return "\n".join(lines)


def plot(report: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    results = [r for r in report["results"] if r["points"]]
    fig, axes = plt.subplots(len(results), 1, figsize=(9, 3.2 * len(results)), squeeze=False)
    for ax, r in zip(axes[:, 0], results):
        metric = "top1_agreement" if "top1_agreement" in r["points"][0]["fidelity"] else metric_names(r)[0]
        rates = sorted({p["requested_rate"] for p in r["points"]}, reverse=True)
        labels = list(dict.fromkeys(f"{p['tool']}:{p.get('method', '')}:{p['variant']}" for p in r["points"]))
        width = 0.8 / len(rates)
        for k, rate in enumerate(rates):
            by_label = {f"{p['tool']}:{p.get('method', '')}:{p['variant']}": p["fidelity"].get(metric, np.nan)
                        for p in r["points"] if p["requested_rate"] == rate}
            ax.bar(np.arange(len(labels)) + k * width, [by_label.get(lb, np.nan) for lb in labels], width,
                   label=f"rate {rate:g}%")
        ax.set_xticks(np.arange(len(labels)) + width * (len(rates) - 1) / 2)
        ax.set_xticklabels([lb.replace("tvm-mpq:", "").replace("onnxruntime::", "ORT ") for lb in labels],
                           rotation=35, ha="right", fontsize=7)
        ax.set_ylim(min(0.5, ax.get_ylim()[0]), 1.02)
        ax.set_ylabel(metric)
        ax.set_title(f"{r['model']} ({r['eval']['samples']} held-out samples)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet-lite0")
    parser.add_argument("--rates", default="100,50")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="tvm-mpq quantizer variants OBSERVER[+cle][+bc][+ca]")
    parser.add_argument("--methods", default="quantunev2",
                        help="tvm-mpq sensitivity rankings; the first runs every variant, the others --method-variants")
    parser.add_argument("--method-variants", default="", help="variants of the rankings after the first "
                        "(default: the first variant)")
    parser.add_argument("--ort", default="minmax,percentile,entropy", help="onnxruntime calibrators ('' for none)")
    parser.add_argument("--calib-size", type=int, default=16)
    parser.add_argument("--eval-size", type=int, default=32)
    parser.add_argument("--eval-start", type=int, default=0,
                        help="first held-out sample (default: the one after the calibration samples); a fixed "
                             "start compares calibration sizes on the same held-out samples")
    parser.add_argument("--cache-dir", type=Path, help="calibration cache (default: tvm-mpq's)")
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/quality"))
    args = parser.parse_args()
    command = "python " + " ".join(["benchmarks/quant_quality.py", *sys.argv[1:]])
    args.rates = [float(r) for r in args.rates.split(",")]
    args.variants = [v for v in args.variants.split(",") if v]
    args.methods = [m for m in args.methods.split(",") if m]
    args.method_variants = [v for v in args.method_variants.split(",") if v] or args.variants[:1]
    args.ort = [c for c in args.ort.split(",") if c]
    try:
        for v in {*args.variants, *args.method_variants}:
            parse_variant(v)
    except ValueError as err:
        parser.error(str(err))
    unknown = [c for c in args.ort if c not in ORT_CALIBRATORS]
    if unknown or not args.variants:
        parser.error(f"unknown onnxruntime calibrators {unknown} or no variants")
    os.environ.setdefault("TVM_MPQ_NO_PROGRESS", "1")
    args.out.mkdir(parents=True, exist_ok=True)

    from benchkit.machine import flags_text, machine_info

    from tvm_mpq.runtime.executor import host_target

    host = machine_info(os.cpu_count() or 1, host_target())
    host["flags_text"] = flags_text(host)
    report = {"created": time.strftime("%Y-%m-%d %H:%M"), "command": command, "host": host,
              "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
              "results": []}
    with tempfile.TemporaryDirectory(prefix="quant-quality-") as tmp:
        for name in args.models.split(","):
            start = time.perf_counter()
            report["results"].append(run_model(name, args, Path(tmp)))
            report["results"][-1]["seconds"] = round(time.perf_counter() - start, 1)
            (args.out / "report.json").write_text(json.dumps(report, indent=1))
    md = markdown(report)
    (args.out / "report.md").write_text(md)
    written = ["report.json", "report.md"] + (["report.png"] if plot(report, args.out / "report.png") else [])
    print(md)
    print(f"written: {', '.join(str(args.out / w) for w in written)}")


if __name__ == "__main__":
    main()
