"""Writing files safely: atomic replacement and advisory locks, in one place.

* ``atomic_write_text`` / ``atomic_write_json`` / ``atomic_open``: the content goes to a temporary
  file in the target's directory, is flushed and fsynced, then ``os.replace``-d over the target, so
  a reader sees the old file or the new one, never half of one; on any failure the temporary file
  is removed and the old file is left as it was.
* ``file_lock``: an exclusive ``fcntl.flock`` on a lock file, held for a ``with`` block (advisory:
  it serialises the processes that take the same lock, on POSIX; elsewhere it is a no-op).
* ``write_jsonl`` / ``write_examples``: JSON lines, written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from bot.errors import DataError
from bot.examples import Example

try:  # POSIX advisory locks
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX platforms
    fcntl = None  # type: ignore[assignment]


class LockBusy(OSError):
    """``file_lock(..., blocking=False)`` found the lock held by another process (or open file)."""


@contextmanager
def atomic_open(path: str | os.PathLike[str], *, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """A text file handle whose content replaces ``path`` when the block ends without an error.
    The parent directory must exist. An error inside the block (or while replacing) removes the
    temporary file and leaves ``path`` untouched."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text`` atomically (see ``atomic_open``)."""
    with atomic_open(path, encoding=encoding) as fh:
        fh.write(text)


def atomic_write_json(
    path: str | os.PathLike[str], data: Any, *, indent: int | None = 2, sort_keys: bool = True
) -> None:
    """Replace ``path`` with ``data`` as JSON (and a final newline) atomically. ``data`` is encoded
    before the temporary file is created, so a value that is not JSON leaves nothing behind."""
    atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")


@contextmanager
def file_lock(path: str | os.PathLike[str], *, blocking: bool = True) -> Iterator[Path]:
    """Hold an exclusive advisory lock on ``path`` (created, with its parents, if missing) for the
    ``with`` block. ``blocking=False``: raise LockBusy at once instead of waiting. The lock is
    released when the block ends, even by an exception; a killed process releases it too."""
    lock_path = Path(path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError as exc:
                raise LockBusy(exc.errno, f"{lock_path} is locked by another process") from exc
        try:
            yield lock_path
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write JSON lines atomically, creating the parent directory; returns the number of rows.
    A file-system failure is a DataError naming the file."""
    target = Path(path)
    count = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(target) as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
    except OSError as exc:
        raise DataError(f"cannot write: {exc.strerror or exc}", str(target)) from exc
    return count


def write_examples(path: str | os.PathLike[str], examples: Iterable[Example]) -> int:
    """Write examples as JSON lines, atomically."""
    return write_jsonl(path, (ex.to_dict() for ex in examples))
