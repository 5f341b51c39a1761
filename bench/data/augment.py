"""Augmentations of image batches, drawn from the batch stream's own generator (reproducible per seed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from grafs.errors import UserError

AUGMENTATIONS = ("none", "crop_flip", "trivial_augment")


def random_crop(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad by ``padding`` and crop back to size at a random offset per image."""
    n, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4).permute(0, 2, 3, 1)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, :, None]
    cols = (dx[:, None] + torch.arange(width))[:, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols].permute(0, 3, 1, 2)


def random_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def trivial_augment(images: Tensor) -> Tensor:
    from torchvision.transforms import v2

    augment = v2.TrivialAugmentWide()
    return torch.stack([augment(image) for image in images])


def augment_batch(images: Tensor, augment: str, generator: torch.Generator) -> Tensor:
    if augment == "none" or images.dim() != 4:
        return images
    if augment == "trivial_augment":
        images = trivial_augment(images)
    elif augment != "crop_flip":
        raise UserError(f"unknown augmentation {augment!r}; valid choices: crop_flip, none, trivial_augment")
    padding = max(1, images.shape[-1] // 8)  # 4 pixels on 32x32 images, as the recipes state
    return random_flip(random_crop(images, padding, generator), generator)
