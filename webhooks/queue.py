"""Where the queue lives (REVBOT_QUEUE) and the one door jobs go in and out through.

Embedded by default: a SQLite file that survives a restart (``webhooks.jobs.SqliteJobStore``).
Scaled out: ``REVBOT_QUEUE=redis://…`` (``webhooks.jobs_redis.RedisJobStore``, Streams consumer
groups), for web and workers on several machines. Either way the job table is the queue: a job is
taken with a lease and acknowledged only when its handler is done.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from webhooks.jobs import Accepted, Job, JobStore, NewJob, QueueError, SqliteJobStore, scrub_payload

QUEUE_NAME = "revbot"


@dataclass
class QueueSpec:
    """Where the queue lives, decoded from REVBOT_QUEUE."""

    kind: str  # "sqlite" | "redis"
    path: Path | None = None
    redis_url: str | None = None

    def describe(self) -> str:
        if self.kind == "redis":
            parsed = urlparse(self.redis_url or "")
            return f"redis://{parsed.hostname}:{parsed.port or 6379}{parsed.path}"  # never the password
        return f"sqlite:{self.path}"


def parse_queue_url(url: str | os.PathLike[str] | None, home: str | os.PathLike[str] = ".") -> QueueSpec:
    """``redis://…``, ``sqlite:///abs/path``, ``sqlite://rel/path``, or a file path (relative to
    ``home``); empty means ``revbot-queue.db`` in ``home``."""
    text = os.fspath(url) if url else ""
    if text.startswith(("redis://", "rediss://", "unix://")):
        return QueueSpec("redis", redis_url=text)
    if text.startswith("sqlite://"):
        text = text[len("sqlite://") :]
        if text.startswith("//"):  # sqlite:////abs/path (SQLAlchemy's spelling) = sqlite:///abs/path
            text = "/" + text.lstrip("/")
    elif "://" in text:
        raise QueueError(f"REVBOT_QUEUE={text!r}: expected redis://HOST:PORT/DB, sqlite:///PATH or a file path")
    path = Path(text or "revbot-queue.db").expanduser()
    return QueueSpec("sqlite", path if path.is_absolute() else Path(home) / path)


class JobQueue:
    """The job store of one deployment, with the spec it was opened from."""

    def __init__(self, store: JobStore, spec: QueueSpec):
        self.store, self.spec = store, spec

    def __repr__(self) -> str:
        return f"JobQueue({self.spec.describe()})"

    def submit(self, delivery_id: str | None, event: str, action: str | None, job: NewJob | None = None) -> Accepted:
        """Record a delivery and its job in one step (see JobStore.accept). Free text in the
        payload (comment bodies, diff hunks) is scrubbed of secrets before it is stored."""
        if job is not None:
            job = NewJob(job.kind, job.key, job.repo, job.pr, job.head_sha, scrub_payload(job.payload))
        return self.store.accept(delivery_id, event, action, job)

    def take(self, owner: str, lease_s: float, max_attempts: int, wait: float = 0.5) -> Job | None:
        return self.store.take(owner, lease_s, max_attempts, wait)

    def size(self) -> int:
        """Jobs waiting for a worker."""
        return self.store.waiting()

    def ping(self) -> None:
        self.store.ping()

    def close(self) -> None:
        self.store.close()


def open_queue(
    url: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] = ".",
    *,
    name: str = QUEUE_NAME,
    retention_s: float | None = None,
    clock: Any = None,
) -> JobQueue:
    """The queue named by ``url`` (REVBOT_QUEUE). ``name`` separates several deployments (or test
    runs) sharing one Redis database; ``retention_s`` is how long Redis remembers a delivery id."""
    spec = parse_queue_url(url, home)
    extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
    if spec.kind == "redis":
        from webhooks.jobs_redis import RedisJobStore

        if retention_s is not None:
            extra["retention_s"] = retention_s
        return JobQueue(RedisJobStore(spec.redis_url or "", name=name, **extra), spec)
    assert spec.path is not None
    return JobQueue(SqliteJobStore(spec.path, **extra), spec)
