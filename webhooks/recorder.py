"""Human review comments from ``pull_request_review_comment`` events into the dataset store, so the
next retraining learns from the team's newest reviews: created adds, edited updates, deleted
removes. The router has already dropped the bot's own comments and validated the fields; the store
refuses to roll a comment back to an older version or to bring a deleted one back."""
from __future__ import annotations

import logging
from typing import Any, Callable

from bot.store import Store, StoredComment
from webhooks.jobs import DONE, Job
from webhooks.worker import JobContext, JobResult

log = logging.getLogger(__name__)


class CommentRecorder:
    """Job handler for ``comment`` jobs. ``store`` is a Store or a factory (opened on first use)."""

    def __init__(self, store: Store | Callable[[], Store]):
        self._store = store

    @property
    def store(self) -> Store:
        if not isinstance(self._store, Store):
            self._store = self._store()
        return self._store

    def __call__(self, job: Job, ctx: JobContext | None = None) -> JobResult:
        action = job.payload.get("action")
        comment: dict[str, Any] = dict(job.payload.get("comment") or {})
        if action == "deleted":
            removed = self.store.delete_comment(int(comment["id"]))
            return JobResult(DONE, {"action": "deleted", "comment": comment.get("id"), "removed": removed})
        comment.setdefault("pr", job.pr)
        stored = StoredComment.from_github(comment, job.repo, job.payload.get("pr_author"), source="webhook")
        # An older version than the stored one, or a comment deleted since, is skipped by the store
        # (events arrive out of order and can be replayed); only a real change marks the PR pending.
        inserted, updated = self.store.upsert_comments([stored], mark_pending=True)
        log.info("review comment %s on %s#%s (%s): %s", stored.id, job.repo, job.pr, action,
                 "recorded" if inserted or updated else "unchanged, older than stored, or deleted")
        return JobResult(DONE, {"action": action, "comment": stored.id, "inserted": inserted, "updated": updated})
