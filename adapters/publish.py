"""Post a finished review on a pull request from a one-shot run: ``revbot review --post`` in a CI
job (the GitHub Action in ``action.yml``), with the workflow's own token.

The rules are the webhook service's (``webhooks/poster.py``), so a pull request reviewed either
way reads the same:

* one review per head commit: a hidden ``revbot:review`` marker names the head it covers, and a
  re-run of the job for the same head posts nothing;
* only what is new: comments whose fingerprint is already on the pull request (in an earlier
  review's comments or body) are left out, and when nothing is new nothing is posted;
* one ``create review`` call with at most ``MAX_INLINE`` inline comments; the rest, the comments
  that could not be anchored and the files not reviewed go into its body;
* a 422 for some inline comments moves those into the body and posts again, so the review itself is
  never lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from bot.errors import GitHubError, InvalidPositionError, UsageError
from bot.forge import Forge
from bot.formats import (
    REVIEW_MARK,
    comment_fingerprint,
    extract_fingerprints,
    github_review_payload,
    review_marker,
)
from bot.review import Review

log = logging.getLogger(__name__)

MAX_INLINE = 30  # inline comments per create-review call
MAX_422_ROUNDS = 3
HEADER = "**revbot review**"


@dataclass(frozen=True)
class Posted:
    """What ``post_review`` did: the review's id and how many comments went where, or why nothing
    was posted (``skipped``)."""

    review_id: int | None = None
    inline: int = 0
    in_body: int = 0
    refused: int = 0  # inline comments GitHub refused (422), moved into the body
    skipped: str | None = None

    def describe(self, target: str) -> str:
        if self.skipped:
            return f"nothing posted on {target}: {self.skipped}"
        extra = f", {self.refused} refused by GitHub and moved there" if self.refused else ""
        return (
            f"posted review {self.review_id} on {target}: {self.inline} inline comment"
            f"{'s' if self.inline != 1 else ''}, {self.in_body} in the body{extra}"
        )


def parse_target(text: str) -> tuple[str, int]:
    """``OWNER/REPO#N`` -> ("OWNER/REPO", N), or a GitLab merge request ``GROUP/PROJECT!N`` (subgroups
    allowed); anything else is a UsageError saying what is expected."""
    project, bang, iid = text.strip().rpartition("!")
    if bang:
        parts = project.split("/")
        if len(parts) < 2 or not all(parts) or not iid.isdigit() or int(iid) < 1:
            raise UsageError(f"--post expects GROUP/PROJECT!IID for a GitLab merge request, got {text!r}")
        return project, int(iid)
    repo, sep, number = text.strip().rpartition("#")
    owner, slash, name = repo.partition("/")
    if not sep or not slash or not owner or not name or "/" in name or not number.isdigit() or int(number) < 1:
        raise UsageError(f"--post expects OWNER/REPO#NUMBER (e.g. acme/widgets#12), got {text!r}")
    return repo, int(number)


def post_review(
    gh: Forge, repo: str, number: int, review: Review, *, commit_id: str | None = None, header: str = HEADER
) -> Posted:
    """Post ``review`` on pull request ``number`` of ``repo`` as one review of ``commit_id`` (default:
    the pull request's head). Nothing is posted on a closed pull request, on one whose head moved
    past ``commit_id`` (a newer run will review that), or when this head already has a review."""
    pr = gh.get_pull(repo, number)
    if pr.get("state") != "open":
        return Posted(skipped=f"the pull request is {pr.get('state')}")
    head = str((pr.get("head") or {}).get("sha") or "")
    if commit_id and head and commit_id != head:
        return Posted(skipped=f"its head moved on to {head[:12]}; this review of {commit_id[:12]} is out of date")
    commit = commit_id or head
    if not commit:
        raise GitHubError(f"{repo}#{number} has no head commit to review")
    reviews = gh.list_reviews(repo, number)
    bodies = [r.get("body") or "" for r in reviews]
    if any(review_marker(commit) in body for body in bodies):
        return Posted(skipped=f"head {commit[:12]} already has a revbot review")
    known = set(extract_fingerprints("\n".join(bodies)))
    for comment in gh.pull_review_comments(repo, number):
        known.update(extract_fingerprints(comment.get("body")))
    new = [c for c in [*review.comments, *review.unanchored] if comment_fingerprint(c) not in known]
    if not new and any(REVIEW_MARK in body for body in bodies):
        return Posted(skipped="nothing new since the last revbot review")

    refused_total = 0
    for attempt in range(MAX_422_ROUNDS + 1):
        payload = github_review_payload(
            review, commit, known_fingerprints=known, max_inline=MAX_INLINE, header=f"{header}\n{review_marker(commit)}"
        )
        try:
            posted = gh.create_review(
                repo,
                number,
                commit_id=commit,
                body=payload["body"],
                event=payload["event"],
                comments=payload["comments"],
            )
        except InvalidPositionError as exc:
            review, moved = _without_refused(
                review, known, exc.failed_indexes, everything=attempt >= MAX_422_ROUNDS - 1
            )
            if moved == 0:
                raise
            refused_total += moved
            log.warning(
                "GitHub refused %d inline comment(s) on %s#%s; posting them in the body instead", moved, repo, number
            )
            continue
        except GitHubError as exc:
            if exc.status == 403:
                raise GitHubError(
                    f"{exc} -- the token may not write reviews here: a workflow needs "
                    "`permissions: pull-requests: write`, and a pull request from a fork gets a "
                    "read-only GITHUB_TOKEN (review those with `format: sarif`)",
                    403,
                ) from exc
            raise
        inline = len(payload["comments"])
        in_body = len([c for c in new if comment_fingerprint(c) not in known]) - inline
        return Posted(posted.get("id"), inline, max(in_body, 0), refused_total)
    raise AssertionError("unreachable")  # pragma: no cover


def _without_refused(review: Review, known: set[str], failed: list[int] | None, everything: bool) -> tuple[Review, int]:
    """``review`` with the inline comments GitHub refused (indexes into those sent; None: all)
    moved to the unanchored ones, which the body lists."""
    sent = [c for c in review.comments if comment_fingerprint(c) not in known][:MAX_INLINE]
    refused = sent if failed is None or everything else [sent[i] for i in failed if 0 <= i < len(sent)]
    if not refused:
        return review, 0
    drop = {id(c) for c in refused}
    kept = [c for c in review.comments if id(c) not in drop]
    return replace(review, comments=kept, unanchored=[*review.unanchored, *refused]), len(refused)
