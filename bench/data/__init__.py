"""Datasets by name: ``load_dataset("cifar10")`` -> a record with fixed train / validation / test splits."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

from bench.data import images, signals, text, tinystories
from bench.data.base import SPLIT_SEED, ClassificationData, Dataset, LanguageData, default_data_dir
from bench.data.tinystories import prepare_tinystories
from bench.registry import Registry

__all__ = [
    "DATASETS", "SPLIT_SEED", "ClassificationData", "Dataset", "LanguageData", "Loader",
    "default_data_dir", "load_dataset", "prepare_tinystories",
]

Loader = Callable[[Path, bool], Dataset]
"""``loader(data_dir, download)``: builds the dataset from files under ``data_dir`` (or from nothing)."""

DATASETS: Registry[Loader] = Registry("dataset")
DATASETS.add("mnist1d", signals.load_mnist1d)
DATASETS.add("mnist1d-shuffled", signals.load_mnist1d_shuffled)
DATASETS.add("digits", images.load_digits)
DATASETS.add("cifar10", images.load_cifar10)
DATASETS.add("cifar100", images.load_cifar100)
DATASETS.add("svhn", images.load_svhn)
DATASETS.add("pydoc-text", text.load_pydoc_text)
DATASETS.add("stdlib-text", text.load_stdlib_text)
DATASETS.add("tinystories", tinystories.load_tinystories)


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False) -> Dataset:
    """The dataset ``name``, read from ``data_dir`` (default :func:`default_data_dir`), loaded once per process.

    ``download=True`` fetches missing files first (needs a network); without it missing files
    raise a :class:`~grafs.errors.UserError` saying where to put them.
    """
    DATASETS.get(name)
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return _load(name, root.resolve(), download)


@cache
def _load(name: str, data_dir: Path, download: bool) -> Dataset:
    return DATASETS.get(name)(data_dir, download)
