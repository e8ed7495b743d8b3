"""Deliveries and event routing, with no web framework in them (the Flask view only checks,
queues and answers; everything it decides is decided here and tested without HTTP).

``Router.register("pull_request", "opened", ...)`` maps (event, action) to a handler; a handler
gets the parsed ``Delivery`` and returns an ``Outcome`` (HTTP status + a metrics label). Events
and actions nobody registered are answered 202 "ignored".

A signed delivery is still untrusted input (a leaked secret, a replayed capture, a GitHub change):
every field the service reads is validated here (types, ranges, the owner/name and sha shapes,
lengths, nesting) and anything else is answered 400 with a short reason, never 500 (which makes
GitHub redeliver). Only validated fields go into a job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from bot.errors import RevbotError
from bot.formats import extract_fingerprints
from bot.secrets import scrub_text
from webhooks.jobs import COMMAND, COMMENT, REVIEW, THREAD, NewJob, review_key

log = logging.getLogger(__name__)

REVIEW_ACTIONS = ("opened", "reopened", "ready_for_review", "synchronize")
COMMENT_ACTIONS = ("created", "edited", "deleted")
THREAD_ACTIONS = ("resolved", "unresolved")
COMMANDS = ("review", "ignore")
MAX_GLOB = 200
_COMMAND = re.compile(r"/revbot(?:[ \t]+(\S+)(?:[ \t]+(.*?))?)?[ \t]*", re.IGNORECASE)

MAX_DEPTH = 32  # GitHub's payloads nest 6 levels; deeper is not GitHub
MAX_ID = 2**53 - 1  # GitHub's ids and numbers are JSON-safe integers; SQLite's limit is 2**63 - 1
_EVENT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DELIVERY_ID = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces (GitHub sends a GUID)


class BadDelivery(RevbotError):
    """A signed delivery that cannot be used (not JSON, no event name, fields missing): 400."""


@dataclass
class Delivery:
    event: str
    delivery_id: str | None
    payload: dict[str, Any]

    @property
    def action(self) -> str | None:
        action = self.payload.get("action")
        return action if isinstance(action, str) else None


@dataclass
class Outcome:
    status: int
    outcome: str  # metrics label: queued, duplicate, ignored, skipped, pong, accepted, own_comment
    detail: str = ""
    job_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.outcome}
        if self.detail:
            out["detail"] = self.detail
        if self.job_id is not None:
            out["job"] = self.job_id
        out.update(self.extra)
        return out


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name (GitHub's own sources spell them differently)."""
    getter = getattr(headers, "get", None)
    value = getter(name) if getter else None
    if value is None:
        lowered = name.lower()
        for key, val in headers.items():
            if key.lower() == lowered:
                return val
    return value


def parse_delivery(headers: Mapping[str, str], body: bytes) -> Delivery:
    """The delivery in a (signature-checked) request: event name, delivery id, JSON payload."""
    event = (header(headers, "X-GitHub-Event") or "").strip()
    if not event:
        raise BadDelivery("missing X-GitHub-Event header")
    if not _EVENT_NAME.fullmatch(event):
        raise BadDelivery("X-GitHub-Event must be 1-64 letters, digits, '_', '-' or '.'")
    delivery_id = (header(headers, "X-GitHub-Delivery") or "").strip() or None
    if delivery_id is not None and len(delivery_id) > 200:
        raise BadDelivery("X-GitHub-Delivery header is too long")
    if delivery_id is not None and not _DELIVERY_ID.fullmatch(delivery_id):
        raise BadDelivery("X-GitHub-Delivery must be printable ASCII without spaces")
    try:
        payload = json.loads(body)
    except RecursionError as exc:
        raise BadDelivery(f"the body is nested more than {MAX_DEPTH} levels deep") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise BadDelivery(f"the body is not valid JSON{where}") from exc
    if not isinstance(payload, dict):
        raise BadDelivery("the body must be a JSON object")
    if _depth_over(payload, MAX_DEPTH):
        raise BadDelivery(f"the body is nested more than {MAX_DEPTH} levels deep")
    if not isinstance(payload.get("action"), (str, type(None))):
        raise BadDelivery("payload field action must be a string")  # it picks the route
    return Delivery(event, delivery_id, payload)


def _depth_over(value: Any, limit: int) -> bool:
    """Whether JSON ``value`` nests deeper than ``limit`` (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


# --------------------------------------------------------------------------- payload schema
# Only what the service reads; other fields are ignored. Strict: ``true`` is not the number 1 and
# "2" is not 2.

Id = Annotated[int, Field(ge=1, le=MAX_ID)]
LineNo = Annotated[int, Field(ge=0, le=MAX_ID)]
Name = Annotated[str, StringConstraints(max_length=255)]
RepoName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")]
Sha = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")]
Stamp = Annotated[
    str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$")
]
Url = Annotated[str, StringConstraints(max_length=2048)]
Text = Annotated[str, StringConstraints(max_length=262_144)]  # GitHub caps a comment at 65,536 characters


class _Schema(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class UserIn(_Schema):
    login: Name | None = None
    type: Name | None = None


class RepositoryIn(_Schema):
    full_name: RepoName


class InstallationIn(_Schema):
    id: Id


class HeadIn(_Schema):
    sha: Sha


class BaseIn(_Schema):
    sha: Sha | None = None
    ref: Name | None = None


class ReviewPullIn(_Schema):
    number: Id
    head: HeadIn
    base: BaseIn | None = None
    state: Name | None = None
    draft: bool | None = None
    user: UserIn | None = None
    updated_at: Stamp | None = None


class CommentPullIn(_Schema):
    number: Id
    user: UserIn | None = None


class CommentIn(_Schema):
    """The fields of a review comment that ``StoredComment.from_github`` reads."""

    id: Id
    body: Text | None = None
    path: Annotated[str, StringConstraints(max_length=4096)] | None = None
    diff_hunk: str | None = None
    line: LineNo | None = None
    side: Name | None = None
    start_line: LineNo | None = None
    start_side: Name | None = None
    original_line: LineNo | None = None
    original_start_line: LineNo | None = None
    commit_id: Sha | None = None
    original_commit_id: Sha | None = None
    user: UserIn | None = None
    created_at: Stamp | None = None
    updated_at: Stamp | None = None
    in_reply_to_id: Id | None = None
    reactions: dict[Name, int | Url] | None = None
    html_url: Url | None = None
    pull_request_url: Url | None = None


class _Event(_Schema):
    action: Name | None = None
    installation: InstallationIn | None = None


class PullRequestEvent(_Event):
    repository: RepositoryIn
    pull_request: ReviewPullIn


class ReviewCommentEvent(_Event):
    repository: RepositoryIn
    pull_request: CommentPullIn
    comment: CommentIn


class IssueIn(_Schema):
    number: Id
    pull_request: dict[Name, Any] | None = None  # present only when the issue is a pull request
    user: UserIn | None = None


class IssueCommentIn(_Schema):
    id: Id
    body: Text | None = None
    user: UserIn | None = None


class IssueCommentEvent(_Event):
    repository: RepositoryIn
    issue: IssueIn
    comment: IssueCommentIn
    sender: UserIn | None = None


class ThreadIn(_Schema):
    node_id: Annotated[str, StringConstraints(max_length=200)] | None = None
    comments: list[CommentIn] = Field(default_factory=list, max_length=1000)


class ReviewThreadEvent(_Event):
    repository: RepositoryIn
    pull_request: CommentPullIn
    thread: ThreadIn
    sender: UserIn | None = None


class PingEvent(_Event):
    zen: Annotated[str, StringConstraints(max_length=1000)] | None = None


_PROBLEMS = {
    "missing": "is missing",
    "int_type": "must be a whole number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "model_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "greater_than_equal": f"must be from 1 to {MAX_ID}",
    "less_than_equal": f"must be from 1 to {MAX_ID}",
    "string_too_long": "is too long",
    "int_from_float": "must be a whole number",
}
_SHA = "must be a commit sha (40 lower-case hex digits)"
_SHAPES = {"full_name": "must look like owner/name", "sha": _SHA, "commit_id": _SHA, "original_commit_id": _SHA}


def validate(model: type[_Schema], delivery: Delivery) -> Any:
    """``delivery.payload`` read as ``model``, or BadDelivery naming the first bad field (never its
    value, which may be huge)."""
    try:
        return model.model_validate(delivery.payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        loc = [str(part) for part in first["loc"]]
        name = loc[-1] if loc else ""
        if first["type"] == "string_pattern_mismatch":
            problem = _SHAPES.get(name, "is not in the expected form")
            if name.endswith("_at"):
                problem = "must be an ISO 8601 time such as 2024-01-02T03:04:05Z"
        else:
            problem = _PROBLEMS.get(first["type"], first["msg"][:120])
        more = exc.error_count() - 1
        where = ".".join(loc)[:120]
        message = f"payload has no {where}" if first["type"] == "missing" else f"payload field {where} {problem}"
        raise BadDelivery(message + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")) from exc


Handler = Callable[[Delivery], Outcome]


class Router:
    """(event, action) -> handler. ``action=None`` handlers take every action of the event."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str | None], Handler] = {}

    def register(self, event: str, *actions: str) -> Callable[[Handler], Handler]:
        def decorator(fn: Handler) -> Handler:
            for action in actions or (None,):
                self._routes[(event, action)] = fn
            return fn

        return decorator

    def handles(self, event: str) -> bool:
        return any(e == event for e, _ in self._routes)

    def dispatch(self, delivery: Delivery) -> Outcome:
        handler = self._routes.get((delivery.event, delivery.action)) or self._routes.get((delivery.event, None))
        if handler is None:
            what = delivery.event + (f".{delivery.action}" if delivery.action else "")
            return Outcome(202, "ignored", f"{what} is not handled")
        return handler(delivery)


# --------------------------------------------------------------------------- revbot's events

Submit = Callable[[Delivery, "NewJob | None"], Outcome]


def is_own_comment(comment: Mapping[str, Any], own_logins: frozenset[str]) -> bool:
    """A comment the bot wrote: its login, any GitHub App/bot account, or a revbot fingerprint."""
    user = comment.get("user") if isinstance(comment.get("user"), Mapping) else {}
    login = str(user.get("login") or "").lower()
    if login and login in own_logins:
        return True
    if str(user.get("type") or "").lower() == "bot" or login.endswith("[bot]"):
        return True
    return bool(extract_fingerprints(str(comment.get("body") or "")))  # every bot comment carries one


def build_router(submit: Submit, *, own_logins: frozenset[str] = frozenset()) -> Router:
    """The service's routes. ``submit`` records the delivery (dedupe) and queues the job, if any.

    Closed pull requests are skipped here; drafts are queued, because whether a draft is reviewed
    is the repository's choice (``skip_drafts`` in its ``.revbot.yml``, read by the worker)."""
    router = Router()
    router.register("ping")(_ping)
    router.register("installation")(_installation_changed)
    router.register("installation_repositories")(_installation_changed)
    router.register("pull_request", *REVIEW_ACTIONS)(lambda delivery: _pull_request(delivery, submit))
    router.register("pull_request_review_comment", *COMMENT_ACTIONS)(
        lambda delivery: _review_comment(delivery, submit, own_logins)
    )
    router.register("issue_comment", "created")(lambda delivery: _issue_comment(delivery, submit, own_logins))
    router.register("pull_request_review_thread", *THREAD_ACTIONS)(lambda delivery: _review_thread(delivery, submit))
    return router


def _ping(delivery: Delivery) -> Outcome:
    return Outcome(200, "pong", validate(PingEvent, delivery).zen or "")


def _installation_changed(delivery: Delivery) -> Outcome:
    event = validate(_Event, delivery)
    inst = event.installation.id if event.installation else None
    log.info("GitHub App installation %s: %s", inst, event.action)
    return Outcome(200, "accepted", f"installation {inst} {event.action or ''}".strip())


def _pull_request(delivery: Delivery, submit: Submit) -> Outcome:
    """A pull request opened, pushed to or reopened: a review job keyed by its head commit."""
    event = validate(PullRequestEvent, delivery)
    repo, pr = event.repository.full_name, event.pull_request
    if pr.state not in (None, "open"):
        return Outcome(200, "skipped", f"{repo}#{pr.number} is {pr.state}")
    base = pr.base or BaseIn()
    payload = {
        "action": event.action,
        "delivery": delivery.delivery_id,
        "installation_id": _installation(event),
        "number": pr.number,
        "head_sha": pr.head.sha,
        "base_sha": base.sha,
        "base_ref": base.ref,
        "draft": bool(pr.draft),
        "author": pr.user.login if pr.user else None,
        "updated_at": pr.updated_at,
    }
    job = NewJob(REVIEW, review_key(repo, pr.number, pr.head.sha), repo, pr.number, pr.head.sha, payload)
    return submit(delivery, job)


def _review_comment(delivery: Delivery, submit: Submit, own_logins: frozenset[str]) -> Outcome:
    """A person's review comment: recorded (scrubbed) for retraining; the bot's own are not."""
    event = validate(ReviewCommentEvent, delivery)
    repo, number = event.repository.full_name, event.pull_request.number
    comment = event.comment.model_dump()
    if is_own_comment(comment, own_logins):
        submit(delivery, None)  # remember the delivery id all the same
        return Outcome(200, "own_comment", "comments by bots are not recorded as team reviews")
    author = event.pull_request.user.login if event.pull_request.user else None
    # the job row is stored: secrets pasted into a comment go no further than this process
    comment.update(body=scrub_text(comment["body"]), diff_hunk=scrub_text(comment["diff_hunk"]))
    payload = {
        "action": event.action,
        "delivery": delivery.delivery_id,
        "installation_id": _installation(event),
        "comment": comment,
        "pr_author": author,
    }
    return submit(
        delivery,
        NewJob(COMMENT, comment_key(repo, number, event.action, event.comment), repo, number, None, payload),
    )


def _issue_comment(delivery: Delivery, submit: Submit, own_logins: frozenset[str]) -> Outcome:
    """``/revbot review`` and ``/revbot ignore <glob>`` in a PR's conversation: queued as a
    command job; the worker checks the commenter's permission through the API (too slow for
    this view) and answers with a reaction."""
    event = validate(IssueCommentEvent, delivery)
    repo, comment = event.repository.full_name, event.comment
    body = comment.body or ""
    first = body.strip().split("\n", 1)[0].strip()
    match = _COMMAND.fullmatch(first)
    if match is None:
        submit(delivery, None)
        return Outcome(202, "ignored", "not a /revbot command")
    if event.issue.pull_request is None:
        submit(delivery, None)
        return Outcome(202, "ignored", "/revbot commands work on pull requests only")
    if is_own_comment(comment.model_dump(), own_logins):
        submit(delivery, None)
        return Outcome(200, "own_comment", "commands from bots are ignored")
    name, arg = (match.group(1) or "").lower(), (match.group(2) or "").strip()
    payload = {
        "action": event.action,
        "delivery": delivery.delivery_id,
        "installation_id": _installation(event),
        "comment_id": comment.id,
        "user": comment.user.login if comment.user else None,
        "command": name if name in COMMANDS else "unknown",
        "arg": arg[: MAX_GLOB + 1],
        "text": first[:300],
    }
    key = f"command:{repo.lower()}#{event.issue.number}:{comment.id}"
    return submit(delivery, NewJob(COMMAND, key, repo, event.issue.number, None, payload))


def _review_thread(delivery: Delivery, submit: Submit) -> Outcome:
    """A person resolved (or reopened) one of the bot's threads: feedback for retraining."""
    event = validate(ReviewThreadEvent, delivery)
    repo, number = event.repository.full_name, event.pull_request.number
    comments = [c.model_dump() for c in event.thread.comments]
    if not comments or not extract_fingerprints(comments[0].get("body") or ""):
        submit(delivery, None)  # the worker checks the thread really is the bot's (its own records)
        return Outcome(202, "ignored", "not a revbot thread")
    root = comments[0]
    payload = {
        "action": event.action,
        "delivery": delivery.delivery_id,
        "installation_id": _installation(event),
        "sender": event.sender.login if event.sender else None,
        "root": {k: root.get(k) for k in ("id", "body", "line", "path", "subject_type", "updated_at", "user")},
    }
    key = f"thread:{repo.lower()}#{number}:{root['id']}:{event.action}:{delivery.delivery_id or root.get('updated_at')}"
    return submit(delivery, NewJob(THREAD, key, repo, number, None, payload))


def _installation(event: _Event) -> int | None:
    return event.installation.id if event.installation else None


def comment_key(repo: str, pr: int, action: str | None, comment: CommentIn) -> str:
    """A comment job's identity is its content, not its delivery id: a captured signed delivery
    re-sent under new delivery ids finds the job it already made (the job table answers
    "duplicate") for as long as job rows are kept. Two real events of one comment always differ
    in action, ``updated_at`` or body."""
    content = json.dumps([action, comment.updated_at, comment.body], ensure_ascii=False)
    digest = hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"comment:{repo.lower()}#{pr}:{comment.id}:{action}:{digest}"
