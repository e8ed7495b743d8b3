"""Queue workers: take a job with a lease, run its handler, record the outcome.

A job is over only when its handler says so (the review is posted, the comment is stored); until
then the lease is renewed by a heartbeat thread. A worker that dies stops renewing it, and once the
lease runs out the next worker that asks the queue for work takes the job over.

Transient failures (GitHub 5xx or rate limits, the queue, the model not loadable yet) give the job
back for a retry with exponential backoff; after ``max_attempts`` runs it is marked failed. Errors
that a retry cannot fix (a PR that no longer exists) fail it at once; an invalid ``.revbot.yml`` is
not one of them: the review is done with the defaults and says so (``webhooks.poster``).

Hot reload: between jobs, and again as it starts each job, a worker asks ``ModelHolder.refresh()``
whether another model version was promoted (so a job queued after a promote is never reviewed by the
old version); the new backend is loaded while the old one keeps serving, then swapped in. A job
keeps the backend it started with, so nothing is dropped or posted twice by a reload. The reload
is counted before the new version becomes visible anywhere (/healthz reads it from the workers'
reports), so a scrape never sees the new version without its reload.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.errors import ForgeError, ModelError, RevbotError
from webhooks.jobs import DONE, FAILED, QUEUED, Job, QueueError
from webhooks.metrics import Metrics
from webhooks.queue import JobQueue

log = logging.getLogger(__name__)
MAX_RETRY_DELAY_S = 300.0


class TransientError(RevbotError):
    """A failure worth retrying later (the handler raises it; the job goes back to the queue)."""


class Superseded(RevbotError):
    """The job was superseded (a newer push) or its lease was lost while it ran."""


def is_transient(exc: BaseException) -> bool:
    """Whether a later run of the same job may succeed."""
    if isinstance(exc, (TransientError, QueueError, ModelError)):
        return True
    if isinstance(exc, ForgeError):
        status = exc.status
        if status is None or status >= 500 or status == 429:
            return True
        if status == 403 and "rate limit" in str(exc).lower():
            return True
        return False
    return not isinstance(exc, RevbotError)  # an unexpected exception: retry, bounded by max_attempts


@dataclass
class JobResult:
    state: str = DONE  # done | skipped | superseded | failed
    info: dict[str, Any] = field(default_factory=dict)


class JobContext:
    """What a handler may do with its job besides reading it: check it is still its to finish,
    save the review plan, count metrics."""

    def __init__(self, worker: Worker, job: Job, heartbeat: _Heartbeat):
        self.worker, self.job, self._heartbeat = worker, job, heartbeat
        self.metrics = worker.metrics

    def still_ours(self) -> bool:
        """False once the job was superseded or its lease went to another worker."""
        if self._heartbeat.lost.is_set():
            return False
        return self.worker.queue.store.heartbeat(self.job.id, self.worker.owner, self.worker.lease_s)

    def check(self) -> None:
        if not self.still_ours():
            raise Superseded(f"job {self.job.id} ({self.job.key}) was superseded or taken over")

    def save_plan(self, plan: Any) -> None:
        if not self.worker.queue.store.save_plan(self.job.id, self.worker.owner, plan):
            raise Superseded(f"job {self.job.id} ({self.job.key}) was superseded before its plan was saved")
        self.job.plan = plan


class JobHandler(Protocol):
    def __call__(self, job: Job, ctx: JobContext) -> JobResult: ...


class _Heartbeat:
    """Renews a job's lease every ``interval`` seconds until stopped; sets ``lost`` when it cannot."""

    def __init__(self, store: Any, job_id: int, owner: str, lease_s: float, interval: float):
        self.store, self.job_id, self.owner, self.lease_s, self.interval = store, job_id, owner, lease_s, interval
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"revbot-heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.store.heartbeat(self.job_id, self.owner, self.lease_s):
                    self.lost.set()
                    return
            except Exception as exc:  # the store may come back before the lease runs out
                log.warning("heartbeat for job %s failed: %s", self.job_id, exc)


class ModelHolder:
    """The backend the workers review with, reloaded when the registry's current version changes.

    ``loader(version)`` builds a backend for a ``adapters.versions.ModelVersion`` (None: no version is
    promoted, use the configured model). ``registry`` is a ``adapters.versions.ModelRegistry`` or None
    (a fixed model: no reloads). Versions pinned by a repository (``model_version`` in
    .revbot.yml) are loaded on demand and a few are kept.
    """

    def __init__(
        self,
        loader: Callable[[Any], Any],
        registry: Any = None,
        *,
        check_every: float = 5.0,
        pinned_cache: int = 1,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.loader, self.registry, self.check_every = loader, registry, check_every
        self.metrics, self.clock = metrics, clock
        self._lock = threading.Lock()  # guards the swap, not the loading
        self._load_lock = threading.Lock()  # one load at a time
        self._backend: Any = None
        self._version: str | None = None
        self._checked = 0.0
        self._pinned: dict[str, Any] = {}
        self._pinned_cache = pinned_cache
        self._failed: tuple[str | None, float] | None = None  # (version, when) of the last failed load
        self.last_error: str | None = None

    @property
    def loaded(self) -> bool:
        return self._backend is not None

    @property
    def version(self) -> str | None:
        return self._version

    def _current_version(self) -> Any:
        return self.registry.current() if self.registry is not None else None

    def refresh(self, force: bool = False) -> bool:
        """Load the promoted version if it changed (checked at most every ``check_every`` s).
        Returns True when a new backend was swapped in. Never raises: a failed load keeps the old
        backend and is retried at the next check."""
        now = self.clock()
        if not force and self._backend is not None and now - self._checked < self.check_every:
            return False
        if not self._load_lock.acquire(blocking=self._backend is None):
            return False  # another worker thread is loading; keep serving the current backend
        try:
            self._checked = self.clock()
            try:
                version = self._current_version()
            except RevbotError as exc:
                self.last_error = str(exc)
                log.error("cannot read the current model version: %s", exc)
                return False
            name = getattr(version, "name", None)
            if self._backend is not None and name == self._version:
                return False
            if (
                self._backend is not None
                and self._failed is not None
                and self._failed[0] == name
                and self._checked - self._failed[1] < self.check_every
            ):
                return False  # this version failed to load moments ago: retry it at the next periodic check
            try:
                backend = self.loader(version)
            except Exception as exc:
                self.last_error = str(exc)
                self._failed = (name, self.clock())
                log.error("cannot load model %s: %s", name or "(configured model)", exc)
                return False
            self._failed = None
            with self._lock:  # count the reload before anyone can see the new version
                old = self._backend
                if old is not None and self.metrics:
                    self.metrics.inc("revbot_model_reloads_total")
                self._backend, self._version = backend, name
                self.last_error = None
            if old is not None:
                log.info("model reloaded: now serving %s", name)
            return True
        finally:
            self._load_lock.release()

    def get(self, pinned: str | None = None) -> tuple[Any, str | None]:
        """(backend, version name) for one job. Raises ModelError when no model can be loaded."""
        if pinned and pinned != self._version and self.registry is not None:
            return self._get_pinned(pinned), pinned
        if self._backend is None:
            self.refresh(force=True)
        with self._lock:
            if self._backend is None:
                raise ModelError(f"no model is loaded: {self.last_error or 'nothing to load'}")
            return self._backend, self._version

    def _get_pinned(self, name: str) -> Any:
        with self._load_lock:
            if name not in self._pinned:
                backend = self.loader(self.registry.get(name))
                while len(self._pinned) >= self._pinned_cache:
                    self._pinned.pop(next(iter(self._pinned)))
                self._pinned[name] = backend
            return self._pinned[name]


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """One worker loop (run it in a thread or in a process of its own)."""

    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, JobHandler],
        metrics: Metrics | None = None,
        *,
        models: ModelHolder | None = None,
        owner: str | None = None,
        lease_s: float = 60.0,
        heartbeat_s: float | None = None,
        max_attempts: int = 5,
        retry_delay_s: float = 5.0,
    ):
        self.queue, self.handlers = queue, dict(handlers)
        self.metrics = metrics or Metrics()
        self.models = models
        self.owner = owner or new_owner()
        self.lease_s, self.max_attempts, self.retry_delay_s = lease_s, max_attempts, retry_delay_s
        self.heartbeat_s = heartbeat_s or max(lease_s / 3.0, 0.05)
        self.busy = threading.Event()

    def run(self, stop: threading.Event, wait: float = 0.5) -> None:
        log.info("worker %s started", self.owner)
        while not stop.is_set():
            try:
                self.step(wait)
            except Exception:  # a broken step must not end the worker; the job is leased, not lost
                log.exception("worker %s: unexpected error", self.owner)
                stop.wait(1.0)
        log.info("worker %s stopped", self.owner)

    def step(self, wait: float = 0.5) -> str | None:
        """Between jobs: maybe reload the model; then take one job and run it."""
        if self.models is not None:
            self.models.refresh()
        job = self.queue.take(self.owner, self.lease_s, self.max_attempts, wait)
        if job is None:
            return None
        return self.process(job)

    def process(self, job: Job) -> str:
        """Run one job this worker holds the lease of; the state it ends in."""
        handler = self.handlers.get(job.kind)
        if handler is None:
            self.queue.store.finish(job.id, self.owner, FAILED, {"error": f"no handler for job kind {job.kind!r}"})
            return FAILED
        self.busy.set()
        started = time.monotonic()
        try:
            with _Heartbeat(self.queue.store, job.id, self.owner, self.lease_s, self.heartbeat_s) as beat:
                if self.models is not None:
                    # a job taken after a promote is reviewed by the promoted version, however recently the
                    # idle loop last looked (one small file read; a version that just failed is not retried)
                    self.models.refresh(force=True)
                ctx = JobContext(self, job, beat)
                try:
                    result = handler(job, ctx)
                except Superseded as exc:
                    log.info("%s", exc)
                    self._count(job, "superseded")
                    return "superseded"
                except Exception as exc:
                    return self._failed(job, exc)
            if not self.queue.store.finish(job.id, self.owner, result.state, result.info):
                log.info("job %s (%s) finished but was superseded meanwhile", job.id, job.key)
                self._count(job, "superseded")
                return "superseded"
            self._count(job, result.state)
            log.info("job %s (%s): %s in %.2fs", job.id, job.key, result.state, time.monotonic() - started)
            return result.state
        finally:
            self.busy.clear()

    def _failed(self, job: Job, exc: Exception) -> str:
        status = getattr(exc, "status", None)
        if isinstance(exc, ForgeError):
            self.metrics.inc("revbot_forge_api_errors_total", {"forge": job.forge, "status": status or "network"})
        message = str(exc) if isinstance(exc, RevbotError) else f"{type(exc).__name__}: {exc}"
        if is_transient(exc):
            delay = min(self.retry_delay_s * (2 ** max(job.attempts - 1, 0)), MAX_RETRY_DELAY_S)
            state = self.queue.store.release(job.id, self.owner, delay, message, self.max_attempts)
            if state == QUEUED:
                log.warning(
                    "job %s (%s) attempt %d failed, retrying in %.0fs: %s",
                    job.id,
                    job.key,
                    job.attempts,
                    delay,
                    message,
                )
                self.metrics.inc("revbot_job_retries_total", {"kind": job.kind})
            else:
                log.error("job %s (%s) failed after %d attempts: %s", job.id, job.key, job.attempts, message)
                self._count(job, FAILED)
            if not isinstance(exc, RevbotError):  # not a user error: a bug, keep its traceback
                log.error("unexpected error in job %s", job.id, exc_info=exc)
            return state or "superseded"
        log.error("job %s (%s) failed: %s", job.id, job.key, message)
        self.queue.store.finish(job.id, self.owner, FAILED, {"error": message})
        self._count(job, FAILED)
        return FAILED

    def _count(self, job: Job, outcome: str) -> None:
        self.metrics.inc("revbot_jobs_finished_total", {"kind": job.kind, "outcome": outcome})


class Maintenance:
    """What one worker process does beside its workers: fail the jobs of dead workers that used up
    their attempts (and, on Redis, send due retries back to the stream), report its model to
    /healthz, and delete finished jobs and delivery ids older than the retention period."""

    def __init__(
        self,
        queue: JobQueue,
        *,
        owner: str,
        models: ModelHolder | None = None,
        max_attempts: int = 5,
        interval_s: float = 2.0,
        retention_s: float = 7 * 86400.0,
        prune_every_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ):
        self.queue, self.owner, self.models = queue, owner, models
        self.max_attempts, self.interval_s = max_attempts, interval_s
        self.retention_s, self.prune_every_s, self.clock = retention_s, prune_every_s, clock
        self._pruned_at: float | None = None

    def reap(self) -> list[int]:
        failed = self.queue.store.maintain(self.max_attempts)
        if failed:
            log.error("job(s) %s failed: their workers died on the last allowed attempt", failed)
        return failed

    def prune(self) -> dict[str, int] | None:
        """Delete what is older than the retention period, at most every ``prune_every_s``."""
        now = self.clock()
        if self._pruned_at is not None and now - self._pruned_at < self.prune_every_s:
            return None
        self._pruned_at = now
        removed = self.queue.store.prune(now - self.retention_s)
        if any(removed.values()):
            log.info(
                "pruned %d finished job(s) and %d delivery id(s) older than %.0f days",
                removed["jobs"],
                removed["deliveries"],
                self.retention_s / 86400,
            )
        return removed

    def report(self) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "model_loaded": bool(self.models and self.models.loaded),
            "model_version": self.models.version if self.models else None,
            "model_error": self.models.last_error if self.models else None,
        }
        self.queue.store.report_worker(self.owner, info)

    def run(self, stop: threading.Event) -> None:
        while True:
            for step in (self.reap, self.report, self.prune):
                try:
                    step()
                except Exception as exc:
                    log.warning("maintenance (%s): %s", step.__name__, exc)
            if stop.wait(self.interval_s):
                return


class WorkerPool:
    """``n`` worker threads plus one maintenance thread, sharing a queue and a model."""

    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, JobHandler],
        *,
        workers: int = 1,
        models: ModelHolder | None = None,
        metrics: Metrics | None = None,
        lease_s: float = 60.0,
        max_attempts: int = 5,
        retry_delay_s: float = 5.0,
        reap_interval_s: float = 2.0,
        retention_s: float = 7 * 86400.0,
        owner_prefix: str | None = None,
    ):
        prefix = owner_prefix or new_owner()
        self.metrics = metrics or Metrics()
        self.workers = [
            Worker(
                queue,
                handlers,
                self.metrics,
                models=models,
                owner=f"{prefix}/{i}",
                lease_s=lease_s,
                max_attempts=max_attempts,
                retry_delay_s=retry_delay_s,
            )
            for i in range(workers)
        ]
        self.models = models
        self.maintenance = Maintenance(
            queue,
            owner=prefix,
            models=models,
            max_attempts=max_attempts,
            interval_s=reap_interval_s,
            retention_s=retention_s,
        )
        self.stop_event = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> WorkerPool:
        if self.models is not None:
            self.models.refresh(force=True)  # load before taking jobs (a failure is retried per job)
        self._threads = [
            threading.Thread(
                target=self.maintenance.run, args=(self.stop_event,), name="revbot-maintenance", daemon=True
            )
        ]
        self._threads += [
            threading.Thread(target=w.run, args=(self.stop_event,), name=f"revbot-worker-{i}", daemon=True)
            for i, w in enumerate(self.workers)
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs and wait for running ones (their leases cover an unclean exit)."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
