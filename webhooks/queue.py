"""The queue: huey carries job ids from the web process to the workers; the job table holds the truth.

Embedded by default (``SqliteHuey``: one file that survives a restart), Redis when
``REVBOT_QUEUE=redis://…`` (``RedisHuey``, blocking pops, for several worker machines). Messages are
JSON, not pickle, so nothing that can write to the queue can make a worker run code.

huey acknowledges a message when a worker takes it; a job is only over when the job table says so
(see ``webhooks.jobs``), and the reaper re-sends the id of any job whose worker died.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from huey import RedisHuey, SqliteHuey
from huey.registry import Message
from huey.serializer import Serializer

from webhooks.jobs import JobStore, QueueError, SqliteJobStore

QUEUE_NAME = "revbot"
TASK_NAME = "revbot_job"


class JsonSerializer(Serializer):
    """huey messages as JSON: a job message holds one integer, nothing needs pickle."""

    def _serialize(self, data: Any) -> bytes:
        fields = data._asdict()
        fields["args"] = list(fields.get("args") or ())
        if any(fields.get(k) is not None for k in ("on_complete", "on_error", "chord_config", "eta")):
            raise ValueError("revbot queue messages carry only a job id")
        return json.dumps(fields, default=str).encode("utf-8")

    def _deserialize(self, data: bytes) -> Any:
        fields = json.loads(bytes(data).decode("utf-8"))
        fields["args"] = tuple(fields.get("args") or ())
        return Message(**{k: v for k, v in fields.items() if k in Message._fields})


@dataclass
class QueueSpec:
    """Where the queue lives, decoded from REVBOT_QUEUE. With SQLite the job table shares the
    queue's file (its own tables), so one file holds everything a restart needs."""

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
        text = text[len("sqlite://"):]
        if text.startswith("//"):  # sqlite:////abs/path (SQLAlchemy's spelling) = sqlite:///abs/path
            text = "/" + text.lstrip("/")
    elif "://" in text:
        raise QueueError(f"REVBOT_QUEUE={text!r}: expected redis://HOST:PORT/DB, sqlite:///PATH or a file path")
    path = Path(text or "revbot-queue.db").expanduser()
    return QueueSpec("sqlite", path if path.is_absolute() else Path(home) / path)


class JobQueue:
    """huey transport plus the job table. ``push`` sends a job id, ``pop`` takes one (or None)."""

    def __init__(self, huey: Any, store: JobStore, spec: QueueSpec):
        self.huey, self.store, self.spec = huey, store, spec

        @huey.task(name=TASK_NAME)
        def revbot_job(job_id: int) -> None:  # pragma: no cover - never executed by huey
            raise RuntimeError("revbot jobs are run by webhooks.worker, not by huey's consumer")

        self._task = revbot_job

    def __repr__(self) -> str:
        return f"JobQueue({self.spec.describe()})"

    def submit(self, delivery_id: str | None, event: str, action: str | None, job: Any = None) -> Any:
        """Record a delivery and its job (see JobStore.accept) and queue the job if it is new.

        With SQLite the queue message is written in the job's own transaction (same file): one
        commit per delivery, and never a job without its message. With Redis the id is pushed
        right after; if that fails the job row stays and the reaper sends it later."""
        if self.spec.kind == "sqlite" and job is not None:
            return self.store.accept(delivery_id, event, action, job, on_created=self._insert_message)
        accepted = self.store.accept(delivery_id, event, action, job)
        if accepted.created and accepted.job_id is not None:
            try:
                self.push(accepted.job_id)
            except QueueError as exc:
                exc.recorded = accepted  # type: ignore[attr-defined]  # the caller may still answer 202
                raise
        return accepted

    def reap(self, redispatch_after: float, max_attempts: int) -> list[int]:
        """Requeue the jobs of dead workers and re-send lost or due messages (see JobStore.reap);
        with SQLite the messages are written in the reaper's own transaction."""
        if self.spec.kind == "sqlite":
            return self.store.reap(redispatch_after, max_attempts, on_dispatch=self._insert_message)
        ids = self.store.reap(redispatch_after, max_attempts)
        for job_id in ids:
            self.push(job_id)
        return ids

    def _insert_message(self, db: Any, job_id: int) -> None:
        # huey's SqliteStorage table: task (queue, data, priority); same file as the job table.
        data = self.huey.serialize_task(self._task.s(int(job_id)))
        db.execute("insert into task (queue, data, priority) values (?, ?, ?)", (self.huey.storage.name, data, 0.0))

    def push(self, job_id: int) -> None:
        try:
            self.huey.enqueue(self._task.s(int(job_id)))
        except Exception as exc:  # storage errors of either backend
            raise QueueError(f"cannot enqueue job {job_id} on {self.spec.describe()}: {exc}") from exc

    def pop(self, wait: float = 0.5) -> int | None:
        """The next job id, waiting up to about ``wait`` seconds for one."""
        deadline = time.monotonic() + wait
        delay = 0.02
        while True:
            task = self.huey.dequeue()
            if task is not None:
                try:
                    return int(task.args[0])
                except (IndexError, TypeError, ValueError):
                    continue  # not one of ours: drop it
            if self.huey.storage.blocking or time.monotonic() >= deadline:
                return None
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.25)

    def size(self) -> int:
        return int(self.huey.storage.queue_size())

    def ping(self) -> None:
        try:
            self.size()
            self.store.ping()
        except QueueError:
            raise
        except Exception as exc:
            raise QueueError(f"queue {self.spec.describe()} unreachable: {exc}") from exc

    def close(self) -> None:
        try:
            self.huey.storage.close()
        except Exception:
            pass
        self.store.close()


def open_queue(url: str | os.PathLike[str] | None = None, home: str | os.PathLike[str] = ".", *,
               name: str = QUEUE_NAME) -> JobQueue:
    """The queue named by ``url`` (REVBOT_QUEUE), with its job table. ``name`` separates several
    deployments (or test runs) sharing one Redis database."""
    spec = parse_queue_url(url, home)
    if spec.kind == "redis":
        from webhooks.jobs_redis import RedisJobStore

        try:
            huey = RedisHuey(name, url=spec.redis_url, results=False, serializer=JsonSerializer(),
                             blocking=True, read_timeout=1)
            store: JobStore = RedisJobStore(spec.redis_url or "", name=name)
        except QueueError:
            raise
        except Exception as exc:
            raise QueueError(f"cannot open queue {spec.describe()}: {exc}") from exc
        return JobQueue(huey, store, spec)
    assert spec.path is not None
    try:
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        huey = SqliteHuey(name, filename=str(spec.path), results=False, serializer=JsonSerializer())
    except Exception as exc:
        raise QueueError(f"{spec.path}: cannot open the queue: {exc}") from exc
    return JobQueue(huey, SqliteJobStore(spec.path), spec)
