"""Human review comments from ``pull_request_review_comment`` events into the dataset store, so the
next retraining learns from the team's newest reviews: created adds, edited updates, deleted
removes. The router has already dropped the bot's own comments and validated the fields; the store
refuses to roll a comment back to an older version or to bring a deleted one back.

A person's reply to one of the bot's comments is also feedback on it ("won't fix", "good
catch"), and so is a person resolving one of the bot's threads (``pull_request_review_thread``
events, :class:`ThreadRecorder`): both become rows of ``bot_feedback`` and the PR's evidence is
re-derived (``bot.feedback``). A comment counts as the bot's when the service recorded posting it
(``bot_posts``) or its author is one of the configured bot logins."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from adapters.store import Feedback, Store, StoredComment
from bot.errors import DataError
from bot.feedback import refresh_evidence
from bot.forge import Forges
from webhooks.jobs import DONE, SKIPPED, Job
from webhooks.worker import JobContext, JobResult

log = logging.getLogger(__name__)


class CommentRecorder:
    """Job handler for ``comment`` jobs. ``store`` is a Store or a factory (opened on first use)."""

    def __init__(self, store: Store | Callable[[], Store], forges: Forges | None = None):
        self._store = store
        self.forges = forges  # the poster's forge clients: GitLab notes are completed through the API

    @property
    def store(self) -> Store:
        if not isinstance(self._store, Store):
            self._store = self._store()
        return self._store

    def __call__(self, job: Job, ctx: JobContext | None = None) -> JobResult:
        action = job.payload.get("action")
        comment: dict[str, Any] = dict(job.payload.get("comment") or {})
        pr_author = job.payload.get("pr_author")
        if job.payload.get("forge") == "gitlab" and action != "deleted":
            comment, pr_author = self._gitlab_comment(job, comment)
        if action == "deleted":
            removed = self.store.delete_comment(int(comment["id"]), job.forge)
            return JobResult(DONE, {"action": "deleted", "comment": comment.get("id"), "removed": removed})
        comment.setdefault("pr", job.pr)
        stored = StoredComment.from_github(comment, job.repo, pr_author, source="webhook", forge=job.forge)
        # An older version than the stored one, or a comment deleted since, is skipped by the store
        # (events arrive out of order and can be replayed); only a real change marks the PR pending.
        inserted, updated = self.store.upsert_comments([stored], mark_pending=True)
        log.info(
            "review comment %s on %s#%s (%s): %s",
            stored.id,
            job.repo,
            job.pr,
            action,
            "recorded" if inserted or updated else "unchanged, older than stored, or deleted",
        )
        info = {"action": action, "comment": stored.id, "inserted": inserted, "updated": updated}
        if stored.in_reply_to_id is not None and stored.in_reply_to_id in bot_comment_ids(self.store, job.repo, job.pr):
            self.store.record_feedback(
                [
                    Feedback(
                        job.repo,
                        job.pr,
                        stored.in_reply_to_id,
                        "reply",
                        stored.author or "",
                        stored.body,
                        stored.id,
                        stored.created_at,
                        "webhook",
                        job.forge,
                    )
                ]
            )
            refresh_evidence(self.store, job.repo, job.pr)
            info["feedback"] = True
        return JobResult(DONE, info)

    def _gitlab_comment(self, job: Job, partial: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """A Note Hook names the note and its thread; the thread says which note it answers and the
        merge request's diff at the note's SHAs gives its hunk (GitLab notes carry none)."""
        gh = self.forges.client(None, "gitlab")
        notes = gh.discussion_comments(job.repo, job.pr, str(job.payload["discussion_id"]))
        found = next((c for c in notes if int(c["id"]) == int(partial["id"])), None)
        if found is None:
            raise DataError(
                f"note {partial['id']} is not in thread {job.payload['discussion_id']} of {job.repo}!{job.pr}"
            )
        return found, (gh.get_pull(job.repo, job.pr).get("user") or {}).get("login")


class ReactionRecorder(CommentRecorder):
    """Job handler for ``reaction`` jobs (GitLab's Emoji Hook): the award emoji on one of the bot's
    notes, read back from the API, become that comment's reaction feedback."""

    def __call__(self, job: Job, ctx: JobContext | None = None) -> JobResult:
        note_id = int(job.payload["note_id"])
        if note_id not in bot_comment_ids(self.store, job.repo, job.pr):
            return JobResult(SKIPPED, {"reason": "not a comment the bot posted"})
        gh = self.forges.client(None, job.payload.get("forge"))
        counts: dict[str, int] = {}
        for r in gh.comment_reactions(job.repo, note_id, number=job.pr):
            counts[str(r["content"])] = counts.get(str(r["content"]), 0) + 1
        self.store.record_feedback(
            [Feedback(job.repo, job.pr, note_id, "reactions", "", json.dumps(counts, sort_keys=True), forge=job.forge)]
        )
        refresh_evidence(self.store, job.repo, job.pr)
        return JobResult(DONE, {"comment": note_id, "reactions": counts})


def bot_comment_ids(store: Store, repo: str, pr: int) -> set[int]:
    """GitHub ids of the comments the service posted on this PR (as far as it has seen them)."""
    return {p.comment_id for p in store.iter_posts(repo, pr) if p.comment_id is not None}


class ThreadRecorder(CommentRecorder):
    """Job handler for ``thread`` jobs: one of the bot's threads resolved or reopened by someone."""

    def __init__(self, store: Store | Callable[[], Store], own_logins: frozenset[str] = frozenset()):
        super().__init__(store)
        self.own_logins = own_logins

    def __call__(self, job: Job, ctx: JobContext | None = None) -> JobResult:
        root = dict(job.payload.get("root") or {})
        author = str((root.get("user") or {}).get("login") or "").lower()
        root_id = int(root.get("id") or 0)
        if root_id not in bot_comment_ids(self.store, job.repo, job.pr) and author not in self.own_logins:
            return JobResult(SKIPPED, {"reason": "not a thread the bot started"})
        sender = job.payload.get("sender")
        changed = root.get("line") is None and root.get("subject_type") != "file"
        resolved = job.payload.get("action") == "resolved"
        self.store.record_feedback(
            [
                Feedback(
                    job.repo,
                    job.pr,
                    root_id,
                    "resolved",
                    sender or "",
                    json.dumps({"resolved": resolved, "by": sender, "changed": changed}),
                    None,
                    root.get("updated_at"),
                    "webhook",
                    job.forge,
                )
            ]
        )
        refresh_evidence(self.store, job.repo, job.pr)
        return JobResult(DONE, {"comment": root_id, "resolved": resolved, "changed": changed})
