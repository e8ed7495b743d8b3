"""adapters.files (atomic writes, the advisory lock, JSON lines, opening example and dataset
files) and adapters.sqlite
(per-thread connections, write transactions)."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from adapters.files import (
    LockBusy,
    atomic_open,
    atomic_write_json,
    atomic_write_text,
    file_lock,
    read_dataset,
    read_examples,
    write_examples,
    write_jsonl,
)
from adapters.sqlite import ThreadConnections
from bot.errors import DataError, UsageError
from bot.examples import Example


def leftovers(directory: Path, keep: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


def test_atomic_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    atomic_write_text(target, "old\n")
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert leftovers(tmp_path, "report.json") == []


def test_a_failing_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "current.json"
    target.write_text("the old content\n")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_open(target) as fh:
            fh.write("half of the new con")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "the old content\n"
    assert leftovers(tmp_path, "current.json") == []

    with pytest.raises(TypeError):  # not JSON: refused before any temporary file exists
        atomic_write_json(target, {"when": object()})
    assert target.read_text() == "the old content\n" and leftovers(tmp_path, "current.json") == []


def test_a_failing_replace_removes_the_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import adapters.files as files

    target = tmp_path / "out.txt"
    target.write_text("old")

    def refuse(src: str, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(PermissionError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and leftovers(tmp_path, "out.txt") == []


def test_write_jsonl_counts_rows_and_names_the_file_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "er" / "rows.jsonl"
    assert write_jsonl(out, iter([{"a": 1}, {"b": "é"}])) == 2
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == [{"a": 1}, {"b": "é"}]
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match="cannot write") as caught:
        write_jsonl(blocker / "rows.jsonl", [{"a": 1}])  # its parent is a file
    assert str(blocker / "rows.jsonl") in str(caught.value) and caught.value.__cause__ is not None


def test_a_held_lock_refuses_a_non_blocking_taker(tmp_path: Path) -> None:
    lock = tmp_path / "sub" / ".lock"
    with file_lock(lock) as path:
        assert path == lock and lock.exists()
        with pytest.raises(LockBusy, match="locked by another process"):
            with file_lock(lock, blocking=False):
                pytest.fail("took a lock that is held")  # pragma: no cover
    with file_lock(lock, blocking=False):  # released at the end of the block
        pass


def test_a_blocking_taker_waits_for_the_release(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    order: list[str] = []
    holding = threading.Event()

    def holder() -> None:
        with file_lock(lock):
            holding.set()
            time.sleep(0.2)
            order.append("holder done")

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)
    with file_lock(lock):
        order.append("waiter in")
    thread.join()
    assert order == ["holder done", "waiter in"]


def test_the_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    with pytest.raises(ValueError):
        with file_lock(lock):
            raise ValueError("boom")
    with file_lock(lock, blocking=False):
        pass


# --------------------------------------------------------------------------- sqlite


def make_table(path: Path, **options: object) -> ThreadConnections:
    db = ThreadConnections(path, timeout=5.0, **options)  # type: ignore[arg-type]
    with db.transaction() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    return db


def test_transactions_commit_roll_back_and_nest(tmp_path: Path) -> None:
    db = make_table(tmp_path / "a.db")
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        with db.transaction() as inner:  # joins the outer transaction
            assert inner is conn
            inner.execute("INSERT INTO t VALUES (2)")
    with pytest.raises(RuntimeError):
        with db.transaction() as conn:
            conn.execute("INSERT INTO t VALUES (3)")
            with db.transaction() as inner:
                inner.execute("INSERT INTO t VALUES (4)")
            raise RuntimeError("undo both")
    rows = db.connection().execute("SELECT x FROM t ORDER BY x").fetchall()
    assert [r["x"] for r in rows] == [1, 2]  # rows are sqlite3.Row
    assert db.connection().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_one_connection_per_thread_and_close_all(tmp_path: Path) -> None:
    db = make_table(tmp_path / "b.db", write_lock=True, track=True)
    seen: list[sqlite3.Connection] = []

    def work(n: int) -> None:
        seen.append(db.connection())
        for _ in range(20):
            with db.transaction() as conn:
                conn.execute("INSERT INTO t VALUES (?)", (n,))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(c) for c in seen}) == 4 and db.connection() is db.connection()
    assert db.connection().execute("SELECT count(*) FROM t").fetchone()[0] == 80
    db.close_all()
    with pytest.raises(sqlite3.ProgrammingError):  # every tracked connection was closed
        seen[0].execute("SELECT 1")
    assert db.connection().execute("SELECT count(*) FROM t").fetchone()[0] == 80  # reopened on use


def test_errors_become_the_callers_own(tmp_path: Path) -> None:
    def on_error(what: str, exc: sqlite3.Error) -> DataError:
        return DataError(f"{what} failed: {exc}", "store")

    blocked = ThreadConnections(tmp_path / "missing-dir" / "x.db", timeout=1.0, on_error=on_error)
    with pytest.raises(DataError, match="open failed") as caught:
        blocked.connection()
    assert isinstance(caught.value.__cause__, sqlite3.Error)

    path = tmp_path / "busy.db"
    holder = make_table(path)
    other = ThreadConnections(path, timeout=0.05, on_error=on_error)
    with holder.transaction():  # holds the write lock
        done: list[BaseException] = []

        def try_write() -> None:
            try:
                with other.transaction():
                    pass  # pragma: no cover
            except BaseException as exc:
                done.append(exc)

        thread = threading.Thread(target=try_write)
        thread.start()
        thread.join()
    assert isinstance(done[0], DataError) and "begin failed" in str(done[0])


def test_read_examples_and_read_dataset_open_the_path_and_name_it(tmp_path: Path) -> None:
    ex = Example(id="o/r#1:a", repo="o/r", pr=1, path="a.py", hunk="@@ -1 +1 @@\n-a\n+b")
    path = tmp_path / "examples.jsonl"
    write_examples(path, [ex])
    assert list(read_examples(path)) == [ex]
    assert read_dataset(path, "jsonl").examples == [ex]
    path.write_text(path.read_text() + "{oops\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: invalid JSON"):
        list(read_examples(path))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: invalid JSON"):
        read_dataset(path, "jsonl")
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(DataError, match=rf"^{re.escape(str(missing))}: cannot read examples: No such file"):
        list(read_examples(missing))
    with pytest.raises(DataError, match=rf"^{re.escape(str(missing))}: cannot read: No such file"):
        read_dataset(missing, "crc")
    with pytest.raises(UsageError, match="unknown import format 'xml'"):  # refused before the file is opened
        read_dataset(missing, "xml")
