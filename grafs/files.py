"""Small file helpers shared by everything that writes results."""

from __future__ import annotations

import json
import math
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from grafs.errors import UserError


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


def check_writable_folder(path: Path, flag: str) -> None:
    """Refuse, before any work, a folder that cannot take outputs: an existing file, a path under a
    file, or a place where nothing can be created (read-only, no permission)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; pass a new or existing folder")
    _check_can_create(path, flag)


def check_writable_file(path: Path, flag: str) -> None:
    """Refuse, before any work, a file path that cannot be written: a folder, a path under a file,
    or a place where nothing can be created."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; pass a file path such as {path / 'activation.png'}")
    _check_can_create(path, flag)


def _check_can_create(path: Path, flag: str) -> None:
    existing = path if path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path} lies under {existing}, which is a file; pass another path")
    try:  # a probe, not os.access: that ignores read-only file systems for root and ACLs for everyone
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UserError(
            f"{flag} {path}: cannot create files in {existing} ({error.strerror}); pass a place you can write to"
        ) from None
