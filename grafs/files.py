"""Small file helpers shared by everything that writes results."""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A new temporary file next to ``path`` to write into: it replaces ``path`` when the block ends,
    and is removed when the block fails or is interrupted, so readers never see half a file and
    nothing is left behind.

    The file is created with mode 0666 less the umask, like any other new file (``mkstemp``'s
    0600 would make results unreadable to the user's group). Its name ends in ``.tmp``.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data: object) -> None:
    """Write ``data`` as indented JSON, atomically (non-finite floats become null)."""
    write_text_atomic(path, json.dumps(_finite(data), indent=2) + "\n")


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
