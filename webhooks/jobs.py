"""The job table: what makes the queue at-least-once and the reviews at-most-once.

huey's storages delete a message when a worker takes it, so a worker killed mid-job would lose the
job. The queue therefore carries only job ids; the truth lives here:

* one row per review job, keyed by (repo, PR, head sha): two events for one push, or a redelivery,
  find the existing row instead of adding a second job;
* a worker *claims* a row with a lease and renews it with heartbeats; a row whose lease ran out
  (its worker died) is put back in the queue by the reaper that every worker runs;
* a newer head sha marks the older queued or running job of the same PR ``superseded``; the running
  worker sees that at its next heartbeat and posts nothing;
* the review plan is saved before anything is posted, so a rerun posts the same comments and the
  GitHub-side fingerprint check can tell what is already there;
* deliveries are remembered by ``X-GitHub-Delivery`` so a redelivery is answered, not re-queued.

``SqliteJobStore`` is the embedded default (WAL, one connection per thread, safe for several
processes); ``webhooks.jobs_redis.RedisJobStore`` keeps the same table in Redis for a scaled-out
deployment. Both also hold the service's metric counters so every process reports the same totals.
"""
from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

from bot.errors import RevbotError

QUEUED, RUNNING, DONE, FAILED, SUPERSEDED, SKIPPED = "queued", "running", "done", "failed", "superseded", "skipped"
STATES = (QUEUED, RUNNING, DONE, FAILED, SUPERSEDED, SKIPPED)
ACTIVE = (QUEUED, RUNNING)
REVIEW, COMMENT = "review", "comment"
# A resubmitted key revives a job in these states; in the others it is a duplicate.
REVIVABLE = (FAILED, SUPERSEDED, SKIPPED)


class QueueError(RevbotError):
    """The job store or queue cannot be reached or used."""


def review_key(repo: str, pr: int, head_sha: str) -> str:
    return f"review:{repo.lower()}#{pr}@{head_sha}"


@dataclass
class NewJob:
    """A job as the web process submits it."""

    kind: str
    key: str
    repo: str
    pr: int
    head_sha: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    id: int
    kind: str
    key: str
    repo: str
    pr: int
    head_sha: str | None
    state: str
    payload: dict[str, Any]
    attempts: int = 0
    owner: str | None = None
    lease_until: float | None = None
    not_before: float = 0.0
    plan: Any = None
    result: Any = None
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass
class Accepted:
    """What happened to one delivery: ``duplicate`` when its id was seen before; ``job_id`` and
    ``created`` (False when an existing job already covers it); ids of jobs it superseded."""

    duplicate: bool = False
    job_id: int | None = None
    created: bool = False
    superseded: list[int] = field(default_factory=list)


class JobStore(Protocol):
    def ping(self) -> None: ...
    def accept(self, delivery_id: str | None, event: str, action: str | None, job: NewJob | None = None,
               supersede: bool = True, on_created: Any = None) -> Accepted: ...
    def mark_dispatched(self, job_id: int) -> None: ...
    def claim(self, job_id: int, owner: str, lease_s: float) -> Job | None: ...
    def heartbeat(self, job_id: int, owner: str, lease_s: float) -> bool: ...
    def save_plan(self, job_id: int, owner: str, plan: Any) -> bool: ...
    def finish(self, job_id: int, owner: str, state: str, result: Any = None) -> bool: ...
    def release(self, job_id: int, owner: str, delay: float, error: str, max_attempts: int) -> str: ...
    def reap(self, redispatch_after: float, max_attempts: int, on_dispatch: Any = None) -> list[int]: ...
    def get(self, job_id: int) -> Job | None: ...
    def find(self, repo: str | None = None, pr: int | None = None, kind: str | None = None) -> list[Job]: ...
    def counts(self) -> dict[str, int]: ...
    def add_counters(self, items: Iterable[tuple[str, str, float]]) -> None: ...
    def read_counters(self) -> dict[tuple[str, str], float]: ...
    def report_worker(self, owner: str, info: dict[str, Any]) -> None: ...
    def workers(self, max_age: float) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


_SCHEMA = [
    """create table if not exists deliveries (
        id text primary key, event text not null, action text, received_at real not null)""",
    """create table if not exists jobs (
        id integer primary key autoincrement,
        kind text not null, key text not null unique,
        repo text not null, pr integer not null, head_sha text,
        state text not null, payload text not null,
        attempts integer not null default 0, owner text, lease_until real,
        not_before real not null default 0, dispatched_at real,
        plan text, result text,
        created_at real not null, updated_at real not null)""",
    "create index if not exists jobs_by_pr on jobs (repo, pr, state)",
    "create index if not exists jobs_by_state on jobs (state, lease_until)",
    """create table if not exists workers (
        owner text primary key, info text not null, seen real not null)""",
    """create table if not exists counters (
        name text not null, labels text not null, value real not null default 0,
        primary key (name, labels))""",
]


class SqliteJobStore:
    """The job table in one SQLite file (WAL mode, so the web and worker processes share it)."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 10.0):
        self.path = Path(path)
        self.timeout = timeout
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        # Threads of one process take turns here rather than in SQLite's busy handler, which
        # sleeps in steps of milliseconds; other processes still meet that handler.
        self._write_lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._tx() as db:
                for sql in _SCHEMA:
                    db.execute(sql)
        except (OSError, sqlite3.Error) as exc:
            raise QueueError(f"{self.path}: cannot open the job table: {exc}") from exc

    def __repr__(self) -> str:
        return f"SqliteJobStore({str(self.path)!r})"

    # ------------------------------------------------------------------ plumbing

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) != os.getpid():
            conn = None  # inherited through fork (gunicorn --preload): never share it with the parent
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("pragma journal_mode=wal")
            conn.execute("pragma synchronous=normal")
            conn.execute(f"pragma busy_timeout={int(self.timeout * 1000)}")
            self._local.conn, self._local.pid = conn, os.getpid()
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    class _Tx:
        def __init__(self, conn: sqlite3.Connection, lock: threading.Lock, timeout: float):
            self.conn, self.lock, self.timeout = conn, lock, timeout

        def __enter__(self) -> sqlite3.Connection:
            self.lock.acquire()
            try:
                self._begin()
            except BaseException:
                self.lock.release()
                raise
            return self.conn

        def _begin(self) -> None:
            """BEGIN IMMEDIATE, retried in sub-millisecond steps while another process writes
            (SQLite's own busy handler sleeps 1, 2, 5, 10... ms, which is what a p99 would show)."""
            deadline = time.monotonic() + self.timeout
            delay = 0.0002
            self.conn.execute("pragma busy_timeout = 0")
            try:
                while True:
                    try:
                        self.conn.execute("begin immediate")
                        return
                    except sqlite3.OperationalError as exc:
                        if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                            raise
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 0.004)
            finally:
                self.conn.execute(f"pragma busy_timeout = {int(self.timeout * 1000)}")

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                self.conn.execute("commit" if exc_type is None else "rollback")
            finally:
                self.lock.release()

    def _tx(self) -> "SqliteJobStore._Tx":
        return self._Tx(self._conn(), self._write_lock, self.timeout)

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
        self._local = threading.local()

    def ping(self) -> None:
        try:
            self._conn().execute("select 1 from jobs limit 1").fetchall()
        except sqlite3.Error as exc:
            raise QueueError(f"{self.path}: job table unreachable: {exc}") from exc

    # ------------------------------------------------------------------ web side

    def accept(self, delivery_id, event, action, job=None, supersede=True, on_created=None) -> Accepted:
        """Record a delivery and its job in one transaction. ``on_created(connection, job_id)`` runs
        inside that transaction when the job is new or revived (the SQLite queue puts its message
        there, so a job row and its queue message are committed together or not at all)."""
        now = time.time()
        out = Accepted()
        with self._tx() as db:
            if delivery_id:
                cur = db.execute(
                    "insert or ignore into deliveries (id, event, action, received_at) values (?, ?, ?, ?)",
                    (delivery_id, event, action, now),
                )
                if cur.rowcount == 0:
                    out.duplicate = True
                    return out
            if job is None:
                return out
            row = db.execute("select id, state from jobs where key = ?", (job.key,)).fetchone()
            if row is None:
                cur = db.execute(
                    "insert into jobs (kind, key, repo, pr, head_sha, state, payload, created_at, updated_at,"
                    " dispatched_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job.kind, job.key, job.repo, job.pr, job.head_sha, QUEUED, json.dumps(job.payload), now, now, now),
                )
                out.job_id, out.created = int(cur.lastrowid), True
            elif row["state"] in REVIVABLE:
                db.execute(
                    "update jobs set state = ?, payload = ?, attempts = 0, owner = null, lease_until = null,"
                    " not_before = 0, dispatched_at = ?, result = null, updated_at = ? where id = ?",
                    (QUEUED, json.dumps(job.payload), now, now, row["id"]),
                )
                out.job_id, out.created = int(row["id"]), True
            else:
                out.job_id = int(row["id"])
            if out.created and on_created is not None:
                on_created(db, out.job_id)
            if supersede and out.created and job.kind == REVIEW:
                older = db.execute(
                    "select id from jobs where kind = ? and repo = ? and pr = ? and key != ? and state in (?, ?)",
                    (REVIEW, job.repo, job.pr, job.key, QUEUED, RUNNING),
                ).fetchall()
                out.superseded = [int(r["id"]) for r in older]
                if out.superseded:
                    marks = ",".join("?" * len(out.superseded))
                    db.execute(
                        f"update jobs set state = ?, updated_at = ? where id in ({marks})",
                        (SUPERSEDED, now, *out.superseded),
                    )
        return out

    def mark_dispatched(self, job_id: int) -> None:
        with self._tx() as db:
            db.execute("update jobs set dispatched_at = ? where id = ?", (time.time(), job_id))

    # ------------------------------------------------------------------ worker side

    def claim(self, job_id, owner, lease_s) -> Job | None:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "update jobs set state = ?, owner = ?, lease_until = ?, attempts = attempts + 1, updated_at = ?"
                " where id = ? and not_before <= ? and (state = ? or (state = ? and lease_until < ?))",
                (RUNNING, owner, now + lease_s, now, job_id, now, QUEUED, RUNNING, now),
            )
            if cur.rowcount != 1:
                return None
            return _job(db.execute("select * from jobs where id = ?", (job_id,)).fetchone())

    def heartbeat(self, job_id, owner, lease_s) -> bool:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "update jobs set lease_until = ?, updated_at = ? where id = ? and owner = ? and state = ?",
                (now + lease_s, now, job_id, owner, RUNNING),
            )
            return cur.rowcount == 1

    def save_plan(self, job_id, owner, plan) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "update jobs set plan = ?, updated_at = ? where id = ? and owner = ? and state = ?",
                (json.dumps(plan), time.time(), job_id, owner, RUNNING),
            )
            return cur.rowcount == 1

    def finish(self, job_id, owner, state, result=None) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "update jobs set state = ?, result = ?, owner = null, lease_until = null, updated_at = ?"
                " where id = ? and owner = ? and state = ?",
                (state, json.dumps(result), time.time(), job_id, owner, RUNNING),
            )
            return cur.rowcount == 1

    def release(self, job_id, owner, delay, error, max_attempts) -> str:
        """Give a job back after a transient failure: queued again after ``delay`` seconds, or
        failed once it has had ``max_attempts`` runs. Returns the new state ('' if not ours)."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("select attempts from jobs where id = ? and owner = ? and state = ?",
                             (job_id, owner, RUNNING)).fetchone()
            if row is None:
                return ""
            state = FAILED if row["attempts"] >= max_attempts else QUEUED
            db.execute(
                "update jobs set state = ?, owner = null, lease_until = null, not_before = ?, dispatched_at = null,"
                " result = ?, updated_at = ? where id = ?",
                (state, now + delay, json.dumps({"error": error}), now, job_id),
            )
            return state

    def reap(self, redispatch_after, max_attempts, on_dispatch=None) -> list[int]:
        """Put jobs of dead workers back in the queue and return the ids that need a (new) queue
        message: released jobs now due, jobs never dispatched, and jobs whose message may be lost.
        ``on_dispatch(connection, job_id)`` writes that message in the same transaction."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "update jobs set state = ?, owner = null, lease_until = null, updated_at = ?,"
                " result = json_object('error', 'worker lost its lease (killed or stalled)')"
                " where state = ? and lease_until < ? and attempts >= ?",
                (FAILED, now, RUNNING, now, max_attempts),
            )
            db.execute(
                "update jobs set state = ?, owner = null, lease_until = null, dispatched_at = null, updated_at = ?"
                " where state = ? and lease_until < ?",
                (QUEUED, now, RUNNING, now),
            )
            rows = db.execute(
                "select id from jobs where state = ? and not_before <= ? and (dispatched_at is null or dispatched_at < ?)"
                " order by id",
                (QUEUED, now, now - redispatch_after),
            ).fetchall()
            ids = [int(r["id"]) for r in rows]
            if ids:
                marks = ",".join("?" * len(ids))
                db.execute(f"update jobs set dispatched_at = ? where id in ({marks})", (now, *ids))
                for job_id in ids if on_dispatch is not None else ():
                    on_dispatch(db, job_id)
            return ids

    # ------------------------------------------------------------------ reading

    def get(self, job_id) -> Job | None:
        row = self._conn().execute("select * from jobs where id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def find(self, repo=None, pr=None, kind=None) -> list[Job]:
        sql, args = "select * from jobs where 1 = 1", []
        for column, value in (("repo", repo), ("pr", pr), ("kind", kind)):
            if value is not None:
                sql += f" and {column} = ?"
                args.append(value)
        return [_job(r) for r in self._conn().execute(sql + " order by id", args).fetchall()]

    def counts(self) -> dict[str, int]:
        out = {state: 0 for state in STATES}
        for row in self._conn().execute("select state, count(*) as n from jobs group by state"):
            out[row["state"]] = int(row["n"])
        return out

    def delivery_count(self) -> int:
        return int(self._conn().execute("select count(*) from deliveries").fetchone()[0])

    # ------------------------------------------------------------------ metrics

    def add_counters(self, items) -> None:
        items = [(name, labels, float(delta)) for name, labels, delta in items if delta]
        if not items:
            return
        with self._tx() as db:
            db.executemany(
                "insert into counters (name, labels, value) values (?, ?, ?)"
                " on conflict (name, labels) do update set value = value + excluded.value",
                items,
            )

    def read_counters(self) -> dict[tuple[str, str], float]:
        return {(r["name"], r["labels"]): float(r["value"]) for r in self._conn().execute("select * from counters")}

    # ------------------------------------------------------------------ worker status (for /healthz)

    def report_worker(self, owner: str, info: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("insert or replace into workers (owner, info, seen) values (?, ?, ?)",
                       (owner, json.dumps(info), time.time()))

    def workers(self, max_age: float) -> list[dict[str, Any]]:
        """Workers that reported within ``max_age`` seconds (older rows are deleted)."""
        cutoff = time.time() - max_age
        with self._tx() as db:
            db.execute("delete from workers where seen < ?", (cutoff - 3600,))
            rows = db.execute("select owner, info, seen from workers where seen >= ? order by owner", (cutoff,)).fetchall()
        return [{"owner": r["owner"], "seen": r["seen"], **json.loads(r["info"])} for r in rows]


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=int(row["id"]), kind=row["kind"], key=row["key"], repo=row["repo"], pr=int(row["pr"]),
        head_sha=row["head_sha"], state=row["state"], payload=json.loads(row["payload"] or "{}"),
        attempts=int(row["attempts"]), owner=row["owner"], lease_until=row["lease_until"],
        not_before=float(row["not_before"] or 0), plan=json.loads(row["plan"]) if row["plan"] else None,
        result=json.loads(row["result"]) if row["result"] else None,
        created_at=float(row["created_at"]), updated_at=float(row["updated_at"]),
    )
