"""The job table, which is also the queue: what makes deliveries at-least-once and reviews at-most-once.

One row per job; the queue's guarantees come from the storage engine, not from a second library:

* one row per review job, keyed by (repo, PR, head sha): two events for one push, or a redelivery,
  find the existing row instead of adding a second job;
* a worker *takes* the next due job with a lease in one transaction (SQLite: ``UPDATE … RETURNING``
  under ``BEGIN IMMEDIATE``; Redis: a Streams consumer group), and renews the lease by heartbeats.
  Taking and claiming are one step, so a worker killed at any moment leaves a job that is either
  still queued or leased; a lease that runs out (its worker died) makes the job takeable again;
* a newer head sha marks the older queued or running job of the same PR ``superseded``; the running
  worker sees that at its next heartbeat and posts nothing;
* the review plan is saved before anything is posted, so a rerun posts the same comments and the
  GitHub-side fingerprint check can tell what is already there;
* deliveries are remembered by ``X-GitHub-Delivery`` so a redelivery is answered, not re-queued;
* finished jobs and remembered deliveries are deleted after a retention period (``prune``).

``SqliteJobStore`` is the embedded default (WAL, one connection per thread, safe for several
processes); ``webhooks.jobs_redis.RedisJobStore`` keeps the same contract on Redis for a scaled-out
deployment. Both take a ``clock`` so leases and backoff can be tested without waiting.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from adapters.sqlite import ThreadConnections
from bot.errors import RevbotError
from bot.secrets import scrub_text

QUEUED, RUNNING, DONE, FAILED, SUPERSEDED, SKIPPED = "queued", "running", "done", "failed", "superseded", "skipped"
STATES = (QUEUED, RUNNING, DONE, FAILED, SUPERSEDED, SKIPPED)
ACTIVE = (QUEUED, RUNNING)
FINAL = (DONE, FAILED, SUPERSEDED, SKIPPED)
REVIEW, COMMENT = "review", "comment"
COMMAND, THREAD = "command", "thread"  # a /revbot command; a review thread resolved or reopened
REACTION = "reaction"  # an award emoji on a note (GitLab's Emoji Hook): feedback on the bot's comment
# A resubmitted key revives a job in these states; in the others it is a duplicate.
REVIVABLE = (FAILED, SUPERSEDED, SKIPPED)
LOST_LEASE = "worker lost its lease (killed or stalled) {n} times"
# Payload fields that carry people's text (comment bodies, code): scrubbed before they are stored.
FREE_TEXT_FIELDS = frozenset({"body", "diff_hunk", "title"})

Clock = Callable[[], float]


class QueueError(RevbotError):
    """The job store or queue cannot be reached or used."""


def review_key(repo: str, pr: int, head_sha: str) -> str:
    return f"review:{repo.lower()}#{pr}@{head_sha}"


def scrub_payload(value: Any) -> Any:
    """A copy of a job payload with secrets scrubbed from its free-text fields, so a token pasted
    into a review comment never reaches the queue's storage."""
    if isinstance(value, dict):
        return {
            k: (scrub_text(v) if k in FREE_TEXT_FIELDS and isinstance(v, str) else scrub_payload(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub_payload(v) for v in value]
    return value


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

    @property
    def forge(self) -> str:
        """The forge the job's event came from: ``"gitlab"`` when its payload says so, else ``"github"``
        (GitHub deliveries predate the field)."""
        return str(self.payload.get("forge") or "github")


@dataclass
class Accepted:
    """What happened to one delivery: ``duplicate`` when its id was seen before; ``job_id`` and
    ``created`` (False when an existing job already covers it); ids of jobs it superseded."""

    duplicate: bool = False
    job_id: int | None = None
    created: bool = False
    superseded: list[int] = field(default_factory=list)


class JobStore(Protocol):
    """The queue contract both backends keep (see the module docstring)."""

    def ping(self) -> None: ...
    def accept(
        self, delivery_id: str | None, event: str, action: str | None, job: NewJob | None = None, supersede: bool = True
    ) -> Accepted: ...
    def take(self, owner: str, lease_s: float, max_attempts: int, wait: float = 0.0) -> Job | None: ...
    def heartbeat(self, job_id: int, owner: str, lease_s: float) -> bool: ...
    def save_plan(self, job_id: int, owner: str, plan: Any) -> bool: ...
    def finish(self, job_id: int, owner: str, state: str, result: Any = None) -> bool: ...
    def release(self, job_id: int, owner: str, delay: float, error: str, max_attempts: int) -> str: ...
    def maintain(self, max_attempts: int) -> list[int]: ...
    def prune(self, before: float) -> dict[str, int]: ...
    def waiting(self) -> int: ...
    def get(self, job_id: int) -> Job | None: ...
    def find(self, repo: str | None = None, pr: int | None = None, kind: str | None = None) -> list[Job]: ...
    def counts(self) -> dict[str, int]: ...
    def delivery_count(self) -> int: ...
    def report_worker(self, owner: str, info: dict[str, Any]) -> None: ...
    def workers(self, max_age: float) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


_SCHEMA = [
    """create table if not exists deliveries (
        id text primary key, event text not null, action text, received_at real not null)""",
    "create index if not exists deliveries_by_time on deliveries (received_at)",
    """create table if not exists jobs (
        id integer primary key autoincrement,
        kind text not null, key text not null unique,
        repo text not null, pr integer not null, head_sha text,
        state text not null, payload text not null,
        attempts integer not null default 0, owner text, lease_until real,
        not_before real not null default 0,
        plan text, result text,
        created_at real not null, updated_at real not null)""",
    "create index if not exists jobs_by_pr on jobs (repo, pr, state)",
    "create index if not exists jobs_by_state on jobs (state, lease_until)",
    "create index if not exists jobs_due on jobs (state, not_before)",
    "create index if not exists jobs_by_age on jobs (state, updated_at)",
    """create table if not exists workers (
        owner text primary key, info text not null, seen real not null)""",
]

# The next job a worker may take: queued and due, or running under a lease that ran out.
_TAKEABLE = "(state = 'queued' and not_before <= :now) or (state = 'running' and lease_until < :now)"


class SqliteJobStore:
    """The job table in one SQLite file (WAL mode, so the web and worker processes share it)."""

    kind = "sqlite"
    POLL_MAX_S = 0.2  # longest pause between looks at the table while a worker waits for a job

    def __init__(self, path: str | os.PathLike[str], timeout: float = 10.0, *, clock: Clock = time.time):
        self.path = Path(path)
        self.timeout = timeout
        self.clock = clock
        # One connection per thread (a forked process opens its own). Threads of one process take
        # turns on a lock before BEGIN rather than in SQLite's busy handler, which sleeps in steps
        # of milliseconds; BEGIN is retried in sub-millisecond steps while another process writes.
        self._db = ThreadConnections(self.path, timeout=timeout, write_lock=True, track=True)
        self._work = threading.Condition()  # wakes this process's waiting workers when a job arrives
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
        return self._db.connection()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._db.transaction()

    def close(self) -> None:
        self._db.close_all()

    def ping(self) -> None:
        try:
            self._conn().execute("select 1 from jobs limit 1").fetchall()
        except sqlite3.Error as exc:
            raise QueueError(f"{self.path}: job table unreachable: {exc}") from exc

    # ------------------------------------------------------------------ web side

    def accept(self, delivery_id, event, action, job=None, supersede=True) -> Accepted:
        """Record a delivery and its job in one transaction; a new (or revived) job is takeable
        from the moment that transaction commits."""
        now = self.clock()
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
            payload = json.dumps(job.payload)
            row = db.execute("select id, state from jobs where key = ?", (job.key,)).fetchone()
            if row is None:
                cur = db.execute(
                    "insert into jobs (kind, key, repo, pr, head_sha, state, payload, created_at, updated_at)"
                    " values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job.kind, job.key, job.repo, job.pr, job.head_sha, QUEUED, payload, now, now),
                )
                out.job_id, out.created = int(cur.lastrowid), True
            elif row["state"] in REVIVABLE:
                db.execute(
                    "update jobs set state = ?, payload = ?, attempts = 0, owner = null, lease_until = null,"
                    " not_before = 0, result = null, updated_at = ? where id = ?",
                    (QUEUED, payload, now, row["id"]),
                )
                out.job_id, out.created = int(row["id"]), True
            else:
                out.job_id = int(row["id"])
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
        if out.created:
            with self._work:
                self._work.notify()
        return out

    # ------------------------------------------------------------------ worker side

    def take(self, owner, lease_s, max_attempts, wait=0.0) -> Job | None:
        """Lease the oldest takeable job to ``owner``, waiting up to ``wait`` seconds for one.

        Other processes' new jobs are noticed by looking again every few milliseconds, up to
        POLL_MAX_S apart; this process's own are noticed at once."""
        deadline = time.monotonic() + wait
        delay = 0.005
        while True:
            job = self._take_once(owner, lease_s, max_attempts)
            left = deadline - time.monotonic()
            if job is not None or left <= 0:
                return job
            with self._work:
                self._work.wait(min(delay, left))
            delay = min(delay * 2, self.POLL_MAX_S)

    def _take_once(self, owner: str, lease_s: float, max_attempts: int) -> Job | None:
        now = self.clock()
        # a read first: the write lock is taken only when there is something to take
        if self._conn().execute(f"select 1 from jobs where {_TAKEABLE} limit 1", {"now": now}).fetchone() is None:
            return None
        with self._tx() as db:
            self._fail_lost(db, now, max_attempts)
            row = db.execute(
                "update jobs set state = 'running', owner = :owner, lease_until = :until,"
                " attempts = attempts + 1, updated_at = :now"
                f" where id = (select id from jobs where {_TAKEABLE} order by id limit 1) returning *",
                {"owner": owner, "until": now + lease_s, "now": now},
            ).fetchone()
        return _job(row) if row is not None else None

    @staticmethod
    def _fail_lost(db: sqlite3.Connection, now: float, max_attempts: int) -> list[int]:
        """Jobs whose worker died on their last allowed attempt are failed, not run again."""
        rows = db.execute(
            "update jobs set state = 'failed', owner = null, lease_until = null, updated_at = :now,"
            " result = json_object('error', :error)"
            " where state = 'running' and lease_until < :now and attempts >= :max returning id",
            {"now": now, "max": max_attempts, "error": LOST_LEASE.format(n=max_attempts)},
        ).fetchall()
        return [int(r["id"]) for r in rows]

    def heartbeat(self, job_id, owner, lease_s) -> bool:
        now = self.clock()
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
                (json.dumps(plan), self.clock(), job_id, owner, RUNNING),
            )
            return cur.rowcount == 1

    def finish(self, job_id, owner, state, result=None) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "update jobs set state = ?, result = ?, owner = null, lease_until = null, updated_at = ?"
                " where id = ? and owner = ? and state = ?",
                (state, json.dumps(result), self.clock(), job_id, owner, RUNNING),
            )
            return cur.rowcount == 1

    def release(self, job_id, owner, delay, error, max_attempts) -> str:
        """Give a job back after a transient failure: takeable again after ``delay`` seconds, or
        failed once it has had ``max_attempts`` runs. Returns the new state ('' if not ours)."""
        now = self.clock()
        with self._tx() as db:
            row = db.execute(
                "update jobs set state = case when attempts >= :max then 'failed' else 'queued' end,"
                " owner = null, lease_until = null, not_before = :due, result = :result, updated_at = :now"
                " where id = :id and owner = :owner and state = 'running' returning state",
                {
                    "max": max_attempts,
                    "due": now + delay,
                    "result": json.dumps({"error": error}),
                    "now": now,
                    "id": job_id,
                    "owner": owner,
                },
            ).fetchone()
        if row is not None and row["state"] == QUEUED:
            with self._work:
                self._work.notify()
        return row["state"] if row is not None else ""

    def maintain(self, max_attempts) -> list[int]:
        """Fail the jobs of dead workers that have used up their attempts (the others are taken
        again by ``take``); the ids failed."""
        with self._tx() as db:
            return self._fail_lost(db, self.clock(), max_attempts)

    def prune(self, before) -> dict[str, int]:
        """Delete finished jobs last changed before ``before`` and deliveries received before it."""
        marks = ",".join("?" * len(FINAL))
        with self._tx() as db:
            jobs = db.execute(
                f"delete from jobs where state in ({marks}) and updated_at < ?", (*FINAL, before)
            ).rowcount
            deliveries = db.execute("delete from deliveries where received_at < ?", (before,)).rowcount
        return {"jobs": jobs, "deliveries": deliveries}

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

    def waiting(self) -> int:
        """Jobs a worker could take now."""
        return int(
            self._conn().execute(f"select count(*) from jobs where {_TAKEABLE}", {"now": self.clock()}).fetchone()[0]
        )

    def delivery_count(self) -> int:
        return int(self._conn().execute("select count(*) from deliveries").fetchone()[0])

    # ------------------------------------------------------------------ worker status (for /healthz)

    def report_worker(self, owner: str, info: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "insert or replace into workers (owner, info, seen) values (?, ?, ?)",
                (owner, json.dumps(info), self.clock()),
            )

    def workers(self, max_age: float) -> list[dict[str, Any]]:
        """Workers that reported within ``max_age`` seconds (older rows are deleted)."""
        cutoff = self.clock() - max_age
        with self._tx() as db:
            db.execute("delete from workers where seen < ?", (cutoff - 3600,))
            rows = db.execute(
                "select owner, info, seen from workers where seen >= ? order by owner", (cutoff,)
            ).fetchall()
        return [{"owner": r["owner"], "seen": r["seen"], **json.loads(r["info"])} for r in rows]


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=int(row["id"]),
        kind=row["kind"],
        key=row["key"],
        repo=row["repo"],
        pr=int(row["pr"]),
        head_sha=row["head_sha"],
        state=row["state"],
        payload=json.loads(row["payload"] or "{}"),
        attempts=int(row["attempts"]),
        owner=row["owner"],
        lease_until=row["lease_until"],
        not_before=float(row["not_before"] or 0),
        plan=json.loads(row["plan"]) if row["plan"] else None,
        result=json.loads(row["result"]) if row["result"] else None,
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )
