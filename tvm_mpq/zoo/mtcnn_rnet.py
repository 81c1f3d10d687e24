"""MTCNN RNet (face / non-face refinement CNN) with the weights shipped in ``facenet-pytorch``.

Weights: ``facenet_pytorch/data/rnet.pt`` inside the ``facenet-pytorch==2.6.0`` wheel (installed
``--no-deps``). The file is located with ``importlib.util.find_spec`` and read with
``torch.load(weights_only=True)``; facenet-pytorch's Python modules are never imported (they pull
in torchvision). The architecture below copies facenet-pytorch's ``RNet`` layer for layer (same
parameter names, so the state_dict loads strictly), including the ``permute(0, 3, 2, 1)`` before
flattening (the weights come from the original Caffe model, trained on transposed images).

Zoo graph: input ``x`` 1x3x24x24 preprocessed as facenet-pytorch does, ``(x - 127.5) * 0.0078125``
on [0, 255] pixels; output the two face-classification logits of ``dense5_1`` (softmax removed;
class 1 = face). The bounding-box regression head ``dense5_2`` is dropped from the zoo graph:
it is not a classification output, so no fidelity metric applies to it.

Labelled data: scikit-image ``lfw_subset()`` (200 25x25 grayscale crops; the first 100 are LFW
faces, the last 100 non-face background patches of the same photos), resized to 24x24 with area
interpolation (facenet-pytorch's ``imresample``) and repeated to 3 channels; label 1 = face.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tvm_mpq.errors import MpqError
from tvm_mpq.types import Feed

IMAGE_SIZE = 24
INPUT_NAME = "x"


class RNet(nn.Module):
    """facenet-pytorch's MTCNN RNet: ``(face_logits, box_regression)``, or only the logits.

    ``drop_box_head()`` removes ``dense5_2``; ``forward`` then returns the face logits alone
    (the zoo graph). facenet-pytorch applies softmax to ``dense5_1``; the logits are kept here.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2: nn.Linear | None = nn.Linear(128, 4)

    def drop_box_head(self) -> "RNet":
        self.dense5_2 = None
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).contiguous()
        h = self.prelu4(self.dense4(x.reshape(x.shape[0], -1)))
        logits = self.dense5_1(h)
        if self.dense5_2 is None:
            return logits
        return logits, self.dense5_2(h)


def weights_path() -> Path:
    """``facenet_pytorch/data/rnet.pt`` of the installed wheel (without importing the package)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:

        raise MpqError("facenet-pytorch==2.6.0 is not installed (pip install --no-deps facenet-pytorch==2.6.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "rnet.pt"


def build_rnet() -> RNet:
    """The full RNet (both heads) with the shipped weights, loaded strictly."""
    model = RNet()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def build() -> RNet:
    """The zoo model: RNet without the box-regression head (output: face logits)."""
    return build_rnet().drop_box_head()


def lfw_images() -> np.ndarray:
    """``lfw_subset`` as 200x24x24 float32 in [0, 255] (area-resized like facenet-pytorch)."""
    import skimage.data

    images = torch.from_numpy(skimage.data.lfw_subset().astype(np.float32) * 255.0)[:, None]
    resized = nn.functional.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="area")
    return resized[:, 0].numpy()


def preprocess(gray: np.ndarray) -> np.ndarray:
    """24x24 [0, 255] grayscale -> 1x3x24x24 float32, ``(x - 127.5) * 0.0078125``."""
    x = (np.repeat(gray[None, None], 3, axis=1) - 127.5) * 0.0078125
    return x.astype(np.float32)


def labelled(count: int | None = None) -> tuple[list[Feed], np.ndarray]:
    """Faces and non-faces interleaved (so any prefix is balanced); label 1 = face."""
    images = lfw_images()
    order = [i for pair in zip(range(100), range(100, 200)) for i in pair]
    order = order if count is None else order[:count]
    labels = np.array([1 if i < 100 else 0 for i in order], np.int64)
    return [{INPUT_NAME: preprocess(images[i])} for i in order], labels


def _calibration(count: int) -> list[Feed]:
    if count > 200:
        raise MpqError(f"--calib-size: only 200 lfw_subset images are available, {count} asked")
    return labelled(count)[0]


def _graph():
    from tvm_mpq.frontends.torch_frontend import from_module

    example = {INPUT_NAME: np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)}
    return from_module(build(), example, "mtcnn-rnet")


def _register() -> None:
    from tvm_mpq.zoo.registry import ZooModel, register, torch_reference

    register(ZooModel(
        name="mtcnn-rnet",
        task="face-binary",
        description="MTCNN RNet face / non-face classifier (facenet-pytorch weights), 1x3x24x24, "
                    "output = 2 logits (1 = face); labelled data: scikit-image lfw_subset",
        pretrained=True,
        build_graph=_graph,
        calibration=_calibration,
        reference=torch_reference(build),
        labelled=labelled,
        extra={"image_size": IMAGE_SIZE, "labels": ("non-face", "face")},
    ))


_register()
