"""Plain records the domain reads and the store keeps: a GitHub review comment as stored, feedback on
the bot's own comments, what the bot posted, and that feedback read as evidence. No I/O here: the
SQLite store (``adapters.store``) persists these, ``bot.feedback`` reasons about them."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

from bot.errors import DataError
from bot.json_types import JSON
from bot.secrets import scrub_text


def utc_timestamp(value: object) -> str | None:
    """Any ISO-8601 time (or datetime) -> ``YYYY-MM-DDTHH:MM:SSZ`` in UTC, so stored times compare
    correctly as strings. None and empty stay None; an unreadable value is a DataError."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            text += "T00:00:00"
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise DataError(f"not an ISO-8601 time: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_bot_login(login: str | None, user_type: str | None = None) -> bool:
    """GitHub marks apps as type ``Bot`` and their logins end in ``[bot]``."""
    return (user_type or "").lower() == "bot" or (login or "").lower().endswith("[bot]")


_PR_FROM_URL = re.compile(r"/pulls?/(\d+)(?:$|[/?#])")


def _pr_number(raw: Mapping[str, JSON]) -> int | None:
    for url in (
        raw.get("pull_request_url"),
        ((raw.get("_links") or {}).get("pull_request") or {}).get("href"),
        raw.get("html_url"),
    ):
        if isinstance(url, str):
            m = _PR_FROM_URL.search(url)
            if m:
                return int(m.group(1))
    return None


def _int_or_none(value: JSON) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class StoredComment:
    """One review comment (a GitHub pull-request review comment, a GitLab DiffNote) as stored, body
    and diff_hunk already scrubbed. It is keyed by (``forge``, ``id``): each forge numbers its
    comments on its own, so a GitHub id and a GitLab note id may be the same number.

    ``line``/``side``/``start_line`` refer to the PR's latest diff (None once outdated);
    ``original_*`` to the commit the comment was written on, whose end is ``diff_hunk``'s last line.
    ``source`` says how it arrived (``github``, ``gitlab``: a harvest; ``webhook``; ``import:...``).
    """

    repo: str
    pr: int
    id: int
    path: str | None = None
    diff_hunk: str | None = None
    line: int | None = None
    side: str | None = None
    start_line: int | None = None
    start_side: str | None = None
    original_line: int | None = None
    original_start_line: int | None = None
    commit_id: str | None = None
    original_commit_id: str | None = None
    author: str | None = None
    author_type: str | None = None
    pr_author: str | None = None
    body: str = ""
    created_at: str | None = None
    updated_at: str | None = None
    in_reply_to_id: int | None = None
    reactions: dict[str, int] = field(default_factory=dict)
    html_url: str | None = None
    source: str = "github"
    is_bot: bool = False
    forge: str = "github"  # whose id ``id`` is: "github" or "gitlab"

    @property
    def is_reply(self) -> bool:
        return self.in_reply_to_id is not None

    @property
    def thumbs_up(self) -> int:
        return int(self.reactions.get("+1", 0) or 0)

    @property
    def thumbs_down(self) -> int:
        return int(self.reactions.get("-1", 0) or 0)

    @classmethod
    def from_github(
        cls,
        raw: Mapping[str, JSON],
        repo: str,
        pr_author: str | None = None,
        source: str = "github",
        forge: str = "github",
    ) -> StoredComment:
        """From a review comment in the forge port's shape (GitHub's REST JSON, also the ``comment``
        of a ``pull_request_review_comment`` webhook; a GitLab note as the adapter gives it, with
        ``forge="gitlab"``). Secrets are scrubbed here, before anything is stored. Missing
        diff_hunk/line/side (comments from 2012) are kept as None."""
        if not isinstance(raw, Mapping):
            raise DataError(f"review comment must be a JSON object, got {type(raw).__name__}")
        comment_id = _int_or_none(raw.get("id"))
        if comment_id is None:
            raise DataError("review comment has no integer 'id'")
        pr = _int_or_none(raw.get("pr")) or _pr_number(raw)
        if pr is None:
            raise DataError(f"review comment {comment_id} names no pull request (no pull_request_url)")
        user = raw.get("user") or {}
        login = user.get("login") if isinstance(user, Mapping) else None
        user_type = user.get("type") if isinstance(user, Mapping) else None
        reactions_raw = raw.get("reactions") or {}
        reactions = (
            {
                k: int(v)
                for k, v in reactions_raw.items()
                if k != "url" and isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            if isinstance(reactions_raw, Mapping)
            else {}
        )
        side = raw.get("side")
        start_side = raw.get("start_side")
        return cls(
            repo=repo,
            pr=int(pr),
            id=comment_id,
            path=raw.get("path"),
            diff_hunk=scrub_text(raw.get("diff_hunk")) or None,
            line=_int_or_none(raw.get("line")),
            side=str(side).upper() if side else None,
            start_line=_int_or_none(raw.get("start_line")),
            start_side=str(start_side).upper() if start_side else None,
            original_line=_int_or_none(raw.get("original_line")),
            original_start_line=_int_or_none(raw.get("original_start_line")),
            commit_id=raw.get("commit_id"),
            original_commit_id=raw.get("original_commit_id"),
            author=login,
            author_type=user_type,
            pr_author=pr_author,
            body=scrub_text(raw.get("body") or "") or "",
            created_at=utc_timestamp(raw.get("created_at")),
            updated_at=utc_timestamp(raw.get("updated_at") or raw.get("created_at")),
            in_reply_to_id=_int_or_none(raw.get("in_reply_to_id")),
            reactions=reactions,
            html_url=raw.get("html_url"),
            source=source,
            is_bot=is_bot_login(login, user_type),
            forge=forge,
        )

    def digest(self) -> str:
        """Content hash: an unchanged comment is not rewritten (and not counted as updated)."""
        data = [getattr(self, k) for k in _DIGEST_COLUMNS]
        return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()


# the key (forge) and where a comment came from are not its content: a change of either is no update
_DIGEST_COLUMNS = [f.name for f in fields(StoredComment) if f.name not in ("source", "pr_author", "forge")]


@dataclass(frozen=True)
class Feedback:
    """What people did with one of the bot's own comments.

    kinds: ``reactions`` (the comment's reaction counts, ``content`` is their JSON, one row per
    comment, updated in place), ``reaction`` (one person's reaction, ``content`` its name),
    ``reply`` (a reply in the thread, ``content`` its scrubbed body, ``ref_id`` its comment id) and
    ``resolved`` (the thread's state, one row per comment: JSON ``{"resolved", "by", "changed"}``,
    ``changed`` meaning a push had changed the lines the comment sat on).
    """

    repo: str
    pr: int
    comment_id: int  # the bot's comment
    kind: str
    author: str
    content: str
    ref_id: int | None = None
    created_at: str | None = None
    source: str = "github"
    forge: str = "github"  # whose ids ``comment_id`` and ``ref_id`` are

    @property
    def key(self) -> str:
        """Identity for upserts: recording the same feedback twice stores it once. Ids are the
        forge's own, so a GitLab key is prefixed with ``gitlab:`` (GitHub's keep their first form)."""
        if self.kind in ("reactions", "resolved"):
            key = f"{self.kind}:{self.comment_id}"
        elif self.ref_id is not None:
            key = f"{self.kind}:{self.comment_id}:{self.ref_id}"
        else:
            digest = hashlib.sha1(self.content.encode()).hexdigest()[:12]
            key = f"{self.kind}:{self.comment_id}:{self.author}:{digest}"
        return key if self.forge == "github" else f"{self.forge}:{key}"

    def counts(self) -> dict[str, int]:
        """Reaction counts of a ``reactions`` row."""
        return json.loads(self.content) if self.kind == "reactions" else {}


@dataclass(frozen=True)
class BotPost:
    """One comment the webhook service posted: who wrote it (model version), on which hunk."""

    repo: str
    pr: int
    fingerprint: str
    path: str
    line: int | None
    side: str | None
    body: str
    hunk: str | None = None
    head_sha: str | None = None
    model_version: str | None = None
    comment_id: int | None = None
    posted_at: str | None = None


@dataclass(frozen=True)
class Evidence:
    """Feedback on one of the bot's comments read as evidence: ``polarity`` +1 (the team accepted
    it) or -1 (rejected), ``weight`` how many people or how strong, ``source`` where it came from
    (``reaction:+1``, ``reaction:-1``, ``reply:wont-fix``, ``reply:fixed``, ``resolved:changed``,
    ``resolved:unchanged``). The comment's text, place and hunk travel with it, so training can
    use it without looking anything up."""

    repo: str
    pr: int
    comment_id: int
    source: str
    polarity: int
    weight: int = 1
    author: str = ""
    fingerprint: str | None = None
    model_version: str | None = None
    path: str | None = None
    line: int | None = None
    side: str | None = None
    body: str = ""
    hunk: str | None = None
    created_at: str | None = None

    @property
    def key(self) -> str:
        return f"{self.repo}:{self.comment_id}:{self.source}"


@dataclass(frozen=True)
class ReviewRecord:
    """One review the webhook service posted on a pull request head: what it said and what it left out.

    ``comments`` inline comments, ``in_body`` more in the review's body; ``skipped_files`` the
    files the review did not look at, each ``{"path", "reason"}``; ``seconds`` from the job being
    taken to the review being posted."""

    repo: str
    pr: int
    head_sha: str
    model_version: str | None
    comments: int
    in_body: int = 0
    skipped_files: tuple[Mapping[str, str], ...] = ()
    seconds: float | None = None
    review_id: int | None = None
    posted_at: str | None = None
