"""Quantization quality: tvm-mpq's int8 models against fp32, beside onnxruntime's quantize_static.

For each model, on the same calibration samples (the zoo's first ``--calib-size``) and the same
held-out samples (the sweep's evaluation set: the next ``--eval-size`` photos / text strips /
labelled LFW faces), at each BOPs reduction rate:

* tvm-mpq (QuantuneV2 ranking, the integer model compiled for this host) with each quantizer
  variant: ``today`` (min/max observer, nothing else: the behaviour before bias correction),
  ``bc`` (bias correction, the CLI default), ``bc+cle`` (and cross-layer equalization),
  ``bc+percentile`` / ``bc+mse`` (other activation observers);
* onnxruntime ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations, after
  ``quant_pre_process``) with its MinMax / Percentile / Entropy calibrators; below 100% the
  Conv/Gemm nodes of the layers tvm-mpq keeps fp32 (the first variant's decisions) are passed
  as ``nodes_to_exclude``, so both quantize the same layers.

Every figure is against the same fp32 reference (tvm-mpq's fp32 build, which agrees with the
source framework to 1e-4): top-1 / top-5 agreement and output SQNR, LFW accuracy (mtcnn-rnet),
label accuracy (ppocr-cls), decoded-text agreement and similarity (ppocr-rec).

    python benchmarks/quant_quality.py [--models efficientnet-lite0,mtcnn-rnet,ppocr-cls,ppocr-rec]
        [--rates 100,50] [--variants today,bc,bc+cle,bc+percentile,bc+mse] [--methods quantunev2,quantunev2-e2e]
        [--ort minmax,percentile,entropy]

Writes out/bench/quant_quality/report.json and report.md (and prints the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = {  # name -> (observer, bias correction, cross-layer equalization)
    "today": ("minmax", False, False),
    "bc": ("minmax", True, False),
    "bc+cle": ("minmax", True, True),
    "bc+percentile": ("percentile", True, False),
    "bc+mse": ("mse", True, False),
    "cle": ("minmax", False, True),
}
ORT_CALIBRATORS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
METRICS = {  # task -> metrics reported (label metrics are added where labels exist)
    "imagenet": ("top1_agreement", "top5_agreement", "output_sqnr_db"),
    "face-binary": ("top1_agreement", "output_sqnr_db"),
    "text-direction": ("top1_agreement", "output_sqnr_db"),
    "text-recognition": ("text_agreement", "text_similarity", "output_sqnr_db"),
}


def metrics(task: str, outputs: list, reference: list, labels: np.ndarray | None) -> dict[str, float]:
    from tvm_mpq.evaluation.task_metrics import make_task_metric

    names = list(METRICS.get(task, ("top1_agreement", "output_sqnr_db")))
    if labels is not None:
        names.append("lfw_accuracy" if task == "face-binary" else "accuracy")
    return {n: float(make_task_metric(n)(outputs, reference, labels)) for n in names}


# -- tvm-mpq ---------------------------------------------------------------------------------

def tvm_points(name: str, graph, calib: list, data, task: str, reference: list, rates: list[float],
               variant: str, method: str, cache) -> list[dict]:
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.config.for_rate import config_for_rate
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.ptq.equalization import equalize

    observer, bias_correction, cle = VARIANTS[variant]
    start = time.perf_counter()
    measured = equalize(graph) if cle else graph
    table = build_layer_table(measured)
    points, report = [], None
    for rate in rates:
        config, report = config_for_rate(measured, calib, rate, method, observer=observer, cache=cache,
                                         report=report, bias_correction=bias_correction)
        keep_unsupported_fp32(config, table)
        compiled = compile_model(measured, config)
        outs = [compiled.run(f) for f in data.feeds]
        points.append({"tool": "tvm-mpq", "variant": variant, "method": method, "requested_rate": rate,
                       "bops_reduction_rate": round(config.provenance["bops_reduction_rate"], 1),
                       "fp32_layers": config.fp32_layers(),
                       "metrics": metrics(task, outs, reference, data.labels)})
        print(f"{name} tvm-mpq {method} {variant} rate {rate:g}: {points[-1]['metrics']}", flush=True)
    points[0]["seconds"] = round(time.perf_counter() - start, 1)
    points[0]["analysis"] = {"seconds": round(report.seconds, 1), "inference_passes": report.measurement.inference_passes,
                             **{k: v for k, v in report.method_info.items() if isinstance(v, (int, float, str))}}
    return points


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


def ort_points(name: str, graph, fp32_model, calib: list, data, task: str, reference: list,
               exclusions: dict[float, list[str]], calibrator: str, work: Path) -> list[dict]:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

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
        outs = [[np.asarray(o) for o in session.run(None, f)] for f in data.feeds]
        points.append({"tool": "onnxruntime", "variant": calibrator, "requested_rate": rate,
                       "fp32_layers": fp32_layers, "seconds": round(seconds, 1),
                       "metrics": metrics(task, outs, reference, data.labels)})
        print(f"{name} onnxruntime {calibrator} rate {rate:g}: {points[-1]['metrics']}", flush=True)
    return points


# -- driver ----------------------------------------------------------------------------------

def run_model(name: str, args: argparse.Namespace, work: Path) -> dict:
    from tvm_mpq import zoo
    from tvm_mpq.calibration import CalibrationCache
    from tvm_mpq.export.fp32_onnx import load_with_source
    from tvm_mpq.runtime.executor import compile_graph
    from tvm_mpq.sweep.data import eval_set

    entry = zoo.get(name)
    graph, fp32_model = load_with_source(name)
    calib = entry.calibration(args.calib_size)
    data = eval_set(name, calib, args.eval_size, calib_given=False)
    fp32 = compile_graph(graph)
    reference = [fp32.run(f) for f in data.feeds]
    result = {"model": name, "task": entry.task, "calib_samples": len(calib), "eval": data.to_json(),
              "fp32": metrics(entry.task, reference, reference, data.labels), "points": []}
    cache = CalibrationCache()
    for method in args.methods:
        for variant in args.variants:
            result["points"] += tvm_points(name, graph, calib, data, entry.task, reference, args.rates, variant,
                                           method, cache)
    first = next(p for p in result["points"] if p["tool"] == "tvm-mpq")
    exclusions = {p["requested_rate"]: p["fp32_layers"] for p in result["points"]
                  if p["tool"] == "tvm-mpq" and (p["variant"], p["method"]) == (first["variant"], first["method"])}
    for calibrator in args.ort:
        result["points"] += ort_points(name, graph, fp32_model, calib, data, entry.task, reference, exclusions,
                                       calibrator, work)
    return result


def markdown(report: dict) -> str:
    lines = [f"# Quantization quality vs fp32 ({report['host']['cpu_flags']}; {report['created']})", ""]
    for r in report["results"]:
        names = list(next(iter(r["points"]))["metrics"]) if r["points"] else []
        lines += [f"## {r['model']} ({r['eval']['samples']} held-out samples, {r['calib_samples']} calibration)", "",
                  "fp32: " + ", ".join(f"{k} {v:.3f}" for k, v in r["fp32"].items() if k not in
                                       ("output_sqnr_db", "top1_agreement", "top5_agreement", "text_agreement",
                                        "text_similarity")) or "reference", "",
                  "| rate req. | tool | ranking | quantizers | fp32 layers | " + " | ".join(names) + " |",
                  "|---|---|---|---|---|" + "---|" * len(names)]
        for p in sorted(r["points"], key=lambda p: (-p["requested_rate"], p["tool"] != "tvm-mpq")):
            values = " | ".join(f"{p['metrics'][n]:.1f}" if n.endswith("_db") else f"{p['metrics'][n]:.3f}"
                                for n in names)
            ranking = p.get("method", "(tvm-mpq's)" if p["fp32_layers"] else "-")
            lines.append(f"| {p['requested_rate']:g} | {p['tool']} | {ranking} | {p['variant']} | "
                         f"{len(p['fp32_layers'])} | {values} |")
        lines.append("")
    return "\n".join(lines)


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return " ".join(f for f in wanted if f in flags) or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet-lite0,mtcnn-rnet,ppocr-cls,ppocr-rec")
    parser.add_argument("--rates", default="100,50")
    parser.add_argument("--variants", default="today,bc,bc+cle,bc+percentile,bc+mse",
                        help=f"tvm-mpq quantizer variants ({', '.join(VARIANTS)})")
    parser.add_argument("--methods", default="quantunev2", help="tvm-mpq sensitivity rankings (e.g. quantunev2-e2e)")
    parser.add_argument("--ort", default="minmax,percentile,entropy", help="onnxruntime calibrators ('' for none)")
    parser.add_argument("--calib-size", type=int, default=16)
    parser.add_argument("--eval-size", type=int, default=32)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/quant_quality"))
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    args.variants = [v for v in args.variants.split(",") if v]
    args.methods = [m for m in args.methods.split(",") if m]
    args.ort = [c for c in args.ort.split(",") if c]
    unknown = [v for v in args.variants if v not in VARIANTS] + [c for c in args.ort if c not in ORT_CALIBRATORS]
    if unknown or not args.variants:
        parser.error(f"unknown or no variants / calibrators: {unknown}")
    os.environ.setdefault("TVM_MPQ_NO_PROGRESS", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"created": time.strftime("%Y-%m-%d %H:%M"), "host": {"cpu_flags": cpu_flags(), "cores": os.cpu_count()},
              "options": {k: v for k, v in vars(args).items() if k != "out"}, "results": []}
    with tempfile.TemporaryDirectory(prefix="quant-quality-") as tmp:
        for name in args.models.split(","):
            start = time.perf_counter()
            report["results"].append(run_model(name, args, Path(tmp)))
            report["results"][-1]["seconds"] = round(time.perf_counter() - start, 1)
            (args.out / "report.json").write_text(json.dumps(report, indent=1))
    md = markdown(report)
    (args.out / "report.md").write_text(md)
    print(md)
    print(f"written: {args.out}/report.json, report.md")


if __name__ == "__main__":
    main()
