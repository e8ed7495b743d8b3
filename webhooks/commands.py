"""``/revbot`` commands in a pull request's conversation, run by the worker.

  /revbot review          a full review of the current head now (the whole diff, whatever was
                          reviewed before; only comments not already on the PR are posted)
  /revbot ignore <glob>   later reviews of this PR leave out paths matching the gitignore-style
                          glob (on top of ``.revbot.yml``'s ``ignore_paths``)

Only people who may write to the repository can command the bot: the commenter's permission is
read from GitHub (``collaborators/{user}/permission``) when the command runs, never taken from the
payload. The answer is a reaction on the command: 👀 (a review is on its way), 👍 (the ignore is
recorded), 😕 (refused: no write access, an unknown command, a bad glob, a closed PR).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from adapters.store import Store
from bot.config import path_matches
from bot.errors import DataError, ForgeError
from bot.forge import Forges
from webhooks.jobs import DONE, REVIEW, SKIPPED, Job, NewJob
from webhooks.worker import JobContext, JobResult

log = logging.getLogger(__name__)

WRITERS = ("admin", "maintain", "write")
MAX_GLOB = 200
ACK_REVIEW, ACK_DONE, ACK_REFUSED = "eyes", "+1", "confused"


def request_key(repo: str, pr: int, head: str, comment_id: int) -> str:
    """The review job of one ``/revbot review`` (its own key: the head may already be reviewed)."""
    return f"review:{repo.lower()}#{pr}@{head}:request:{comment_id}"


def check_glob(glob: str) -> str | None:
    """Why ``glob`` cannot be an ignore pattern, or None when it can."""
    if not glob:
        return "no glob given (`/revbot ignore docs/**`)"
    if len(glob) > MAX_GLOB:
        return f"the glob is longer than {MAX_GLOB} characters"
    if glob.strip("/*") == "":
        return "the glob would match every file"
    if any(ch in glob for ch in "`<>\r\n\t\x00"):  # it is quoted in later review bodies: no markup, no markers
        return "the glob holds a character paths here never do (` < > or a control character)"
    try:
        path_matches("probe/file.py", glob)
    except re.error as exc:  # a pattern fnmatch cannot compile
        return f"not a valid glob: {exc}"
    return None


class CommandHandler:
    """Job handler for ``command`` jobs. ``forges`` gives each job its forge client (the poster's);
    ``store`` opens the dataset store (where ignores are recorded)."""

    def __init__(self, forges: Forges, store: Callable[[], Store] | None):
        self.forges, self.store = forges, store

    def __call__(self, job: Job, ctx: JobContext) -> JobResult:
        p = job.payload
        gh = self.forges.client(p.get("installation_id"), job.forge)
        comment_id, user, command = int(p["comment_id"]), str(p.get("user") or ""), p.get("command")
        permission = gh.collaborator_permission(job.repo, user) if user else "none"
        if permission not in WRITERS:
            return self._answer(
                gh,
                job,
                ACK_REFUSED,
                SKIPPED,
                {"refused": f"{user or 'unknown user'} has {permission} access, not write"},
            )
        if command == "review":
            pr = gh.get_pull(job.repo, job.pr)
            if pr.get("state") != "open":
                return self._answer(
                    gh, job, ACK_REFUSED, SKIPPED, {"refused": f"the pull request is {pr.get('state')}"}
                )
            head, base = (pr.get("head") or {}).get("sha"), pr.get("base") or {}
            payload = {
                "action": "command",
                "delivery": p.get("delivery"),
                "installation_id": p.get("installation_id"),
                "forge": p.get("forge"),
                "number": job.pr,
                "head_sha": head,
                "base_sha": base.get("sha"),
                "base_ref": base.get("ref"),
                "draft": bool(pr.get("draft")),
                "author": (pr.get("user") or {}).get("login"),
                "updated_at": pr.get("updated_at"),
                "full": True,
                "request": comment_id,
                "requested_by": user,
            }
            accepted = ctx.worker.queue.submit(
                None,
                "issue_comment",
                "command",
                NewJob(REVIEW, request_key(job.repo, job.pr, head, comment_id), job.repo, job.pr, head, payload),
            )
            return self._answer(gh, job, ACK_REVIEW, DONE, {"review_job": accepted.job_id, "head_sha": head})
        if command == "ignore":
            glob = str(p.get("arg") or "").strip()
            problem = check_glob(glob)
            if problem or self.store is None:
                return self._answer(gh, job, ACK_REFUSED, SKIPPED, {"refused": problem or "no dataset store"})
            try:
                added = self.store().add_pr_ignore(job.repo, job.pr, glob, user, comment_id)
            except (DataError, OSError) as exc:
                raise DataError(f"cannot record /revbot ignore {glob!r}: {exc}") from exc
            return self._answer(gh, job, ACK_DONE, DONE, {"ignore": glob, "new": added})
        return self._answer(gh, job, ACK_REFUSED, SKIPPED, {"refused": f"unknown command: {p.get('text')!r}"})

    @staticmethod
    def _answer(gh: Any, job: Job, reaction: str, state: str, info: dict[str, Any]) -> JobResult:
        """React on the command comment (GitHub answers 200 for a reaction already there)."""
        try:
            gh.react_to_issue_comment(job.repo, int(job.payload["comment_id"]), reaction, number=job.pr)
        except ForgeError as exc:
            if exc.status is None or exc.status >= 500:
                raise  # worth a retry: the acknowledgement is part of the job
            log.warning("%s#%s: could not react to command %s: %s", job.repo, job.pr, job.payload["comment_id"], exc)
        log.info(
            "%s#%s: /revbot %s by %s -> %s",
            job.repo,
            job.pr,
            job.payload.get("command"),
            job.payload.get("user"),
            reaction,
        )
        return JobResult(state, dict(info, reaction=reaction, at=time.time()))
