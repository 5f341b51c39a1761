"""In-memory datasets with fixed, seeded train / validation / test splits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
        pairs = {
            "train": (self.train_x, self.train_y),
            "val": (self.val_x, self.val_y),
            "test": (self.test_x, self.test_y),
        }
        return pairs[name]

    def model_kwargs(self) -> dict:
        return {"input_shape": self.input_shape, "num_classes": self.num_classes}


@dataclass(frozen=True, eq=False)
class LanguageData:
    """Token streams (1-D integer tensors) of the three splits and the vocabulary size.

    Streams are stored in the narrowest integer type (uint8 bytes, uint16 GPT-2 tokens, possibly
    memory-mapped), as nanoGPT does; :meth:`windows` cuts int64 batches out of them.
    """

    name: str
    train: Tensor
    val: Tensor
    test: Tensor
    vocab_size: int

    kind = "language"

    def split(self, name: str) -> Tensor:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def windows(self, split: str, starts: Tensor, length: int) -> tuple[Tensor, Tensor]:
        """Inputs ``tokens[s : s + length]`` and their next-token targets for each start ``s``, int64 (B, length)."""
        offsets = starts.view(-1, 1).cpu() + torch.arange(length + 1)
        chunk = self.split(split)[offsets].long()
        return chunk[:, :-1], chunk[:, 1:]

    def model_kwargs(self) -> dict:
        return {"vocab_size": self.vocab_size}


Dataset = ClassificationData | LanguageData


DATA_DIR_ENV = "GRAFS_BENCH_DATA"


def default_data_dir() -> Path:
    """``$GRAFS_BENCH_DATA`` if set, else ``~/.cache/grafs-bench/data``."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "grafs-bench" / "data"
