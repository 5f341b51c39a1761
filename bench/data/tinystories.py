"""TinyStories as GPT-2 BPE tokens in nanoGPT's layout: ``<data_dir>/tinystories/{train,val}.bin``.

Each file is a flat array of np.uint16 token ids, every story followed by the end-of-text token.
:func:`prepare_tinystories` writes them on a machine with a network; the loader only reads.
TinyStories has no test split, so the first half of ``val.bin`` is validation and the second
half is test.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from bench.data.base import LanguageData, default_data_dir
from grafs.errors import UserError
from grafs.files import atomic_path

VOCAB_SIZE = 50257
HF_DATASET = "roneneldan/TinyStories"
FILES = {"train": "train.bin", "validation": "val.bin"}
ENCODE_BATCH = 10_000


def _tokens(path: Path) -> torch.Tensor:
    size = path.stat().st_size
    if size == 0 or size % 2:
        raise UserError(f"{path} is not a file of uint16 tokens ({size} bytes): "
                        "delete it and run `grafs-bench prepare tinystories`")
    return torch.from_file(str(path), shared=False, size=size // 2, dtype=torch.uint16)


def load_tinystories(data_dir: Path, download: bool) -> LanguageData:
    root = data_dir / "tinystories"
    paths = [root / file for file in FILES.values()]
    if download and not all(path.is_file() for path in paths):
        prepare_tinystories(data_dir)
    for path in paths:
        if not path.is_file():
            raise UserError(f"TinyStories not found in {root} (no {path.name}): put train.bin and val.bin there "
                            "(GPT-2 tokens, written by `grafs-bench prepare tinystories`) "
                            "or pass --download to grafs-bench train or search on a machine with a network")
    train, val = (_tokens(path) for path in paths)
    half = len(val) // 2
    return LanguageData("tinystories", train, val[:half], val[half:], vocab_size=VOCAB_SIZE)


def _write_tokens(batches: Iterable[list[str]], encoding, path: Path) -> None:
    """Encode every story, append end-of-text, and write uint16 ids through a temporary file and a rename."""
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        for batch in batches:
            stories = encoding.encode_ordinary_batch(batch)
            ids = [token for story in stories for token in (*story, encoding.eot_token)]
            np.asarray(ids, dtype=np.uint16).tofile(stream)


def prepare_tinystories(data_dir: str | Path | None = None) -> Path:
    """Download TinyStories and GPT-2's tokenizer, and write the token files; needs a network. Returns the folder."""
    import datasets  # slow import, needed only here
    import tiktoken

    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    root = root / "tinystories"
    todo = {split: root / file for split, file in FILES.items() if not (root / file).is_file()}
    if not todo:
        return root
    try:  # the tokenizer first: offline it fails at once, the data set only after ~20 s of retries
        encoding = tiktoken.get_encoding("gpt2")
        stories = datasets.load_dataset(HF_DATASET)
    except OSError as error:  # ConnectionError and the Hub's errors are all OSErrors
        raise UserError(f"cannot fetch TinyStories ({HF_DATASET}) or the GPT-2 tokenizer ({type(error).__name__}): "
                        f"run prepare_tinystories on a machine with a network and copy its files to {root}") from None
    root.mkdir(parents=True, exist_ok=True)
    for split, path in todo.items():
        texts = (batch["text"] for batch in stories[split].iter(batch_size=ENCODE_BATCH))
        _write_tokens(texts, encoding, path)
    return root
