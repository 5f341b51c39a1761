"""Image classification sets: scikit-learn's digits (bundled), CIFAR-10/100 and SVHN (from a data directory).

CIFAR is read from the official *binary* archives with numpy and SVHN from its .mat files: this
suite never unpickles a file. Downloads happen only when asked for, through torchvision's
checked downloaders and the official MD5 sums.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import scipy.io

from bench.data.base import ClassificationData
from bench.data.splits import Arrays, classification_data, holdout_validation, permuted_split
from grafs.errors import UserError

CIFAR_VAL_FRACTION = 0.1
"""50,000 official training images -> 45,000 train / 5,000 validation."""

SVHN_VAL_FRACTION = 0.05
"""73,257 core training images -> 69,594 train / 3,663 validation."""

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
SVHN_FILES = {"train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
              "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3")}


@dataclass(frozen=True)
class CifarArchive:
    """One official CIFAR binary archive: records of label byte(s) then 3 x 32 x 32 pixels, channel-major."""

    title: str
    url: str
    md5: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_bytes: int
    num_classes: int

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + 3 * 32 * 32


CIFAR10 = CifarArchive(
    "CIFAR-10", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
    "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",), 1, 10,
)
CIFAR100 = CifarArchive(  # two label bytes, coarse then fine: the fine label is used
    "CIFAR-100", "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
    "cifar-100-binary", ("train.bin",), ("test.bin",), 2, 100,
)


def _not_found(title: str, root: Path, missing: Path, what: str, url: str) -> UserError:
    return UserError(
        f"{title} not found in {root} (no {missing.relative_to(root)}): put {what} there (from {url}) "
        "or pass --download to grafs-bench train or search on a machine with a network"
    )


def _download(title: str, url: str, fetch: Callable[[], object]) -> None:
    try:
        fetch()
    except (OSError, RuntimeError) as error:  # no network, or a failed MD5 check
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        message = f"downloading {title} from {url} failed ({reason}); fetch it on a machine with a network"
        raise UserError(message) from None


def _checked_labels(path: Path, labels: np.ndarray, num_classes: int) -> np.ndarray:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{path} holds labels outside 0..{num_classes - 1}: delete it and fetch it again")
    return labels.astype(np.int64)


def load_digits(data_dir: Path, download: bool) -> ClassificationData:
    """scikit-learn's 1,797 8x8 digits (values 0..16, rescaled to uint8 0..255), split 60/20/20 at random."""
    from sklearn.datasets import load_digits as bundled_digits  # slow import, needed only here

    x, y = bundled_digits(return_X_y=True)
    images = np.rint(x * 255 / 16).astype(np.uint8).reshape(-1, 1, 8, 8)
    train, val, test = permuted_split(len(y), (0.6, 0.2, 0.2))
    return classification_data("digits", (images[train], y[train]), (images[val], y[val]),
                               (images[test], y[test]), num_classes=10)


def _read_cifar(paths: list[Path], archive: CifarArchive) -> Arrays:
    images, labels = [], []
    for path in paths:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % archive.record_bytes:
            raise UserError(f"{path} is not a {archive.title} binary batch ({raw.size} bytes is not a whole number of "
                            f"{archive.record_bytes}-byte records): delete it and fetch it again")
        records = raw.reshape(-1, archive.record_bytes)
        images.append(records[:, archive.label_bytes:].reshape(-1, 3, 32, 32))
        labels.append(_checked_labels(path, records[:, archive.label_bytes - 1], archive.num_classes))
    return np.concatenate(images), np.concatenate(labels)


def _load_cifar(name: str, archive: CifarArchive, data_dir: Path, download: bool) -> ClassificationData:
    root = data_dir / name
    train_paths = [root / archive.folder / file for file in archive.train_files]
    test_paths = [root / archive.folder / file for file in archive.test_files]
    missing = [path for path in train_paths + test_paths if not path.is_file()]
    if missing and download:
        from torchvision.datasets.utils import download_and_extract_archive  # slow import, needed only here

        _download(archive.title, archive.url, partial(download_and_extract_archive, archive.url, str(root),
                                                      md5=archive.md5, remove_finished=True))
        missing = [path for path in missing if not path.is_file()]
    if missing:
        raise _not_found(archive.title, root, missing[0], archive.folder, archive.url)
    train, test = _read_cifar(train_paths, archive), _read_cifar(test_paths, archive)
    return holdout_validation(name, train, test, CIFAR_VAL_FRACTION, archive.num_classes)


def load_cifar10(data_dir: Path, download: bool) -> ClassificationData:
    return _load_cifar("cifar10", CIFAR10, data_dir, download)


def load_cifar100(data_dir: Path, download: bool) -> ClassificationData:
    return _load_cifar("cifar100", CIFAR100, data_dir, download)


def _read_svhn(path: Path) -> Arrays:
    try:
        contents = scipy.io.loadmat(path)
        x, y = contents["X"], contents["y"]
    except (OSError, ValueError, KeyError, NotImplementedError, scipy.io.matlab.MatReadError) as error:
        raise UserError(f"{path} is not an SVHN .mat file ({type(error).__name__}: {error}): "
                        "delete it and fetch it again") from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.size:
        raise UserError(f"{path} holds X of shape {x.shape} and {y.size} labels, not (32, 32, 3, N) and N: "
                        "delete it and fetch it again")
    labels = y.ravel().astype(np.int64)
    labels[labels == 10] = 0  # SVHN writes digit 0 as label 10
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1), dtype=np.uint8)  # (H, W, C, N) -> (N, C, H, W)
    return images, _checked_labels(path, labels, 10)


def load_svhn(data_dir: Path, download: bool) -> ClassificationData:
    """SVHN's core training split (the 531,131 "extra" images are not used) and its test split."""
    root = data_dir / "svhn"
    splits = {}
    for split, (filename, md5) in SVHN_FILES.items():
        path = root / filename
        if not path.is_file() and download:
            from torchvision.datasets.utils import download_url  # slow import, needed only here

            _download("SVHN", SVHN_URL + filename, partial(download_url, SVHN_URL + filename, str(root), filename, md5))
        if not path.is_file():
            raise _not_found("SVHN", root, path, filename, SVHN_URL + filename)
        splits[split] = _read_svhn(path)
    return holdout_validation("svhn", splits["train"], splits["test"], SVHN_VAL_FRACTION, num_classes=10)
