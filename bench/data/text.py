"""Two byte-level text corpora that ship with CPython itself: no download, no tokenizer files.

Both use UTF-8 bytes as tokens (vocabulary 256), so a model trained on one reads the other
unchanged and transfer between them is meaningful. Both are deterministic for a given CPython
version (they are CPython's own files) and are split contiguously 90 / 5 / 5 in reading order:
a random split of overlapping windows would leak training text into validation and test.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import numpy as np
import torch

from bench.data.base import LanguageData
from bench.data.splits import contiguous_split
from grafs.errors import UserError

SPLIT_FRACTIONS = (0.9, 0.05, 0.05)
STDLIB_BYTES = 2_000_000
STDLIB_EXCLUDED = frozenset({"site-packages", "test", "tests", "idlelib", "lib2to3"})
"""Folders left out: third-party code, test suites (full of odd data) and two bundled applications."""


def byte_corpus(name: str, text: bytes) -> LanguageData:
    tokens = torch.from_numpy(np.frombuffer(text, dtype=np.uint8).copy())
    train, val, test = (part.clone() for part in contiguous_split(tokens, SPLIT_FRACTIONS))
    return LanguageData(name, train, val, test, vocab_size=256)


def pydoc_topics() -> bytes:
    """The ~465k characters of reference-manual text behind ``help()``, topics in sorted-key order."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise UserError("this Python lacks pydoc_data (part of CPython's standard library): "
                        "install the full standard library or use another dataset") from None
    return "\n".join(topics[key] for key in sorted(topics)).encode("utf-8")


def stdlib_source(limit: int = STDLIB_BYTES) -> bytes:
    """The standard library's ``*.py`` files in sorted relative-path order, cut to ``limit`` bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [sub for sub in subfolders if sub not in STDLIB_EXCLUDED]
        paths += [Path(folder, file).relative_to(root).as_posix() for file in files if file.endswith(".py")]
    chunks, size = [], 0
    for path in sorted(paths):
        if size >= limit:
            break
        chunks.append((root / path).read_bytes())
        size += len(chunks[-1])
    if size < limit:
        raise UserError(f"only {size} bytes of standard-library source under {root}, {limit} needed: "
                        "install CPython's full standard library (with its .py files)")
    return b"".join(chunks)[:limit]


def load_pydoc_text(data_dir: Path, download: bool) -> LanguageData:
    return byte_corpus("pydoc-text", pydoc_topics())


def load_stdlib_text(data_dir: Path, download: bool) -> LanguageData:
    return byte_corpus("stdlib-text", stdlib_source())
