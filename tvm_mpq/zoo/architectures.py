"""Architecture-only models: the paper's five ImageNet CNNs with random, seeded weights.

``resnet18``, ``resnet50``, ``mobilenetv2``, ``squeezenet`` (1.1) and ``vgg16`` are written here
with torchvision's layouts and module names (torchvision is not importable in this environment),
1x3x224x224 input, 1000 classes. No pretrained weights ship with them: they serve latency and
BOPs measurements and the mechanics of the analysis, never accuracy claims (task
``architecture-only``).

Initialisation is deterministic (``torch.manual_seed(SEED)``) and follows torchvision's schemes.
Batch-norm layers get non-trivial eval-mode parameters: gamma ~ U(0.5, 1.5) and beta ~ N(0, 0.2)
from the seeded generator, and running mean/variance measured on real photos (one train-mode pass
over ``BN_STATS_IMAGES`` sample images, cumulative average). BN is thus never the identity, and
activations keep a realistic scale through the depth of the network instead of drifting, which
random statistics would cause.

Calibration data: real photos from :mod:`tvm_mpq.data.images`, ImageNet mean/std.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
import torch
from torch import nn

from tvm_mpq.types import Feed

SEED = 0
IMAGE_SIZE = 224
BN_STATS_IMAGES = 8
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
INPUT_NAME = "x"


# --- ResNet (torchvision.models.resnet layout) ---------------------------------------------------

def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(in_ch, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)  # torchvision v1.5: stride on the 3x3
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, width * self.expansion)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.in_ch = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], width: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_ch != width * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.in_ch, width * block.expansion, stride),
                                       nn.BatchNorm2d(width * block.expansion))
        layers = [block(self.in_ch, width, stride, downsample)]
        self.in_ch = width * block.expansion
        layers += [block(self.in_ch, width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --- MobileNetV2 (torchvision.models.mobilenetv2 layout) -----------------------------------------

class ConvBNReLU6(nn.Sequential):
    """torchvision's ``Conv2dNormActivation`` with ReLU6: ``[0]`` conv, ``[1]`` bn, ``[2]`` relu6."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int):
        super().__init__()
        hidden = in_ch * expand
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = [ConvBNReLU6(in_ch, hidden, 1)] if expand != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    # (expand t, channels c, repeats n, stride s)
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        features: list[nn.Module] = [ConvBNReLU6(3, 32, stride=2)]
        in_ch = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        features.append(ConvBNReLU6(in_ch, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# --- SqueezeNet 1.1 (torchvision.models.squeezenet layout) ---------------------------------------

class Fire(nn.Module):
    def __init__(self, in_ch: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(in_ch, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet11(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        pool = partial(nn.MaxPool2d, kernel_size=3, stride=2, ceil_mode=True)
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=2), nn.ReLU(inplace=True), pool(),
            Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), pool(),
            Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), pool(),
            Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256), Fire(512, 64, 256, 256))
        final_conv = nn.Conv2d(512, num_classes, 1)
        self.classifier = nn.Sequential(nn.Dropout(0.5), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, 0, 0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


# --- VGG16 (torchvision.models.vgg16, configuration "D", no batch norm) --------------------------

VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                    512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --- construction, data, registration ------------------------------------------------------------

ARCHITECTURES: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "resnet18": (lambda: ResNet(BasicBlock, [2, 2, 2, 2]), "ResNet-18"),
    "resnet50": (lambda: ResNet(Bottleneck, [3, 4, 6, 3]), "ResNet-50 (v1.5)"),
    "mobilenetv2": (MobileNetV2, "MobileNetV2 (width 1.0)"),
    "squeezenet": (SqueezeNet11, "SqueezeNet 1.1"),
    "vgg16": (VGG16, "VGG-16 (configuration D, no BN)"),
}


def build(arch: str, seed: int = SEED) -> nn.Module:
    """``arch`` with seeded torchvision-style weights and real-photo BN statistics, eval mode."""
    make, _ = ARCHITECTURES[arch]
    torch.manual_seed(seed)
    model = make()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if bns:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for bn in bns:
                bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
                bn.bias.copy_(torch.randn(bn.num_features, generator=gen) * 0.2)
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average over the stats pass
            batch = torch.from_numpy(np.concatenate(_photos(BN_STATS_IMAGES, IMAGE_SIZE)))
            model.train()
            model(batch)
    return model.eval()


def _photos(count: int, size: int) -> list[np.ndarray]:
    from tvm_mpq.data.images import sample_images, to_nchw

    return to_nchw(sample_images(count, (size, size)), MEAN, STD)


def calibration(count: int, size: int = IMAGE_SIZE) -> list[Feed]:
    """``count`` real photos, 1x3xSxS, ImageNet mean/std."""
    return [{INPUT_NAME: a} for a in _photos(count, size)]


def graph(arch: str, size: int = IMAGE_SIZE):
    """The stage-A graph of ``arch`` for a 1x3x``size``x``size`` input (the zoo uses 224)."""
    from tvm_mpq.frontends.torch_frontend import from_module

    example = {INPUT_NAME: np.zeros((1, 3, size, size), np.float32)}
    return from_module(build(arch), example, arch)


def _register() -> None:
    from tvm_mpq.zoo.registry import ZooModel, register, torch_reference

    for arch, (_, title) in ARCHITECTURES.items():
        register(ZooModel(
            name=arch,
            task="architecture-only",
            description=f"{title}, random seeded weights (architecture only: latency/BOPs, "
                        "no accuracy claims), 1x3x224x224, real sample photos",
            pretrained=False,
            build_graph=partial(graph, arch),
            calibration=calibration,
            reference=torch_reference(partial(build, arch)),
            extra={"image_size": IMAGE_SIZE, "mean": MEAN, "std": STD, "seed": SEED},
        ))


_register()
