"""SQLite connections one per thread, and write transactions on them: what the dataset store and
the job table share.

A connection is opened lazily in each thread (and again after a fork: one inherited from the parent
is never used) in autocommit mode, WAL journal, ``synchronous=NORMAL``, rows as ``sqlite3.Row`` and
a busy timeout. ``transaction()`` is one ``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any
exception): the write lock is taken up front, so two writers wait for each other instead of one
failing on a lock upgrade. A transaction opened inside another one of the same thread joins it.
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# What a caller turns an open or BEGIN failure into: (what failed, the sqlite3 error) -> exception
ErrorHook = Callable[[str, sqlite3.Error], BaseException]


def _os_thread_local() -> threading.local:
    """Storage per OS thread. Under gevent (issue 22: a web process of `revbot serve`),
    ``threading.local`` is per greenlet, i.e. per request: a connection opened for every request
    and, tracked, never closed. The greenlets of one thread share its connection instead; that is
    safe because nothing yields between BEGIN and COMMIT (SQLite calls never do), and transactions
    take turns on the write lock, which gevent makes cooperative."""
    monkey = sys.modules.get("gevent.monkey")  # never imported: nothing was patched
    if monkey is not None and monkey.is_module_patched("threading"):
        local: type[threading.local] = monkey.get_original("threading", "local")
        return local()
    return threading.local()


class ThreadConnections:
    """Per-thread connections to one SQLite file.

    ``write_lock``: threads of this process take turns on it before BEGIN (so they meet in a Python
    lock rather than in SQLite's busy handler, which sleeps in steps of milliseconds), and BEGIN is
    retried in sub-millisecond steps while another process holds the write lock. ``on_error`` turns
    a failure to open the file or to BEGIN into the caller's own exception (its cause kept).
    ``track``: remember every connection so ``close_all`` can close them (without it a thread's
    connection is closed when the thread ends and its thread-local storage goes)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float,
        write_lock: bool = False,
        track: bool = False,
        on_error: ErrorHook | None = None,
    ) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._on_error = on_error
        self._local = _os_thread_local()
        self._all: list[sqlite3.Connection] | None = [] if track else None
        self._all_lock = threading.Lock()
        self._write_lock = threading.Lock() if write_lock else None

    def _fail(self, what: str, exc: sqlite3.Error) -> BaseException:
        return self._on_error(what, exc) if self._on_error is not None else exc

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            error = self._fail("open", exc)
            if error is exc:
                raise
            raise error from exc
        self._local.conn, self._local.pid, self._local.depth = conn, os.getpid(), 0
        if self._all is not None:
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on this thread's connection; nested uses join the outer one."""
        conn = self.connection()
        if self._local.depth:
            self._local.depth += 1
            try:
                yield conn
            finally:
                self._local.depth -= 1
            return
        if self._write_lock is not None:
            self._write_lock.acquire()
        try:
            try:
                self._begin(conn)
            except sqlite3.Error as exc:
                error = self._fail("begin", exc)
                if error is exc:
                    raise
                raise error from exc
            self._local.depth = 1
            try:
                yield conn
            except BaseException:
                self._local.depth = 0
                conn.execute("ROLLBACK")
                raise
            self._local.depth = 0
            conn.execute("COMMIT")
        finally:
            if self._write_lock is not None:
                self._write_lock.release()

    def _begin(self, conn: sqlite3.Connection) -> None:
        if self._write_lock is None:
            conn.execute("BEGIN IMMEDIATE")
            return
        # SQLite's busy handler sleeps 1, 2, 5, 10... ms between tries, which is what a p99 would
        # show: retry in sub-millisecond steps instead, up to the same timeout.
        deadline = time.monotonic() + self.timeout
        delay = 0.0002
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                        raise
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.004)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

    def close(self) -> None:
        """Close this thread's connection (others close with their thread, or with close_all)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            if self._all is not None:
                with self._all_lock:
                    if conn in self._all:
                        self._all.remove(conn)
            conn.close()

    def close_all(self) -> None:
        """Close every connection this object opened, in any thread (``track=True``; otherwise only
        this thread's); each thread opens a new one on its next use."""
        if self._all is None:
            self.close()
            return
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = _os_thread_local()
