"""Files: writing them safely (atomic replacement, advisory locks) and opening the example and
dataset files the domain parses, in one place.

* ``atomic_write_text`` / ``atomic_write_json`` / ``atomic_open``: the content goes to a temporary
  file in the target's directory, is flushed and fsynced, then ``os.replace``-d over the target, so
  a reader sees the old file or the new one, never half of one; on any failure the temporary file
  is removed and the old file is left as it was.
* ``file_lock``: an exclusive ``fcntl.flock`` on a lock file, held for a ``with`` block (advisory:
  it serialises the processes that take the same lock, on POSIX; elsewhere it is a no-op).
* ``write_jsonl`` / ``write_examples``: JSON lines, written atomically.
* ``read_examples`` / ``read_dataset``: open a path and hand the open file to the domain's parser
  (``bot.examples.parse_examples``, ``bot.datasets.parse_dataset``), which reads it a line at a
  time; a file that cannot be opened is a DataError naming it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from bot.datasets import ImportResult, get_format, parse_dataset
from bot.errors import DataError
from bot.examples import Example, parse_examples

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


def read_examples(
    path: str | os.PathLike[str], skip_bad: bool = False, errors: list[str] | None = None
) -> Iterator[Example]:
    """The examples in a JSONL file, lazily (``bot.examples.parse_examples``). A bad line raises
    DataError naming file:line, or with ``skip_bad`` is skipped and its message appended to ``errors``."""
    name = str(path)
    try:
        fh = open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"cannot read examples: {exc.strerror}", name) from exc
    with fh:
        yield from parse_examples(fh, name, skip_bad=skip_bad, errors=errors)


def read_dataset(
    path: str | os.PathLike[str],
    fmt: str,
    *,
    field_map: Mapping[str, str] | None = None,
    skip_bad: bool = False,
    repo: str | None = None,
    keep_tool_comments: bool = False,
) -> ImportResult:
    """Read a dataset file of format ``fmt`` (``bot.datasets.parse_dataset``, which streams JSONL a
    line at a time). An unknown format is refused before the file is opened."""
    get_format(fmt, "import")
    name = str(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}", name) from exc
    with fh:
        return parse_dataset(
            fh,
            name,
            fmt,
            field_map=field_map,
            skip_bad=skip_bad,
            repo=repo,
            keep_tool_comments=keep_tool_comments,
        )
