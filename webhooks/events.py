"""Deliveries and event routing, with no web framework in them (the Flask view only checks,
queues and answers; everything it decides is decided here and tested without HTTP).

``Router.register("pull_request", "opened", ...)`` maps (event, action) to a handler; a handler
gets the parsed ``Delivery`` and returns an ``Outcome`` (HTTP status + a metrics label). Events
and actions nobody registered are answered 202 "ignored".
"""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from bot.errors import RevbotError
from bot.formats import extract_fingerprints
from webhooks.jobs import COMMENT, REVIEW, NewJob, review_key

log = logging.getLogger(__name__)

REVIEW_ACTIONS = ("opened", "reopened", "ready_for_review", "synchronize")
COMMENT_ACTIONS = ("created", "edited", "deleted")


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

    @property
    def installation_id(self) -> int | None:
        inst = self.payload.get("installation")
        if isinstance(inst, Mapping) and isinstance(inst.get("id"), int):
            return int(inst["id"])
        return None

    @property
    def repo(self) -> str | None:
        repo = self.payload.get("repository")
        name = repo.get("full_name") if isinstance(repo, Mapping) else None
        return name if isinstance(name, str) and name else None


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
    delivery_id = (header(headers, "X-GitHub-Delivery") or "").strip() or None
    if delivery_id is not None and len(delivery_id) > 200:
        raise BadDelivery("X-GitHub-Delivery header is too long")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise BadDelivery(f"the body is not valid JSON{where}") from None
    if not isinstance(payload, dict):
        raise BadDelivery("the body must be a JSON object")
    return Delivery(event, delivery_id, payload)


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


def _require(mapping: Any, *path: str) -> Any:
    node = mapping
    for key in path:
        if not isinstance(node, Mapping) or node.get(key) is None:
            raise BadDelivery(f"payload has no {'.'.join(path)}")
        node = node[key]
    return node


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

    @router.register("ping")
    def ping(delivery: Delivery) -> Outcome:
        return Outcome(200, "pong", str(delivery.payload.get("zen") or ""))

    @router.register("installation")
    @router.register("installation_repositories")
    def installation(delivery: Delivery) -> Outcome:
        inst = delivery.installation_id
        log.info("GitHub App installation %s: %s", inst, delivery.action)
        return Outcome(200, "accepted", f"installation {inst} {delivery.action or ''}".strip())

    @router.register("pull_request", *REVIEW_ACTIONS)
    def pull_request(delivery: Delivery) -> Outcome:
        p = delivery.payload
        repo = _require(p, "repository", "full_name")
        pr = _require(p, "pull_request")
        number = _require(p, "pull_request", "number")
        head_sha = _require(p, "pull_request", "head", "sha")
        if not isinstance(number, int) or not isinstance(head_sha, str):
            raise BadDelivery("pull_request.number must be a number and head.sha a string")
        if pr.get("state") not in (None, "open"):
            return Outcome(200, "skipped", f"{repo}#{number} is {pr.get('state')}")
        base = pr.get("base") if isinstance(pr.get("base"), Mapping) else {}
        payload = {
            "action": delivery.action, "delivery": delivery.delivery_id, "installation_id": delivery.installation_id,
            "number": number, "head_sha": head_sha, "base_sha": base.get("sha"), "base_ref": base.get("ref"),
            "draft": bool(pr.get("draft")), "author": ((pr.get("user") or {}).get("login")),
            "updated_at": pr.get("updated_at"),
        }
        job = NewJob(REVIEW, review_key(repo, number, head_sha), repo, number, head_sha, payload)
        return submit(delivery, job)

    @router.register("pull_request_review_comment", *COMMENT_ACTIONS)
    def review_comment(delivery: Delivery) -> Outcome:
        p = delivery.payload
        repo = _require(p, "repository", "full_name")
        comment = _require(p, "comment")
        _require(p, "comment", "id")
        pr = p.get("pull_request") if isinstance(p.get("pull_request"), Mapping) else {}
        number = pr.get("number")
        if not isinstance(number, int):
            raise BadDelivery("payload has no pull_request.number")
        if is_own_comment(comment, own_logins):
            submit(delivery, None)  # remember the delivery id all the same
            return Outcome(200, "own_comment", "comments by bots are not recorded as team reviews")
        payload = {
            "action": delivery.action, "delivery": delivery.delivery_id, "installation_id": delivery.installation_id,
            "comment": dict(comment), "pr_author": ((pr.get("user") or {}).get("login")),
        }
        key = f"comment:{delivery.delivery_id or uuid.uuid4().hex}"
        return submit(delivery, NewJob(COMMENT, key, repo, number, None, payload))

    return router
