"""CIFAR ResNet (He et al. 2016, section 4.2) with option-A shortcuts, depth 6n + 2.

Follows the widely used akamaster/pytorch_resnet_cifar10 implementation: 16/32/64 channels,
three stages of n basic blocks, parameter-free shortcuts, Kaiming-normal conv and linear weights.
ResNet20 on 3x32x32 inputs with 10 classes has 272,474 parameters.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from bench.models import MODELS, ActivationFactory
from grafs.errors import UserError

WIDTHS = (16, 32, 64)


class BasicBlock(nn.Module):
    """conv3-BN-act-conv3-BN, plus the shortcut, then act."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: ActivationFactory):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = activation()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = activation()
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def shortcut(self, x: Tensor) -> Tensor:
        # Option A: subsample by striding and zero-pad the new channels, so shortcuts add no parameters.
        if self.stride == 1 and self.extra_channels == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):

    def __init__(self, blocks_per_stage: int, activation: ActivationFactory, in_channels: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(WIDTHS[0])
        self.act = activation()
        blocks = []
        channels = WIDTHS[0]
        for stage, width in enumerate(WIDTHS):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(channels, width, stride, activation))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        # Adaptive pooling lets the same network take 32x32 images and 8x8 digits alike.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.head(self.pool(x).flatten(1))


def _build(depth: int, activation: ActivationFactory, input_shape: tuple[int, ...], num_classes: int) -> CifarResNet:
    if len(input_shape) != 3:
        raise UserError(f"resnet{depth} takes images shaped (C, H, W), got input_shape {tuple(input_shape)}")
    return CifarResNet((depth - 2) // 6, activation, input_shape[0], num_classes)


@MODELS.register("resnet20")
def resnet20(activation: ActivationFactory, *, input_shape: tuple[int, ...], num_classes: int) -> CifarResNet:
    return _build(20, activation, input_shape, num_classes)


@MODELS.register("resnet32")
def resnet32(activation: ActivationFactory, *, input_shape: tuple[int, ...], num_classes: int) -> CifarResNet:
    return _build(32, activation, input_shape, num_classes)


@MODELS.register("resnet44")
def resnet44(activation: ActivationFactory, *, input_shape: tuple[int, ...], num_classes: int) -> CifarResNet:
    return _build(44, activation, input_shape, num_classes)


@MODELS.register("resnet56")
def resnet56(activation: ActivationFactory, *, input_shape: tuple[int, ...], num_classes: int) -> CifarResNet:
    return _build(56, activation, input_shape, num_classes)
