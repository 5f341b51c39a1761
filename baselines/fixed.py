"""The fixed activations every table compares against: ReLU, GELU, SiLU, ELU and LeakyReLU."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

FIXED_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": lambda: nn.ELU(alpha=1.0),
    "leaky_relu": lambda: nn.LeakyReLU(negative_slope=0.01),
}
