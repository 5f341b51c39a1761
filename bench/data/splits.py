"""Seeded splits and training-split statistics shared by the loaders."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from bench.data.base import SPLIT_SEED, ClassificationData

Arrays = tuple[np.ndarray, np.ndarray]


def split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Sizes of consecutive parts of ``n`` items: ``round(f * n)`` for every part but the first, which gets the rest."""
    rest = [round(fraction * n) for fraction in fractions[1:]]
    return [n - sum(rest), *rest]


def permuted_split(n: int, fractions: Sequence[float]) -> list[np.ndarray]:
    """Disjoint, sorted index sets of a permutation of ``range(n)`` seeded by :data:`SPLIT_SEED`."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    bounds = np.cumsum(split_sizes(n, fractions))[:-1]
    return [np.sort(part) for part in np.split(order, bounds)]


def contiguous_split(tokens: Tensor, fractions: Sequence[float]) -> list[Tensor]:
    """Consecutive pieces of a token stream, so that no context window crosses from one split into another."""
    return list(torch.split(tokens, split_sizes(len(tokens), fractions)))


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation, of ``x / 255`` for uint8 images."""
    if x.dtype == np.uint8:
        values = np.arange(256) / 255.0
        counts = [np.bincount(x[:, channel].ravel(), minlength=256) for channel in range(x.shape[1])]
        means = [float(c @ values / c.sum()) for c in counts]
        stds = [float(np.sqrt(c @ (values - m) ** 2 / c.sum())) for c, m in zip(counts, means, strict=True)]
        return tuple(means), tuple(stds)
    axes = (0, *range(2, x.ndim))
    return tuple(x.mean(axis=axes, dtype=np.float64).tolist()), tuple(x.std(axis=axes, dtype=np.float64).tolist())


def classification_data(
    name: str, train: Arrays, val: Arrays, test: Arrays, num_classes: int
) -> ClassificationData:
    """The record for three (inputs, labels) splits, with statistics taken from the training split."""
    mean, std = channel_stats(train[0])

    def tensors(part: Arrays) -> tuple[Tensor, Tensor]:
        x, y = part
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))

    return ClassificationData(name, *tensors(train), *tensors(val), *tensors(test), num_classes, mean, std)


def holdout_validation(
    name: str, train: Arrays, test: Arrays, val_fraction: float, num_classes: int
) -> ClassificationData:
    """Split a seeded ``val_fraction`` of the official training set off as validation; test stays the test set."""
    keep, held = permuted_split(len(train[1]), (1.0 - val_fraction, val_fraction))
    x, y = train
    return classification_data(name, (x[keep], y[keep]), (x[held], y[held]), test, num_classes)
