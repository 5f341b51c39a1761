"""1-D convolutional ResNet for sequence classification (e.g. MNIST-1D, inputs 1x40).

The stem keeps the full sequence length and only later stages halve it: MNIST-1D digits are
short, translated patterns, and striding early throws away the detail that separates them.
"""

from __future__ import annotations

from torch import Tensor, nn

from bench.models import MODELS, ActivationFactory
from grafs.errors import UserError


class BasicBlock1d(nn.Module):
    """conv3-BN-act-conv3-BN, plus the shortcut, then act."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: ActivationFactory):
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.act1 = activation()
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.act2 = activation()
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv1d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm1d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet1d(nn.Module):

    def __init__(
        self,
        widths: tuple[int, ...],
        blocks_per_stage: int,
        activation: ActivationFactory,
        in_channels: int,
        num_classes: int,
    ):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, widths[0], 5, padding=2, bias=False)
        self.bn = nn.BatchNorm1d(widths[0])
        self.act = activation()
        blocks = []
        channels = widths[0]
        for stage, width in enumerate(widths):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock1d(channels, width, stride, activation))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.head(self.pool(x).flatten(1))


def _build(
    name: str,
    widths: tuple[int, ...],
    blocks_per_stage: int,
    activation: ActivationFactory,
    input_shape: tuple[int, ...],
    num_classes: int,
) -> ResNet1d:
    if len(input_shape) != 2:
        raise UserError(f"{name} takes signals shaped (C, L), got input_shape {tuple(input_shape)}")
    return ResNet1d(widths, blocks_per_stage, activation, input_shape[0], num_classes)


@MODELS.register("resnet1d_small")
def resnet1d_small(activation: ActivationFactory, *, input_shape: tuple[int, ...], num_classes: int) -> ResNet1d:
    return _build("resnet1d_small", (40, 80), 1, activation, input_shape, num_classes)


@MODELS.register("resnet1d_large")
def resnet1d_large(activation: ActivationFactory, *, input_shape: tuple[int, ...], num_classes: int) -> ResNet1d:
    return _build("resnet1d_large", (48, 96, 192), 2, activation, input_shape, num_classes)
