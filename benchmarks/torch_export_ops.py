"""Small PyTorch modules as PyTorch's default ONNX exporter writes them, built fp32 by tvm-mpq
beside onnxruntime's run of the same file.

Each module (norms, transposed conv, resizes, pixel shuffle, activations, pools, reflect pad,
LSTM, bidirectional GRU, depthwise conv1d, GLU, cumsum, einsum, masked fill,
``nn.MultiheadAttention``, embedding, RMSNorm, ...) is exported with ``torch.onnx.export``'s
defaults (the dynamo exporter; it needs ``onnxscript``) at its default opset and at opset 23
(attention as one ``Attention`` node), imported by ``tvm_mpq.zoo.load_model`` and built fp32 for
this host; the line per export says OK when every output is within 1e-3 (relative to its
largest value) of onnxruntime's, else MISMATCH, MpqError (the one-line error) or CRASH.

    python benchmarks/torch_export_ops.py [all | NAME,NAME] [OPSET]

Prints one line per module and opset; the ONNX files go to a temporary folder.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class L(nn.Module):
    """``f(x, *modules)``: a one-line model around the modules it owns."""

    def __init__(self, f: Callable, *mods: nn.Module):
        super().__init__()
        self.f = f
        self.m = nn.ModuleList(mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x, *self.m)


class Emb(nn.Module):
    def __init__(self):
        super().__init__()
        self.e = nn.Embedding(50, 16)
        self.l = nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.l(self.e(ids))


def conv() -> nn.Module:
    return nn.Conv2d(8, 8, 3, padding=1)


C = (1, 8, 16, 16)
S = (1, 12, 16)
cases = {
 "groupnorm": (L(lambda x, c, g: g(c(x)), conv(), nn.GroupNorm(4, 8)), C),
 "instancenorm": (L(lambda x, c, g: g(c(x)), conv(), nn.InstanceNorm2d(8, affine=True)), C),
 "convtranspose": (L(lambda x, c: c(x), nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)), C),
 "upsample-bilinear": (L(lambda x, c: F.interpolate(c(x), scale_factor=2, mode="bilinear", align_corners=False), conv()), C),
 "upsample-nearest": (L(lambda x, c: F.interpolate(c(x), scale_factor=2, mode="nearest"), conv()), C),
 "pixelshuffle": (L(lambda x, c: F.pixel_shuffle(c(x), 2), conv()), C),
 "hardswish-silu-mish": (L(lambda x, c: F.mish(F.silu(F.hardswish(c(x)))), conv()), C),
 "gelu-tanh": (L(lambda x, l: F.gelu(l(x), approximate="tanh"), nn.Linear(16, 16)), S),
 "adaptive-pool": (L(lambda x, c: F.adaptive_avg_pool2d(c(x), (4, 4)), conv()), C),
 "maxpool-ceil": (L(lambda x, c: F.max_pool2d(c(x), 3, 2, ceil_mode=True), conv()), C),
 "reflect-pad": (L(lambda x, c: c(F.pad(x, (1, 1, 1, 1), mode="reflect")), nn.Conv2d(8, 8, 3)), C),
 "lstm": (L(lambda x, r: r(x)[0], nn.LSTM(16, 8, batch_first=True)), S),
 "gru-bidir": (L(lambda x, r: r(x)[0], nn.GRU(16, 8, batch_first=True, bidirectional=True)), S),
 "conv1d-depthwise": (L(lambda x, a, b: b(F.relu(a(x))), nn.Conv1d(12, 12, 3, padding=1, groups=12), nn.Conv1d(12, 6, 1)), S),
 "layernorm-glu": (L(lambda x, l, n: F.glu(n(l(x)), dim=-1), nn.Linear(16, 32), nn.LayerNorm(32)), S),
 "cumsum-softplus": (L(lambda x, l: F.softplus(torch.cumsum(l(x), dim=1)), nn.Linear(16, 16)), S),
 "einsum": (L(lambda x, l: torch.einsum("bij,bkj->bik", l(x), x), nn.Linear(16, 16)), S),
 "chunk-cat": (L(lambda x, c: torch.cat([a * torch.sigmoid(b) for a, b in [c(x).chunk(2, dim=1)]], 1), conv()), C),
 "masked-fill": (L(lambda x, l: l(x).masked_fill(x[..., :1] > 0.5, -1e4).softmax(-1), nn.Linear(16, 16)), S),
 "mha": (L(lambda x, m: m(x, x, x, need_weights=False)[0], nn.MultiheadAttention(16, 4, batch_first=True)), S),
 "embedding": (Emb(), None),
 "rmsnorm": (L(lambda x, l, n: n(l(x)), nn.Linear(16, 16), nn.RMSNorm(16)), S),
 "avgpool-count": (L(lambda x, c: F.avg_pool2d(c(x), 3, 2, padding=1, count_include_pad=False), conv()), C),
 "clamp-min-abs": (L(lambda x, c: torch.clamp_min(c(x), 0.1).abs().sqrt(), conv()), C),
 "std-var": (L(lambda x, l: (l(x) - l(x).mean(-1, keepdim=True)) / (l(x).std(-1, keepdim=True) + 1e-5), nn.Linear(16, 16)), S),
}


def check(name: str, module: nn.Module, shape: tuple[int, ...] | None, opset: int | None, work: str) -> str:
    """One export built fp32 by tvm-mpq against onnxruntime: the report line."""
    import onnx
    import onnxruntime as ort

    from tvm_mpq.errors import MpqError
    from tvm_mpq.runtime.executor import compile_graph
    from tvm_mpq.zoo import load_model

    torch.manual_seed(0)
    args = (torch.randint(0, 50, (1, 10)),) if shape is None else (torch.randn(*shape),)
    path = f"{work}/{name}-{opset}.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), args, dynamo=True, opset_version=opset).save(path)
    except Exception as err:  # noqa: BLE001 (the exporter's own failure is a finding, not ours)
        return f"EXPORT FAILED {str(err)[:150]}"
    ops = sorted({n.op_type for n in onnx.load(path).graph.node})
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    reference = session.run(None, {session.get_inputs()[0].name: args[0].numpy()})
    try:
        graph = load_model(path)
        got = compile_graph(graph).run({graph.inputs[0].name: args[0].numpy()})
    except MpqError as err:
        return f"MpqError {err} ops {ops}"
    except Exception as err:  # noqa: BLE001 (a traceback from the import or build: what this looks for)
        return f"CRASH {type(err).__name__}: {str(err)[:300]} ops {ops}"
    worst = max(float(np.abs(a - b).max() / (np.abs(b).max() + 1e-9)) for a, b in zip(got, reference))
    return f"{'OK' if worst < 1e-3 else 'MISMATCH'} rel err {worst:.1e} ops {ops}"


def main() -> None:
    wanted = sys.argv[1] if len(sys.argv) > 1 else "all"
    opsets = [None, 23] if len(sys.argv) < 3 else [int(sys.argv[2])]
    work = tempfile.mkdtemp(prefix="torch_export_ops_")
    for opset in opsets:
        for name, (module, shape) in cases.items():
            if wanted == "all" or name in wanted.split(","):
                print(f"{name} opset {opset or 'default'}: {check(name, module, shape, opset, work)}", flush=True)


if __name__ == "__main__":
    main()
