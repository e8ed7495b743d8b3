"""What an operator can change from the pages: promote or roll back a version, re-queue a failed job.

Each action is written to the service log and to the dataset store's audit log
(``operator_actions``) with who did it (the name given at login and the client address) and how
it ended, refused attempts included.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from adapters.store import Store
from adapters.versions import ModelRegistry
from bot.errors import RevbotError
from webhooks.jobs import FAILED, REVIEW, NewJob
from webhooks.queue import JobQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str


def _audit(store: Store, actor: str, action: str, target: str, outcome: Outcome) -> Outcome:
    log.warning("operator action: %s %s %s: %s (%s)", actor, action, target, outcome.message, outcome.ok)
    try:
        store.record_action(actor, action, target, "done" if outcome.ok else "refused", outcome.message)
    except (RevbotError, OSError) as exc:
        log.error("operator action not written to the audit log: %s", exc)
    return outcome


def promote(registry: ModelRegistry, store: Store, actor: str, name: str) -> Outcome:
    try:
        version = registry.promote(name, by=f"operator page: {actor}")
        outcome = Outcome(True, f"{version.name} is now the current version; workers load it within seconds")
    except RevbotError as exc:
        outcome = Outcome(False, str(exc))
    return _audit(store, actor, "promote", name, outcome)


def rollback(registry: ModelRegistry, store: Store, actor: str) -> Outcome:
    before = registry.current_name() or "none"
    try:
        version = registry.rollback(by=f"operator page: {actor}")
        outcome = Outcome(True, f"rolled back from {before} to {version.name}")
    except RevbotError as exc:
        outcome = Outcome(False, str(exc))
    return _audit(store, actor, "rollback", before, outcome)


def requeue(queue: JobQueue, store: Store, actor: str, job_id: int) -> Outcome:
    """Run a failed job again. A review job is not revived when a newer review job exists for its
    pull request (that push replaced it), so an old head is never reviewed over a newer one."""
    job = queue.store.get(job_id)
    if job is None:
        outcome = Outcome(False, f"no job {job_id}")
    elif job.state != FAILED:
        outcome = Outcome(False, f"job {job_id} is {job.state}, not failed")
    elif job.kind == REVIEW and any(
        other.id > job.id for other in queue.store.find(repo=job.repo, pr=job.pr, kind=REVIEW)
    ):
        outcome = Outcome(False, f"job {job_id} was replaced by a newer review of {job.repo}#{job.pr}")
    else:
        again = NewJob(job.kind, job.key, job.repo, job.pr, job.head_sha, job.payload)
        accepted = queue.store.accept(None, "operator", "requeue", again, supersede=False)
        outcome = (
            Outcome(True, f"job {job_id} ({job.repo}#{job.pr}) is queued again")
            if accepted.created
            else Outcome(False, f"job {job_id} could not be queued again")
        )
    return _audit(store, actor, "requeue", f"job {job_id}", outcome)
