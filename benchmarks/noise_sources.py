"""Where efficientnet-lite0's fully int8 output noise comes from: activations or weights, and which
layers, under the product's default quantizers.

A PyTorch fake-quantization model of what ``tvm-mpq`` builds with its defaults (batch norm folded
into each conv; per-tensor asymmetric uint8 activations, min/max over the calibration samples;
per-output-channel symmetric int8 weights; analytic bias correction ``(fake_quant(W) - W) E[x]``).
Its quantizers are the product's own (``tvm_mpq.quantization.quantizers``); the graph is not the
product path (that is ``quant_quality.py``, whose fully int8 figure this model reproduces to
within half a dB); it exists to switch the two noise sources on separately, which
the integer build cannot. It also measures two weight quantizers: Hessian-weighted rounding
(the product's ``--weight-rounding hessian``: AdaRound's quadratic proxy ``dW^T E[x x^T] dW`` per
output channel, minimised by coordinate descent over round-up / round-down) and GPTQ (not in the
product: each channel's weights quantized in turn, the rest updated to absorb the error through
``H^-1``), to show what better weight quantizers would buy, and bias corrections measured on the
quantized model (``--measured-bias``'s rule: depthwise convs in execution order; against every layer, and against all at once).
``--clip-search`` adds the activation ranges chosen by the end-to-end error (:func:`search_clips`:
each layer's calibrated input range clipped where the fully int8 model's output SQNR on the
calibration photos rises: a greedy end-to-end form of the range choice the observers make locally).

    python benchmarks/noise_sources.py [--calib-size 16] [--eval-size 32] [--clip-search] [-o out/bench/noise]

Prints and saves (``noise.json``, ``noise.md``): output SQNR and top-1 agreement with fp32 on the
held-out photos for activations only / weights only / both, with and without the rounding, and
each layer alone (activations only, weights only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def fold_batch_norms(model: nn.Module) -> list[nn.Module]:
    """Fold every batch norm into its conv (in place); the MAC layers in execution order."""
    from tvm_mpq.zoo.efficientnet_lite0 import BN_EPS

    pairs = [(model._conv_stem, model._bn0)]
    for block in model._blocks:
        if block.has_expand:
            pairs.append((block._expand_conv, block._bn0))
        pairs += [(block._depthwise_conv, block._bn1), (block._project_conv, block._bn2)]
    pairs.append((model._conv_head, model._bn1))
    for conv, bn in pairs:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight.mul_(scale[:, None, None, None])
        conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale, requires_grad=False)
        bn.running_mean.zero_(), bn.running_var.fill_(1 - BN_EPS), bn.weight.fill_(1), bn.bias.zero_()
    return [conv for conv, _ in pairs] + [model._fc]


def calibrate(model: nn.Module, layers: list[nn.Module], batch: torch.Tensor) -> list[dict]:
    """Per layer: the input's min / max, per-channel mean and the calibration inputs themselves."""
    stats: list[dict] = [{} for _ in layers]

    def hook(index: int):
        def record(_module, inputs, _output):
            x = inputs[0]
            stats[index] = {"lo": min(x.min().item(), 0.0), "hi": max(x.max().item(), 0.0),
                            "mean": x.mean((0, 2, 3)) if x.dim() == 4 else x.mean(0), "x": x}
        return record

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    with torch.no_grad():
        model(batch)
    for handle in handles:
        handle.remove()
    return stats


def fake_quant_activation(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The product's uint8 activation quantizer of the range [lo, hi] (quantize-dequantize)."""
    from tvm_mpq.quantization.quantizers import act_qparams
    from tvm_mpq.quantization.quantizers import fake_quant_activation as fake_quant

    return torch.from_numpy(fake_quant(x.numpy(), act_qparams(lo, hi, 8)))


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """The product's per-output-channel int8 weight scales, shaped to broadcast against ``w``."""
    from tvm_mpq.quantization.quantizers import weight_scales

    return torch.from_numpy(weight_scales(w.numpy(), 8, 0)).reshape(-1, *([1] * (w.dim() - 1)))


def nearest_weights(w: torch.Tensor) -> torch.Tensor:
    """The product's int8 weight quantizer (round to nearest, per output channel)."""
    from tvm_mpq.quantization.quantizers import fake_quant_weight

    return torch.from_numpy(fake_quant_weight(w.numpy(), 8, 0))


def input_second_moments(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``E[p p^T]`` of the layer's input patches: one matrix (dense, conv) or one per channel
    (depthwise conv), shape ``(1 | channels, K, K)``."""
    if isinstance(layer, nn.Linear):
        return (x.T @ x / x.shape[0])[None]
    k = layer.kernel_size[0]
    patches = F.unfold(layer.pad(x), k, stride=layer.stride)  # N, Cin*k*k, L
    n, ck, length = patches.shape
    if layer.groups > 1:
        channels = layer.weight.shape[0]
        p = patches.view(n, channels, k * k, length).permute(1, 0, 3, 2).reshape(channels, -1, k * k)
        return torch.einsum("cni,cnj->cij", p, p) / p.shape[1]
    p = patches.permute(0, 2, 1).reshape(-1, ck)
    return (p.T @ p / p.shape[0])[None]


def hessian_rounded_weights(layer: nn.Module, w: torch.Tensor, x: torch.Tensor, sweeps: int = 3) -> torch.Tensor:
    """Each weight rounded up or down (on the nearest-rounding grid) to minimise
    ``dW^T E[x x^T] dW`` per output channel; coordinate descent from round-to-nearest."""
    h = input_second_moments(layer, x)
    rows = w.shape[0]
    flat = w.reshape(rows, -1)
    scale = weight_scale(w).reshape(rows, 1)
    floor = torch.floor(flat / scale)
    q = torch.clamp(torch.round(flat / scale), -127, 127)
    per_row = h.shape[0] > 1
    grad = torch.einsum("rk,rkj->rj", q * scale - flat, h) if per_row else (q * scale - flat) @ h[0]
    diag = torch.diagonal(h, dim1=1, dim2=2)
    for _ in range(sweeps):
        changed = 0
        for i in range(flat.shape[1]):
            alt = torch.clamp(torch.where(q[:, i] == floor[:, i], floor[:, i] + 1, floor[:, i]), -127, 127)
            step = (alt - q[:, i]) * scale[:, 0]
            take = 2 * step * grad[:, i] + step ** 2 * diag[:, i] < 0
            if take.any():
                step = torch.where(take, step, torch.zeros_like(step))
                q[:, i] = torch.where(take, alt, q[:, i])
                grad += step[:, None] * (h[:, i, :] if per_row else h[0, i][None, :])
                changed += int(take.sum())
        if not changed:
            break
    return (q * scale).reshape(w.shape)


def gptq_weights(layer: nn.Module, w: torch.Tensor, x: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """GPTQ (Frantar et al., 2023) on the product's grid: the weights of each output channel
    quantized one input position at a time, the not yet quantized ones updated to absorb the
    error through the inverse of ``H`` (the centred second moment of the input patches, as bias
    correction follows; ``damp`` times its mean diagonal added). Unlike the rounding above, the
    codes can move more than one step from nearest."""
    mean = input_means(layer, x)
    h = (input_second_moments(layer, x) - mean[:, :, None] * mean[:, None, :]).double()
    rows = w.shape[0]
    work = w.reshape(rows, -1).double().clone()
    scale = weight_scale(w).reshape(rows, 1).double()
    codes = torch.zeros_like(work)
    eye = torch.arange(h.shape[-1])
    for group in range(h.shape[0]):
        hg = h[group].clone()
        hg[eye, eye] += damp * hg.diagonal().mean() + 1e-12
        upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hg)), upper=True)
        sel = slice(None) if h.shape[0] == 1 else slice(group, group + 1)
        block = work[sel]
        for i in range(block.shape[1]):
            q = torch.clamp(torch.round(block[:, i] / scale[sel, 0]), -127, 127) * scale[sel, 0]
            codes[sel, i] = q
            block[:, i:] -= ((block[:, i] - q) / upper[i, i])[:, None] * upper[i, i:][None, :]
    return codes.float().reshape(w.shape)


def input_means(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``E[p]`` of the layer's input patches, shape ``(1 | channels, K)`` as :func:`input_second_moments`."""
    if isinstance(layer, nn.Linear):
        return x.mean(0)[None]
    k = layer.kernel_size[0]
    patches = F.unfold(layer.pad(x), k, stride=layer.stride)
    n, ck, length = patches.shape
    if layer.groups > 1:
        channels = layer.weight.shape[0]
        return patches.view(n, channels, k * k, length).mean((0, 3))
    return patches.mean((0, 2))[None]


WEIGHT_QUANTIZERS = {"nearest": lambda _layer, w, _x: nearest_weights(w), "hessian": hessian_rounded_weights,
                     "gptq": gptq_weights}
"""How ``score`` quantizes a weight: by name, called with the layer, its weight and its input."""


def bias_correction(layer: nn.Module, dw: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return dw @ mean
    if layer.groups > 1:
        return dw.sum((1, 2, 3)) * mean
    return (dw.sum((2, 3)) * mean[None]).sum(1)


def output_means(model: nn.Module, layers: list[nn.Module], batch: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's output mean per channel over ``batch``."""
    got: list[torch.Tensor] = [torch.empty(0)] * len(layers)
    handles = [layer.register_forward_hook(
        lambda _m, _i, out, k=k: got.__setitem__(k, out.mean((0, 2, 3)) if out.dim() == 4 else out.mean(0)))
        for k, layer in enumerate(layers)]
    with torch.no_grad():
        model(batch)
    for handle in handles:
        handle.remove()
    return got


def score(model, layers, stats, held, reference, weights: set[int], activations: set[int],
          rounding: str = "nearest", measured: tuple[str, set[int]] | None = None, calib: torch.Tensor | None = None,
          fp32_means: list[torch.Tensor] | None = None) -> dict:
    """Output SQNR (dB) and top-1 agreement with fp32 with the named layers' weights and / or
    input activations quantized (weights always bias-corrected). ``measured``: ``("in order" |
    "at once", layers)``, those layers' biases then corrected by their output mean error over
    ``calib`` against ``fp32_means`` (in execution order, each with the earlier ones corrected,
    or all from one measurement), as ``tvm_mpq.ptq.measured_bias`` does for depthwise convs."""
    saved, handles = [], []
    for i in weights:
        layer = layers[i]
        w, b = layer.weight.clone(), layer.bias.clone()
        wq = WEIGHT_QUANTIZERS[rounding](layer, w, stats[i]["x"])
        layer.bias.sub_(bias_correction(layer, wq - w, stats[i]["mean"]))
        layer.weight.copy_(wq)
        saved.append((layer, w, b))
    for i in activations:
        lo, hi = stats[i]["lo"], stats[i]["hi"]
        handles.append(layers[i].register_forward_pre_hook(
            lambda _m, inputs, lo=lo, hi=hi: (fake_quant_activation(inputs[0], lo, hi),)))
    if measured is not None:
        how, which = measured
        order = sorted(which)
        if how == "at once":
            for i, mean in zip(order, output_means(model, [layers[i] for i in order], calib)):
                layers[i].bias.sub_(mean - fp32_means[i])
        else:
            for i in order:
                layers[i].bias.sub_(output_means(model, [layers[i]], calib)[0] - fp32_means[i])
    with torch.no_grad():
        out = model(held)
    for layer, w, b in saved:
        layer.weight.copy_(w), layer.bias.copy_(b)
    for handle in handles:
        handle.remove()
    noise = ((out - reference) ** 2).sum().item()
    return {"sqnr_db": round(10 * np.log10((reference ** 2).sum().item() / max(noise, 1e-30)), 2),
            "top1_agreement": round((out.argmax(1) == reference.argmax(1)).float().mean().item(), 4)}


CLIP_RATIOS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
"""The fractions of a calibrated range bound :func:`search_clips` tries."""


def search_clips(model, layers, stats, calib: torch.Tensor, sweeps: int = 2) -> list[str]:
    """Each layer's input range clipped (``hi``, ``lo`` or both times one of :data:`CLIP_RATIOS`)
    where that raises the fully int8 model's output SQNR on the calibration photos themselves,
    one layer at a time in execution order, ``sweeps`` times over (in place on ``stats``): the
    range setting by end-to-end output error the observers' local criteria approximate. The
    changes, one line each."""
    with torch.no_grad():
        calib_reference = model(calib)
    every = set(range(len(layers)))
    changes = []
    current = score(model, layers, stats, calib, calib_reference, every, every)["sqnr_db"]  # the ranges as they stand
    for sweep in range(sweeps):
        for i in range(len(layers)):
            lo0, hi0 = stats[i]["lo"], stats[i]["hi"]
            best = (current, lo0, hi0)
            sides = ("hi",) if lo0 == 0 else ("hi", "lo", "both")
            for ratio in CLIP_RATIOS[1:]:
                for side in sides:
                    stats[i]["lo"] = lo0 * ratio if side in ("lo", "both") else lo0
                    stats[i]["hi"] = hi0 * ratio if side in ("hi", "both") else hi0
                    db = score(model, layers, stats, calib, calib_reference, every, every)["sqnr_db"]
                    if db > best[0]:
                        best = (db, stats[i]["lo"], stats[i]["hi"])
            current, stats[i]["lo"], stats[i]["hi"] = best
            if (best[1], best[2]) != (lo0, hi0):
                changes.append(f"sweep {sweep}, layer {i}: [{lo0:.2f}, {hi0:.2f}] -> [{best[1]:.2f}, {best[2]:.2f}], "
                               f"calibration photos {best[0]} dB")
                print(changes[-1], flush=True)
    return changes


def main() -> None:
    from tvm_mpq.zoo.efficientnet_lite0 import _calibration, build

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calib-size", type=int, default=16)
    parser.add_argument("--eval-size", type=int, default=32)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/noise"))
    parser.add_argument("--clip-search", action="store_true",
                        help="also clip each input range where the calibration photos' output SQNR rises "
                             "(about 15 minutes on 2 cores)")
    args = parser.parse_args()

    model = build()
    for p in model.parameters():
        p.requires_grad_(False)
    feeds = [torch.from_numpy(f["x"]) for f in _calibration(args.calib_size + args.eval_size)]
    calib, held = torch.cat(feeds[:args.calib_size]), torch.cat(feeds[args.calib_size:])
    with torch.no_grad():
        reference = model(held)
    layers = fold_batch_norms(model)
    stats = calibrate(model, layers, calib)
    fp32_means = output_means(model, layers, calib)
    every = set(range(len(layers)))
    depthwise = {i for i, layer in enumerate(layers) if getattr(layer, "groups", 1) > 1}

    def run(name: str, weights: set[int], activations: set[int], rounding: str = "nearest",
            measured: tuple[str, set[int]] | None = None, stats_used: list[dict] | None = None) -> dict:
        figure = score(model, layers, stats if stats_used is None else stats_used, held, reference, weights,
                       activations, rounding, measured, calib, fp32_means)
        print(f"{name:48s} {figure['sqnr_db']:6.1f} dB  top-1 agr. {figure['top1_agreement']:.3f}", flush=True)
        return {"name": name, **figure}

    whole = [run("fully int8 (weights + activations)", every, every),
             run("activations only", set(), every),
             run("weights only", every, set()),
             run("weights only, Hessian-weighted rounding", every, set(), "hessian"),
             run("fully int8, Hessian-weighted rounding", every, every, "hessian"),
             run("weights only, GPTQ", every, set(), "gptq"),
             run("fully int8, GPTQ", every, every, "gptq"),
             run("fully int8, depthwise biases measured in order", every, every, measured=("in order", depthwise)),
             run("fully int8, every bias measured in order", every, every, measured=("in order", every)),
             run("fully int8, depthwise biases measured at once", every, every, measured=("at once", depthwise))]
    if args.clip_search:
        clipped = [dict(s) for s in stats]
        changes = search_clips(model, layers, clipped, calib)
        whole.append(run(f"fully int8, input ranges clipped by output SQNR ({len(changes)} changed)", every, every,
                         stats_used=clipped))
    per_layer = []
    for i, layer in enumerate(layers):
        kind = "dense" if isinstance(layer, nn.Linear) else ("depthwise" if layer.groups > 1 else "conv")
        per_layer.append({"index": i, "kind": kind, "input_range": [round(stats[i]["lo"], 2), round(stats[i]["hi"], 2)],
                          "activation_alone_db": score(model, layers, stats, held, reference, set(), {i})["sqnr_db"],
                          "weights_alone_db": score(model, layers, stats, held, reference, {i}, set())["sqnr_db"]})
    per_layer.sort(key=lambda r: min(r["activation_alone_db"], r["weights_alone_db"]))
    lines = ["# efficientnet-lite0: output noise by source (PyTorch fake-quant model of the defaults)", "",
             f"{args.calib_size} calibration photos, {args.eval_size} held-out photos.", "",
             "| quantized | output SQNR | top-1 agreement |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['sqnr_db']} dB | {r['top1_agreement']:.3f} |" for r in whole]
    lines += ["", "Ten noisiest layers, each alone (layer index in execution order):", "",
              "| layer | kind | input range | activation alone | weights alone (bias-corrected) |", "|---|---|---|---|---|"]
    lines += [f"| {r['index']} | {r['kind']} | {r['input_range']} | {r['activation_alone_db']} dB | {r['weights_alone_db']} dB |"
              for r in per_layer[:10]]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "noise.json").write_text(json.dumps({"whole": whole, "per_layer": per_layer}, indent=1))
    (args.out / "noise.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[len(whole) + 6:]))
    print(f"wrote {args.out / 'noise.md'}")


if __name__ == "__main__":
    main()
