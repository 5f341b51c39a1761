"""Model families. Each builder takes its activation as a factory called once per activation site."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from bench.registry import Registry

ActivationFactory = Callable[[], nn.Module]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def create_model(name: str, activation: ActivationFactory, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with ``activation()`` at every activation site."""
    return MODELS.get(name)(activation, **kwargs)


# Imported last, for their side effect of registering the builders above.
from bench.models import gpt, resnet1d, resnet_cifar, vit  # noqa: E402, F401
