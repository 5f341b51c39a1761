import random
import socket

import numpy as np
import pytest
import scipy.io
import torch

from bench.data import DATASETS, ClassificationData, LanguageData, default_data_dir, load_dataset, prepare_tinystories
from bench.data.splits import permuted_split, split_sizes
from bench.data.text import byte_corpus, pydoc_topics, stdlib_source
from grafs.errors import UserError

OFFLINE = {
    # name: (train, val, test) sizes, input shape (None for text)
    "mnist1d": ((3600, 400, 1000), (1, 40)),
    "mnist1d-shuffled": ((3600, 400, 1000), (1, 40)),
    "digits": ((1079, 359, 359), (1, 8, 8)),
    "pydoc-text": (split_sizes(len(pydoc_topics()), (0.9, 0.05, 0.05)), None),
    "stdlib-text": ((1_800_000, 100_000, 100_000), None),
}


def same(a, b) -> bool:
    if isinstance(a, ClassificationData):
        fields = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
        return all(torch.equal(getattr(a, f), getattr(b, f)) for f in fields) and (a.mean, a.std) == (b.mean, b.std)
    return all(torch.equal(a.split(s), b.split(s)) for s in ("train", "val", "test")) and a.vocab_size == b.vocab_size


def rows(x: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in x.numpy()}


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_dataset_shapes_and_splits(name):
    sizes, shape = OFFLINE[name]
    data = load_dataset(name)
    assert data.name == name
    assert load_dataset(name) is data  # cached in-process
    if shape is None:
        assert isinstance(data, LanguageData) and data.vocab_size == 256
        assert tuple(len(data.split(s)) for s in ("train", "val", "test")) == tuple(sizes)
        assert all(data.split(s).dtype == torch.uint8 and data.split(s).dim() == 1 for s in ("train", "val", "test"))
        return
    assert isinstance(data, ClassificationData) and data.num_classes == 10 and data.input_shape == shape
    assert tuple(len(data.split(s)[1]) for s in ("train", "val", "test")) == sizes
    assert data.train_x.dtype == (torch.float32 if len(shape) == 2 else torch.uint8)
    assert all(data.split(s)[1].dtype == torch.int64 for s in ("train", "val", "test"))
    assert set(data.train_y.tolist()) == set(range(10))
    train, val, test = (rows(data.split(s)[0]) for s in ("train", "val", "test"))
    assert len(train) == sizes[0] and not (train & val or train & test or val & test)
    normalized = data.normalize(data.train_x)
    assert normalized.dtype == torch.float32
    assert normalized.mean().abs() < 1e-3 and (normalized.std() - 1).abs() < 1e-2


def test_text_splits_are_contiguous_pieces_of_the_corpus():
    for name, corpus in (("pydoc-text", pydoc_topics()), ("stdlib-text", stdlib_source())):
        data = load_dataset(name)
        assert bytes(torch.cat([data.train, data.val, data.test]).numpy()) == corpus
    assert len(stdlib_source()) == 2_000_000


@pytest.mark.parametrize("name", ["mnist1d", "digits", "pydoc-text"])
def test_loading_again_gives_identical_data_and_leaves_global_seeding_alone(name, tmp_path):
    np.random.seed(123)
    random.seed(123)
    expected = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    fresh = DATASETS.get(name)(tmp_path, False)  # bypasses the cache
    assert (np.random.rand(), random.random()) == expected
    assert same(fresh, load_dataset(name))


def test_shuffled_mnist1d_is_one_fixed_permutation_of_the_time_steps():
    plain, shuffled = load_dataset("mnist1d"), load_dataset("mnist1d-shuffled")
    assert torch.equal(plain.train_y, shuffled.train_y) and not torch.equal(plain.train_x, shuffled.train_x)
    columns = plain.train_x[:, 0].T  # (40, N)
    distances = torch.cdist(shuffled.train_x[:, 0].T, columns)
    order = distances.argmin(dim=1)
    assert sorted(order.tolist()) == list(range(40))
    torch.testing.assert_close(shuffled.test_x, plain.test_x[..., order], atol=1e-5, rtol=0)


def test_permuted_split_is_a_seeded_partition():
    parts = permuted_split(1797, (0.6, 0.2, 0.2))
    assert [len(p) for p in parts] == [1079, 359, 359]
    assert sorted(np.concatenate(parts).tolist()) == list(range(1797))
    assert all(np.array_equal(a, b) for a, b in zip(parts, permuted_split(1797, (0.6, 0.2, 0.2)), strict=True))
    assert [len(p) for p in permuted_split(50_000, (0.9, 0.1))] == [45_000, 5_000]


def write_cifar(path, records, label_bytes, num_classes, rng):
    """Official binary layout: per record the label byte(s), then 1024 red, 1024 green, 1024 blue bytes, row-major."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = rng.integers(0, 256, (records, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, num_classes, records, dtype=np.uint8)
    head = np.stack([y // 5] * (label_bytes - 1) + [y], axis=1)  # CIFAR-100: coarse, then fine
    np.concatenate([head, x.reshape(records, -1)], axis=1).tofile(path)
    return x, y.astype(np.int64)


def concatenated(parts):
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def check_holdout(data, train, test, val_fraction):
    keep, held = permuted_split(len(train[1]), (1 - val_fraction, val_fraction))
    assert np.array_equal(data.train_x.numpy(), train[0][keep]) and np.array_equal(data.train_y.numpy(), train[1][keep])
    assert np.array_equal(data.val_x.numpy(), train[0][held]) and np.array_equal(data.val_y.numpy(), train[1][held])
    assert np.array_equal(data.test_x.numpy(), test[0]) and np.array_equal(data.test_y.numpy(), test[1])
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    pixels = train[0][keep] / 255.0
    np.testing.assert_allclose(data.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(data.std, pixels.std(axis=(0, 2, 3)), rtol=1e-9)


def test_cifar10_reads_the_binary_format(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    train = concatenated([write_cifar(folder / f"data_batch_{i}.bin", 20, 1, 10, rng) for i in range(1, 6)])
    test = write_cifar(folder / "test_batch.bin", 20, 1, 10, rng)
    data = DATASETS.get("cifar10")(tmp_path, False)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (90, 10, 20)
    check_holdout(data, train, test, 0.1)
    assert same(data, DATASETS.get("cifar10")(tmp_path, False))


def test_cifar100_uses_the_fine_label(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar100" / "cifar-100-binary"
    train = write_cifar(folder / "train.bin", 40, 2, 100, rng)
    test = write_cifar(folder / "test.bin", 10, 2, 100, rng)
    data = load_dataset("cifar100", tmp_path)
    assert data.num_classes == 100 and (len(data.train_y), len(data.val_y), len(data.test_y)) == (36, 4, 10)
    check_holdout(data, train, test, 0.1)


def test_a_truncated_cifar_file_is_a_user_error(tmp_path):
    folder = tmp_path / "cifar100" / "cifar-100-binary"
    for file in ("train.bin", "test.bin"):
        write_cifar(folder / file, 3, 2, 100, np.random.default_rng(3))
    with open(folder / "test.bin", "ab") as stream:
        stream.write(b"\0")
    with pytest.raises(UserError, match="test.bin is not a CIFAR-100 binary batch"):
        DATASETS.get("cifar100")(tmp_path, False)


def test_svhn_reads_mat_files(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "svhn"
    root.mkdir()
    splits = {}
    for file, n in (("train_32x32.mat", 40), ("test_32x32.mat", 10)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # SVHN's (H, W, C, N) layout
        y = np.arange(n, dtype=np.uint8).reshape(n, 1) % 10 + 1  # labels 1..10, 10 meaning digit 0
        scipy.io.savemat(root / file, {"X": x, "y": y})
        splits[file] = x.transpose(3, 2, 0, 1), y.ravel().astype(np.int64) % 10
    data = DATASETS.get("svhn")(tmp_path, False)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (38, 2, 10)
    check_holdout(data, splits["train_32x32.mat"], splits["test_32x32.mat"], 0.05)
    assert data.test_y.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def test_tinystories_reads_uint16_token_files(tmp_path):
    root = tmp_path / "tinystories"
    root.mkdir()
    train = np.arange(1000, dtype=np.uint16) * 50
    val = np.arange(101, dtype=np.uint16) + 50_000
    train.tofile(root / "train.bin")
    val.tofile(root / "val.bin")
    data = load_dataset("tinystories", tmp_path)
    assert isinstance(data, LanguageData) and data.vocab_size == 50257
    assert data.train.dtype == torch.uint16 and np.array_equal(data.train.numpy(), train)
    assert np.array_equal(data.val.numpy(), val[:50]) and np.array_equal(data.test.numpy(), val[50:])
    batch = next(data.evaluation_batches("val", 2, "cpu", block_size=8))  # blocks at 0 and 8
    x, y = batch.inputs, batch.targets
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (2, 8)
    assert x[1].tolist() == list(range(50_008, 50_016)) and y[1].tolist() == list(range(50_009, 50_017))


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar10"), ("cifar100", "cifar100"),
                                          ("svhn", "svhn"), ("tinystories", "tinystories")])
def test_missing_data_says_where_to_put_it(name, folder, tmp_path):
    with pytest.raises(UserError, match="not found in") as error:
        load_dataset(name, tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / folder) in message and "\n" not in message


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(UserError, match="unknown dataset 'cifar11'.*cifar10, cifar100"):
        load_dataset("cifar11")


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAFS_BENCH_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("GRAFS_BENCH_DATA")
    assert default_data_dir().parts[-3:] == (".cache", "grafs-bench", "data")


def network_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        return False
    return True


def test_prepare_tinystories_offline_is_one_clear_error(tmp_path):
    if network_reachable():
        pytest.skip("a network is present: preparing would download all of TinyStories")
    with pytest.raises(UserError, match="network") as error:
        prepare_tinystories(tmp_path)
    assert "\n" not in str(error.value)
    assert not any(tmp_path.rglob("*.bin"))


def test_byte_corpus_splits_90_5_5():
    data = byte_corpus("tiny", bytes(range(200)))
    assert (len(data.train), len(data.val), len(data.test)) == (180, 10, 10)
    assert data.val.tolist() == list(range(180, 190))


def test_mnist1d_keeps_its_generated_arrays_in_the_data_directory(tmp_path):
    generated = DATASETS.get("mnist1d")(tmp_path, False)
    (stored,) = (tmp_path / "mnist1d").glob("mnist1d-*.npz")
    with np.load(stored, allow_pickle=False) as arrays:
        kept = {key: arrays[key] for key in arrays.files}
    # A later process reads the copy: altered labels in it show up in the loaded data.
    np.savez(stored, **{**kept, "y_test": (kept["y_test"] + 1) % 10})
    assert torch.equal(DATASETS.get("mnist1d")(tmp_path, False).test_y, (generated.test_y + 1) % 10)
    stored.write_bytes(b"not an npz archive")  # damaged: generated again and stored again
    assert same(DATASETS.get("mnist1d")(tmp_path, False), generated)
    with np.load(stored, allow_pickle=False) as arrays:
        assert np.array_equal(arrays["y_test"], kept["y_test"])
