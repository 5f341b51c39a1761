"""In-memory datasets with fixed, seeded train / validation / test splits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SPLIT_SEED = 0
"""Splits are fixed by this seed, not by a run's seed, so every run of a task sees the same data."""


@dataclass(frozen=True, eq=False)
class ClassificationData:
    """Inputs and labels of the three splits.

    ``*_x`` holds raw inputs: uint8 images (N, C, H, W) scaled by 1/255 before normalisation,
    or float signals (N, C, L). ``mean`` / ``std`` are per-channel statistics of the training
    split, applied by :meth:`normalize`.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    kind = "classification"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.train_x.dim() == 4

    def normalize(self, x: Tensor) -> Tensor:
        """Raw inputs -> normalised float32 inputs, on whatever device ``x`` is."""
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.mean, device=x.device).view(shape)
        std = torch.tensor(self.std, device=x.device).view(shape)
        return (x - mean) / std

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        return {"train": (self.train_x, self.train_y), "val": (self.val_x, self.val_y), "test": (self.test_x, self.test_y)}[name]

    def model_kwargs(self) -> dict:
        return {"input_shape": self.input_shape, "num_classes": self.num_classes}


@dataclass(frozen=True, eq=False)
class LanguageData:
    """Token streams (1-D integer tensors) of the three splits and the vocabulary size."""

    name: str
    train: Tensor
    val: Tensor
    test: Tensor
    vocab_size: int

    kind = "language"

    def split(self, name: str) -> Tensor:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def model_kwargs(self) -> dict:
        return {"vocab_size": self.vocab_size}


Dataset = ClassificationData | LanguageData
