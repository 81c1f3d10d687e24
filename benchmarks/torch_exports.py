"""The zoo's PyTorch models as their users export them: PyTorch's default ONNX exporter.

``torch.onnx.export`` is the dynamo exporter by default since PyTorch 2.9 (it needs
``onnxscript``): opset 20 unless asked otherwise, nodes named ``node_Conv_814``, and its
optimizer folds each batch norm into the conv before it. For each ``--models`` zoo model this
exports the very module the zoo imports (``--opset``: the default, or e.g. 23, where attention is
one ``Attention`` node), then builds the zoo model and the exported file the same way
(``tvm_mpq.quantize``: the same calibration samples, each ``--methods`` ranking at each
``--rates`` rate, the integer model for this host) and scores both on the same held-out samples
against the exported file's fp32 run in onnxruntime (``tvm_mpq.evaluation.fidelity``: top-1
agreement and output SQNR for classifiers). It also reports whether the two graphs have the same
layer names (the exported file's come from the PyTorch module paths:
``tvm_mpq.frontends.onnx_layer_names``) and which layers each keeps fp32.

    python benchmarks/torch_exports.py [--models efficientnet-lite0,mtcnn-rnet,minilm]
        [--rates 100,50] [--methods quantunev2] [--eval-size 32] [--opset 23]

Writes out/bench/torch_exports/report.json and prints one line per build.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def export_default(name: str, path: Path, opset: int | None):
    """Export zoo model ``name``'s own ``nn.Module`` with ``torch.onnx.export``'s defaults; its graph."""
    import torch

    from tvm_mpq.export.fp32_onnx import recording_sources
    from tvm_mpq.zoo import load_model

    with recording_sources() as recorded:
        graph = load_model(name)
    module = recorded.get(graph.name)
    if module is None:
        raise SystemExit(f"{name} is not a PyTorch zoo model")
    args = tuple(torch.zeros(spec.shape, dtype=torch.int64) if "int" in spec.dtype else torch.randn(*spec.shape)
                 for spec in graph.inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, dynamo=True, opset_version=opset).save(str(path))
    return graph


def run_model(name: str, args: argparse.Namespace, work: Path) -> dict:
    import onnxruntime as ort

    import tvm_mpq
    from tvm_mpq.evaluation.fidelity import fidelity
    from tvm_mpq.evaluation.sample_set import held_out
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.zoo import get, load_model

    path = work / f"{name}.onnx"
    zoo_graph = export_default(name, path, args.opset)
    exported = load_model(str(path))
    task = get(name).task
    calib = get(name).calibration(args.calib_size)
    samples = held_out(name, args.calib_size, args.eval_size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_names = [i.name for i in session.get_inputs()]
    zoo_names = [spec.name for spec in zoo_graph.inputs]
    as_onnx = lambda feed: {o: feed[z] for o, z in zip(onnx_names, zoo_names)}  # noqa: E731
    reference = [session.run(None, as_onnx(f)) for f in samples.feeds]
    same_names = [e.name for e in build_layer_table(zoo_graph)] == [e.name for e in build_layer_table(exported)]
    print(f"{name}: exported at opset {args.opset or 'default'}; layer names equal to the PyTorch path's: {same_names}",
          flush=True)
    points = []
    for method in args.methods.split(","):
        for rate in [float(r) for r in args.rates.split(",")]:
            for source, model, feed_of in (("pytorch", zoo_graph, lambda f: f), ("onnx export", exported, as_onnx)):
                start = time.time()
                built = tvm_mpq.quantize(model, rate, method=method, calib=[feed_of(f) for f in calib])
                outputs = [built.run(feed_of(f)) for f in samples.feeds]
                figures = fidelity(task, outputs, reference)
                point = {"model": name, "source": source, "method": method, "requested_rate": rate,
                         "achieved_rate": built.config.provenance.get("bops_reduction_rate"),
                         "fp32_layers": sorted(built.config.fp32_layers()), "seconds": round(time.time() - start, 1),
                         **{k: float(v) for k, v in figures.items()}}
                points.append(point)
                shown = ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
                print(f"  {method} {rate:g}% {source:11s}: {shown}; {len(point['fp32_layers'])} fp32 layers, "
                      f"achieved {point['achieved_rate']:.1f}%", flush=True)
    return {"same_layer_names": same_names, "held_out": samples.to_json(), "points": points}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet-lite0,mtcnn-rnet,minilm")
    parser.add_argument("--rates", default="100,50")
    parser.add_argument("--methods", default="quantunev2")
    parser.add_argument("--calib-size", type=int, default=16)
    parser.add_argument("--eval-size", type=int, default=None, help="held-out samples (default: the eval's set)")
    parser.add_argument("--opset", type=int, default=None, help="the exporter's opset (default: its own)")
    parser.add_argument("-o", "--out", default="out/bench/torch_exports")
    args = parser.parse_args()
    from benchkit.machine import flags_text, machine_info
    from tvm_mpq.runtime.executor import host_target

    info = machine_info(0, host_target())
    print(f"{info['cpu']}, CPU flags {flags_text(info)}", flush=True)
    report = {"machine": info, "args": vars(args), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            report["models"][name] = run_model(name, args, Path(tmp))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=lambda v: np.asarray(v).tolist()))
    print(f"wrote {out / 'report.json'}")


if __name__ == "__main__":
    main()
