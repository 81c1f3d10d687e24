"""Would per-channel input quantizers help regular 1x1 convs? Measured per layer, before building.

    python benchmarks/pointwise_channel_inputs.py [--models ppocrv5-rec,ppocr-rec] [-o out/bench/pointwise_channel_inputs]

A depthwise conv's input can be quantized per channel for free (``tvm_mpq.ptq.channel_ranges``);
a regular conv's only with each channel's scale folded into its weight rows (``W[o, c] * s[c]``,
then the per-output-channel weight quantizer), which moves the range differences into the
weights. For every 1x1 conv of each model (corpus or zoo name; 16 inputs: ranges from the first
8, errors on the other 8), the conv's output SQNR against fp32 with (a) the per-tensor min/max
input quantizer and per-output-channel int8 weights (the build's), and (b) per-channel input
ranges, widened as the depthwise decision widens them (``channel_ranges.widened``), folded into
the weights; each also with the input quantized alone (weights fp32). Prints and saves
``report.json`` / ``report.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref ** 2).sum() / max(((ref - got) ** 2).sum(), 1e-30)))


def weight_rows_int8(w: np.ndarray) -> np.ndarray:
    """``w`` (out x in) quantized and dequantized per output channel, symmetric int8."""
    scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return np.clip(np.round(w / scale), -127, 127) * scale


def model_inputs(name: str) -> tuple[object, list]:
    """The graph and 16 inputs: a corpus model's own, or a zoo model's calibration + held-out."""
    from tvm_mpq.corpus.catalog import CATALOG

    corpus = {m.name: m for m in CATALOG}
    if name in corpus:
        from tvm_mpq import zoo
        from tvm_mpq.corpus.fetch import fetch
        from tvm_mpq.corpus.inputs import feeds

        graph = zoo.load_model(str(fetch(corpus[name])), corpus[name].shapes)
        return graph, feeds(corpus[name], graph, 16)
    from tvm_mpq.evaluation.model_data import counts_for, load_model_data

    data = load_model_data(name, counts_for(name, calib=8, eval=8))
    return data.graph, [*data.calib, *data.eval_feeds][:16]


def layer_rows(name: str) -> list[dict]:
    from tvm_mpq.calibration.calibrate import compile_exposed, run_exposed
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.ptq.channel_ranges import fake_quant_range, widened

    graph, inputs = model_inputs(name)
    table = build_layer_table(graph)
    layers = [l for l in table if l.kind == "conv2d" and l.weight_param is not None and tuple(l.weight_shape[2:]) == (1, 1)]
    names = sorted({l.data_var for l in layers})
    seen: dict[str, list[np.ndarray]] = {n: [] for n in names}
    run_exposed(graph, inputs, names, lambda _i, _o, ts: [seen[n].append(np.asarray(t, np.float64)) for n, t in zip(names, ts)],
                desc=f"{name}: 1x1 conv inputs", compiled=compile_exposed(graph, names))
    rows = []
    for layer in layers:
        xs = np.stack(seen[layer.data_var])  # samples x 1 x C x ...
        channels = xs.shape[2]
        by_channel = np.moveaxis(xs, 2, 0).reshape(channels, len(inputs), -1)
        calib, held = by_channel[:, :8].reshape(channels, -1), by_channel[:, 8:].reshape(channels, -1)
        w = layer.weight_operand(graph.params).reshape(layer.weight_shape[0], channels).astype(np.float64)
        y = w @ held
        lo, hi = calib.min(axis=1), calib.max(axis=1)
        x_tensor = fake_quant_range(held, np.float64(lo.min()), np.float64(hi.max()))
        c_lo, c_hi = widened(lo, hi, float(lo.min()), float(hi.max()))
        x_channel = fake_quant_range(held, c_lo[:, None], c_hi[:, None])
        c_lo, c_hi = np.minimum(c_lo, 0), np.maximum(c_hi, 0)
        step = np.where(c_hi > c_lo, (c_hi - c_lo) / 255.0, 1.0)
        folded = weight_rows_int8(w * step[None, :]) / step[None, :]
        rows.append({"model": name, "layer": layer.name, "channels": channels,
                     "range_spread": float((hi - lo).max() / np.median((hi - lo)[hi > lo])),  # (live channels)
                     "tensor_db": sqnr_db(y, weight_rows_int8(w) @ x_tensor), "tensor_input_only_db": sqnr_db(y, w @ x_tensor),
                     "channel_db": sqnr_db(y, folded @ x_channel), "channel_input_only_db": sqnr_db(y, w @ x_channel)})
        r = rows[-1]
        print(f"{name} {r['layer']}: C={channels}, per tensor {r['tensor_db']:.1f} dB, per channel folded "
              f"{r['channel_db']:.1f} dB", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="ppocrv5-rec,ppocr-rec")
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/pointwise_channel_inputs"))
    args = parser.parse_args()

    from benchkit.machine import machine_info
    from benchkit.two_builds import write_report
    from tvm_mpq.runtime.executor import host_target

    rows = [row for name in args.models.split(",") for row in layer_rows(name)]
    lines = ["# 1x1 convs: per-tensor inputs vs per-channel inputs folded into the weights", "",
             "Output SQNR of each 1x1 conv against fp32 on 8 held-out inputs (ranges from 8 others).", "",
             "| model | layer | channels | channel-range spread (max / median of live channels) | per tensor (input only) | "
             "per channel, folded (input only) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['layer']} | {r['channels']} | {r['range_spread']:.1f} | {r['tensor_db']:.1f} "
              f"({r['tensor_input_only_db']:.1f}) dB | {r['channel_db']:.1f} ({r['channel_input_only_db']:.1f}) dB |"
              for r in rows]
    for name in args.models.split(","):
        own = [r for r in rows if r["model"] == name]
        better = sum(r["channel_db"] > r["tensor_db"] + 1 for r in own)
        worse = sum(r["channel_db"] < r["tensor_db"] - 1 for r in own)
        lines.append(f"\n{name}: per channel more than 1 dB better on {better} of {len(own)} 1x1 convs, "
                     f"more than 1 dB worse on {worse}.")
    write_report(args.out, machine_info(1, host_target()), rows, lines)


if __name__ == "__main__":
    main()
