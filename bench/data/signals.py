"""MNIST-1D (Greydanus 2020), generated procedurally by the ``mnist1d`` package: no download.

``make_dataset`` with the package's default arguments reproduces the published data set (4,000
training and 1,000 test signals of length 40, 10 classes). With ``shuffle_seq=True`` it draws
one fixed permutation of the 40 time steps and applies it to every signal: the paper's
"shuffled" variant, in which local structure is gone and only position-wise features remain.

Generating takes a few seconds (most of it importing the package and interpolating 5,000 signals),
which every worker process of a campaign would pay again; the arrays are therefore kept in the data
directory as ``mnist1d/<variant>-<package version>.npz`` (plain arrays, read without pickle) and
generated again when that file is missing or unreadable.
"""

from __future__ import annotations

import random
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

from bench.data.base import ClassificationData
from bench.data.splits import holdout_validation
from grafs.files import atomic_path

VAL_FRACTION = 0.1
ARRAYS = {"x": (4000, 40), "y": (4000,), "x_test": (1000, 40), "y_test": (1000,)}
"""The arrays kept of a generated data set, with their shapes (the package's default arguments)."""


def _generate(shuffle_seq: bool) -> dict:
    from mnist1d.data import get_dataset_args, make_dataset  # slow import, needed only here

    args = get_dataset_args()
    args.shuffle_seq = shuffle_seq
    # make_dataset reseeds the global generators; restore them so loading data leaves a run's seeding alone
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        return make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _generated(data_dir: Path, variant: str, shuffle_seq: bool) -> dict[str, np.ndarray]:
    """The generated arrays, from the data directory's copy when there is a readable one."""
    path = data_dir / "mnist1d" / f"{variant}-{metadata.version('mnist1d')}.npz"
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in ARRAYS}
        if all(arrays[key].shape == shape for key, shape in ARRAYS.items()):
            return arrays
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass  # missing or damaged: generate it again
    data = _generate(shuffle_seq)
    arrays = {key: np.asarray(data[key]) for key in ARRAYS}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary, open(temporary, "wb") as file:
            np.savez(file, **arrays)
    except OSError:
        pass  # a read-only data directory: generate in every process
    return arrays


def _mnist1d(data_dir: Path, name: str, shuffle_seq: bool) -> ClassificationData:
    data = _generated(data_dir, name, shuffle_seq)

    def signals(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32)[:, None, :]

    train = signals(data["x"]), data["y"]
    test = signals(data["x_test"]), data["y_test"]
    return holdout_validation(name, train, test, VAL_FRACTION, num_classes=10)


def load_mnist1d(data_dir: Path, download: bool) -> ClassificationData:
    return _mnist1d(data_dir, "mnist1d", shuffle_seq=False)


def load_mnist1d_shuffled(data_dir: Path, download: bool) -> ClassificationData:
    return _mnist1d(data_dir, "mnist1d-shuffled", shuffle_seq=True)
