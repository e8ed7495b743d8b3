"""Which part of a pull request a review covers: the whole diff, or only what changed since the
last head revbot reviewed (a push to a reviewed PR).

The last reviewed head is read from GitHub itself (the hidden ``revbot:review sha=`` marker of the
newest revbot review), so no local state can disagree with what is on the PR. The two heads are
compared with GitHub's compare API; the PR's hunks that hold a line changed between them are
reviewed, nothing else. Comments still anchor on the PR's own diff (what GitHub accepts), and the
model sees whole PR hunks, so it reads a changed line in its context.

The whole diff is reviewed instead when there is no earlier review, when asked (``/revbot
review``), or when the last reviewed head is no longer an ancestor of the new one (a force-push
rewrote the branch: compare answers 404, or "diverged"/"behind"), and the review body says why.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from bot.diff import Diff, FileDiff, Hunk, parse_patch
from bot.errors import DiffError, ForgeError
from bot.forge import Forge
from bot.formats import REVIEW_MARK

log = logging.getLogger(__name__)

MAX_COMPARE_FILES = 300  # GitHub lists at most 300 files in a compare; more means the list is cut
_MARKER = re.compile(re.escape(REVIEW_MARK) + r"([0-9a-f]{40}(?:[0-9a-f]{24})?) -->")
RANGE_MARK = "<!-- revbot:range "


@dataclass
class Scope:
    """The diff to review and how to describe it. ``since`` is the last reviewed head when the
    review is incremental; ``reason`` says why a push was reviewed whole."""

    diff: Diff
    head: str
    base: str | None = None
    since: str | None = None
    reason: str | None = None
    pr_hunks: int = 0
    changed_paths: list[str] = field(default_factory=list)

    @property
    def incremental(self) -> bool:
        return self.since is not None and self.reason is None

    def note(self) -> str:
        """The line of the review body that says what was reviewed (with a hidden marker a tool
        can read: ``<!-- revbot:range from=SHA to=SHA -->``)."""
        head = f"`{self.head[:12]}`"
        if self.incremental:
            hunks = sum(len(f.hunks) for f in self.diff)
            text = (
                f"**Reviewed range:** only the changes since the last review, `{self.since[:12]}`...{head}: "  # type: ignore[index]
                f"{hunks} of the pull request's {self.pr_hunks} hunk{'s' if self.pr_hunks != 1 else ''}"
            )
            files = sorted({f.path for f in self.diff if f.hunks})
            if files:
                text += " in " + ", ".join(f"`{p}`" for p in files[:10]) + (" ..." if len(files) > 10 else "")
            return text + f".\n{RANGE_MARK}from={self.since} to={self.head} -->"
        base = f"`{self.base[:12]}`..." if self.base else ""
        text = f"**Reviewed range:** the whole pull request ({base}{head})"
        text += f": {self.reason}." if self.reason else "."
        return text + f"\n{RANGE_MARK}from={self.base or 'base'} to={self.head} -->"


def last_reviewed_head(reviews: list[dict], head: str) -> str | None:
    """The head of the newest revbot review of another commit than ``head``."""
    found: list[tuple[str, int, str]] = []
    for r in reviews:
        for sha in _MARKER.findall(r.get("body") or ""):
            if sha != head:
                found.append((str(r.get("submitted_at") or ""), int(r.get("id") or 0), sha))
    return max(found)[2] if found else None


def _changed_points(patch: str | None, path: str) -> set[int]:
    """New-side lines a head-to-head patch adds, and the places where it deleted lines."""
    try:
        fd = parse_patch(patch, path, strict=False)
    except DiffError:
        return set()
    points: set[int] = set()
    for hunk in fd.hunks:
        nxt = hunk.new_start if hunk.new_len else hunk.new_start + 1
        for ln in hunk.lines:
            if ln.kind == "+":
                points.add(ln.new_no or nxt)
            elif ln.kind == "-":
                points.update({nxt - 1, nxt})  # between the new lines around the deletion
            if ln.new_no is not None:
                nxt = ln.new_no + 1
    return points


def _touches(hunk: Hunk, points: set[int]) -> bool:
    start = hunk.new_start
    end = hunk.new_start + hunk.new_len - 1 if hunk.new_len else hunk.new_start
    return any(start <= p <= end for p in points)


def restrict(diff: Diff, files: list[dict]) -> tuple[Diff, list[str]]:
    """``diff`` (the PR's) cut down to its hunks that hold a line changed by ``files`` (the compare
    API's list between two heads). Returns the cut diff and the paths the compare named."""
    changed = {f["filename"]: _changed_points(f.get("patch"), f["filename"]) for f in files if f.get("filename")}
    kept: list[FileDiff] = []
    for fd in diff:
        points = changed.get(fd.path)
        if not points:
            continue
        hunks = [h for h in fd.hunks if _touches(h, points)]
        if hunks:
            kept.append(
                FileDiff(fd.path, fd.old_path, fd.status, fd.is_binary, fd.is_symlink, fd.old_mode, fd.new_mode, hunks)
            )
    return Diff(kept, diff.source, list(diff.warnings)), sorted(changed)


def choose_scope(
    gh: Forge,
    repo: str,
    diff: Diff,
    reviews: list[dict],
    head: str,
    base: str | None,
    *,
    full: bool = False,
    requested_by: str | None = None,
) -> Scope:
    """The scope of the review of ``head``: see the module docstring."""
    total = sum(len(f.hunks) for f in diff)
    if full:
        who = f" by {requested_by}" if requested_by else ""
        return Scope(diff, head, base, reason=f"asked for with `/revbot review`{who}", pr_hunks=total)
    since = last_reviewed_head(reviews, head)
    if since is None:
        return Scope(diff, head, base, pr_hunks=total)
    try:
        compared = gh.compare(repo, since, head)
    except ForgeError as exc:
        if exc.status not in (404, 422):
            raise
        log.info("%s: %s is gone (%s); reviewing the whole diff", repo, since[:12], exc)
        return Scope(
            diff,
            head,
            base,
            since,
            f"the last reviewed head `{since[:12]}` is no longer in the branch (force-push)",
            pr_hunks=total,
        )
    status = compared.get("status")
    files = compared.get("files") or []
    if status not in ("ahead", "identical"):
        return Scope(
            diff,
            head,
            base,
            since,
            f"the last reviewed head `{since[:12]}` is not an ancestor of this one ({status}: force-push or rebase)",
            pr_hunks=total,
        )
    if len(files) >= MAX_COMPARE_FILES:
        return Scope(
            diff, head, base, since, f"more than {MAX_COMPARE_FILES} files changed since `{since[:12]}`", pr_hunks=total
        )
    cut, paths = restrict(diff, files)
    return Scope(cut, head, base, since, pr_hunks=total, changed_paths=paths)
