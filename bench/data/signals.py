"""MNIST-1D (Greydanus 2020), generated procedurally by the ``mnist1d`` package: no download.

``make_dataset`` with the package's default arguments reproduces the published data set (4,000
training and 1,000 test signals of length 40, 10 classes). With ``shuffle_seq=True`` it draws
one fixed permutation of the 40 time steps and applies it to every signal: the paper's
"shuffled" variant, in which local structure is gone and only position-wise features remain.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from bench.data.base import ClassificationData
from bench.data.splits import holdout_validation

VAL_FRACTION = 0.1


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


def _mnist1d(name: str, shuffle_seq: bool) -> ClassificationData:
    data = _generate(shuffle_seq)

    def signals(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32)[:, None, :]

    train = signals(data["x"]), data["y"]
    test = signals(data["x_test"]), data["y_test"]
    return holdout_validation(name, train, test, VAL_FRACTION, num_classes=10)


def load_mnist1d(data_dir: Path, download: bool) -> ClassificationData:
    return _mnist1d("mnist1d", shuffle_seq=False)


def load_mnist1d_shuffled(data_dir: Path, download: bool) -> ClassificationData:
    return _mnist1d("mnist1d-shuffled", shuffle_seq=True)
