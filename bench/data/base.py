"""In-memory datasets with fixed, seeded train / validation / test splits."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from bench.data.augment import augment_batch
from grafs.batch import Batch

SPLIT_SEED = 0
"""Splits are fixed by this seed, not by a run's seed, so every run of a task sees the same data."""


Part = Tensor | slice | None
"""A part of the training split: indices of samples (classification), a slice of the token stream
(language), or None for all of it."""


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

    # Batching: how this kind of data is cut into samples -------------------------------------
    def samples_per_epoch(self, block_size: int | None = None) -> int:
        """Samples in one epoch of the training split."""
        return len(self.train_y)

    def search_split(self, arch_share: float) -> tuple[Tensor, Tensor]:
        """The training split by index: the first ``1 - arch_share`` and the rest."""
        size = len(self.train_y)
        boundary = int(round(size * (1 - arch_share)))
        return torch.arange(boundary), torch.arange(boundary, size)

    def part_size(self, part: Part) -> int:
        return len(self.train_y) if part is None else len(part)

    def training_batches(
        self, part: Part, batch_size: int, generator: torch.Generator, device, augment: str = "none",
        block_size: int | None = None,
    ) -> Iterator[Batch]:
        """One shuffled epoch over ``part`` of the training split, augmented."""
        indices = torch.arange(len(self.train_y)) if part is None else part
        order = indices[torch.randperm(len(indices), generator=generator)]
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            inputs = augment_batch(self.train_x[chosen], augment, generator)
            yield Batch(self.normalize(inputs.to(device)), self.train_y[chosen].to(device))

    def evaluation_batches(
        self, split: str, batch_size: int, device, part: Part = None, block_size: int | None = None,
        max_batches: int = 0,
    ) -> Iterator[Batch]:
        """The whole split (or ``part`` of it) in order."""
        inputs, targets = self.split(split)
        if part is not None:
            inputs, targets = inputs[part], targets[part]
        for start in range(0, len(targets), batch_size):
            yield Batch(
                self.normalize(inputs[start : start + batch_size].to(device)),
                targets[start : start + batch_size].to(device),
            )


@dataclass(frozen=True, eq=False)
class LanguageData:
    """Token streams (1-D integer tensors) of the three splits and the vocabulary size.

    Streams are stored in the narrowest integer type (uint8 bytes, uint16 GPT-2 tokens, possibly
    memory-mapped), as nanoGPT does; batches are int64 blocks cut out of them. A sample is one
    block of ``block_size`` tokens (the model's context) and its next-token targets.
    """

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

    def samples_per_epoch(self, block_size: int | None = None) -> int:
        """Blocks of ``block_size`` tokens in the training stream."""
        return len(self.train) // block_size

    def search_split(self, arch_share: float) -> tuple[slice, slice]:
        """The training stream by position: the first ``1 - arch_share`` and the rest."""
        size = len(self.train)
        boundary = int(round(size * (1 - arch_share)))
        return slice(0, boundary), slice(boundary, size)

    def part_size(self, part: Part) -> int:
        return len(self.train if part is None else self.train[part])

    def training_batches(
        self, part: Part, batch_size: int, generator: torch.Generator, device, augment: str = "none",
        block_size: int | None = None,
    ) -> Iterator[Batch]:
        """Random blocks of ``part`` of the training stream, without end (as nanoGPT samples)."""
        tokens = self.train if part is None else self.train[part]
        while True:
            starts = torch.randint(len(tokens) - block_size - 1, (batch_size,), generator=generator)
            yield _blocks(tokens, starts, block_size, device)

    def evaluation_batches(
        self, split: str, batch_size: int, device, part: Part = None, block_size: int | None = None,
        max_batches: int = 0,
    ) -> Iterator[Batch]:
        """Consecutive blocks of the split (or of ``part`` of it), evenly thinned to ``max_batches``."""
        tokens = self.split(split) if part is None else self.split(split)[part]
        starts = torch.arange(0, len(tokens) - block_size - 1, block_size)
        limit = max_batches * batch_size
        if limit:
            starts = starts[:: max(1, math.ceil(len(starts) / limit))][:limit]
        for begin in range(0, len(starts), batch_size):
            yield _blocks(tokens, starts[begin : begin + batch_size], block_size, device)


def _blocks(tokens: Tensor, starts: Tensor, block_size: int, device) -> Batch:
    """The blocks of ``block_size`` tokens at ``starts`` and their targets shifted by one token, as int64."""
    window = tokens[starts[:, None] + torch.arange(block_size + 1)].long()
    return Batch(window[:, :-1].to(device), window[:, 1:].to(device))


Dataset = ClassificationData | LanguageData


DATA_DIR_ENV = "GRAFS_BENCH_DATA"


def default_data_dir() -> Path:
    """``$GRAFS_BENCH_DATA`` if set, else ``~/.cache/grafs-bench/data``."""
    configured = os.environ.get(DATA_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "grafs-bench" / "data"
