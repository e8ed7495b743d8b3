"""GitLab deliveries (``POST /webhook/gitlab``), with no web framework in them: the secret token
check, the delivery id, strict validation of what the service reads, and the routes that turn a
Merge Request Hook, Note Hook or Emoji Hook into the same jobs GitHub's events make (with
``"forge": "gitlab"`` in the job, so the worker talks to GitLab).

* ``X-Gitlab-Token`` is the configured secret itself (not an HMAC): compared in constant time,
  before the body is parsed; when a signing token is configured (GitLab 19+), the
  ``webhook-signature`` HMAC over the id, timestamp and body is checked as well;
* the delivery id is ``Idempotency-Key`` (the same on GitLab's retries and on "Resend request"),
  else ``X-Gitlab-Event-UUID`` with ``X-Gitlab-Webhook-UUID``: a redelivery is answered, not queued;
* every event is answered 2xx when it is ignored: GitLab disables a hook that keeps failing, for
  good on 4xx;
* Merge Request Hook ``open``/``reopen`` and ``update`` WITH ``oldrev`` (new commits) queue a review
  of the head (``last_commit.id``); other updates (title, labels, draft toggles), ``approved``,
  ``close``, ``merge`` are ignored. Drafts are queued and the worker skips them unless the
  repository's ``.revbot.yml`` asks for them (``skip_drafts: false``), as on GitHub;
* Note Hook on a merge request: ``/revbot review`` and ``/revbot ignore <glob>`` become command jobs
  (the worker checks the author has at least Developer access); a DiffNote (a review comment or a
  reply in a thread) becomes a comment job, recorded for retraining, and feedback when it answers
  one of the bot's threads;
* Emoji Hook on a note of a merge request: a reaction job (feedback on the bot's comments).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from typing import Annotated

from pydantic import StringConstraints

from bot.formats import extract_fingerprints
from bot.secrets import scrub_text
from webhooks.events import (
    _COMMAND,
    COMMANDS,
    MAX_GLOB,
    BadDelivery,
    Delivery,
    Id,
    Name,
    Outcome,
    Router,
    Sha,
    Submit,
    Text,
    _Schema,
    header,
    parse_delivery,
    validate,
)
from webhooks.jobs import COMMAND, COMMENT, REACTION, REVIEW, NewJob, review_key
from webhooks.signature import SignatureError

TOKEN_HEADER = "X-Gitlab-Token"
SIGNATURE_HEADER = "webhook-signature"  # GitLab 19+, when the hook has a signing token
EVENT_HEADER = "X-Gitlab-Event"
EVENTS = {"Merge Request Hook": "merge_request", "Note Hook": "note", "Emoji Hook": "emoji", "Push Hook": "push"}
_EVENT = re.compile(r"[A-Za-z ]{1,64}")
_ID = re.compile(r"[\x21-\x7e]{1,200}")
ProjectPath = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+){1,20}$", max_length=512)]
Stamp = Annotated[str, StringConstraints(max_length=64)]  # GitLab writes "2022-01-17 15:47:39 UTC" as well as ISO


def verify_token(given: str | None, secret: str | None) -> None:
    """Raise SignatureError unless ``given`` is ``secret`` (constant-time, on bytes)."""
    if not secret:
        raise SignatureError("no GitLab webhook secret is configured (REVBOT_GITLAB_WEBHOOK_SECRET)")
    if not given:
        raise SignatureError(f"missing {TOKEN_HEADER} header")
    if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), secret.encode("utf-8")):
        raise SignatureError(f"{TOKEN_HEADER} does not match the configured secret")


def sign(body: bytes, signing_token: str, message_id: str, timestamp: int) -> str:
    """The ``webhook-signature`` value for ``body`` (GitLab 19+'s signing token, Standard Webhooks
    form): ``v1,`` + base64 HMAC-SHA256 of ``{webhook-id}.{webhook-timestamp}.{body}`` under the
    token's base64 key (after its ``whsec_`` prefix)."""
    key = base64.b64decode(signing_token.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_signature(
    headers: Mapping[str, str], body: bytes, signing_token: str, *, now: float | None = None, tolerance: float = 300.0
) -> None:
    """Raise SignatureError unless one ``v1,`` signature in ``webhook-signature`` signs this body,
    id and timestamp (at most ``tolerance`` seconds away from now: a replayed capture is refused)."""
    message_id = (header(headers, "webhook-id") or "").strip()
    stamp = (header(headers, "webhook-timestamp") or "").strip()
    given = (header(headers, SIGNATURE_HEADER) or "").strip()
    if not (message_id and stamp and given):
        raise SignatureError(f"missing {SIGNATURE_HEADER}, webhook-id or webhook-timestamp header")
    if not stamp.isdigit() or abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        raise SignatureError("webhook-timestamp is not within 5 minutes of now")
    try:
        expected = sign(body, signing_token, message_id, int(stamp)).encode()
    except (ValueError, binascii.Error):
        raise SignatureError("the configured signing token is not whsec_<base64>") from None
    if not any(hmac.compare_digest(part.encode(), expected) for part in given.split()):
        raise SignatureError(f"{SIGNATURE_HEADER} does not match the body")


def delivery_id(headers: Mapping[str, str]) -> str | None:
    """``Idempotency-Key``, else the event and webhook UUIDs together (None when GitLab sent neither)."""
    key = (header(headers, "Idempotency-Key") or "").strip()
    if not key:
        event = (header(headers, "X-Gitlab-Event-UUID") or "").strip()
        hook = (header(headers, "X-Gitlab-Webhook-UUID") or "").strip()
        key = f"{event}:{hook}" if event and hook else event
    if not key:
        return None
    if not _ID.fullmatch(key):
        raise BadDelivery("Idempotency-Key / X-Gitlab-Event-UUID must be 1-200 printable ASCII characters")
    return f"gitlab:{key}"


def parse_gitlab_delivery(headers: Mapping[str, str], body: bytes) -> Delivery:
    """The delivery in a (token-checked) request: ``merge_request``, ``note``, ``emoji`` or another
    event's lower-case name, the delivery id, the JSON payload (checked like GitHub's)."""
    name = (header(headers, EVENT_HEADER) or "").strip()
    if not name:
        raise BadDelivery(f"missing {EVENT_HEADER} header")
    if not _EVENT.fullmatch(name):
        raise BadDelivery(f"{EVENT_HEADER} must be 1-64 letters and spaces")
    event = EVENTS.get(name, "gitlab_" + name.lower().replace(" ", "_"))
    inner = parse_delivery({"X-GitHub-Event": event}, body)  # JSON, object, nesting depth
    return Delivery(event, delivery_id(headers), inner.payload)


# --------------------------------------------------------------------------- payload schema


class GLUser(_Schema):
    username: Name | None = None


class GLProject(_Schema):
    id: Id
    path_with_namespace: ProjectPath


class GLCommit(_Schema):
    id: Sha


class MRAttributes(_Schema):
    iid: Id
    action: Name | None = None
    state: Name | None = None
    oldrev: Sha | None = None
    last_commit: GLCommit
    draft: bool | None = None
    work_in_progress: bool | None = None
    target_branch: Name | None = None
    updated_at: Stamp | None = None


class MergeRequestHook(_Schema):
    project: GLProject
    object_attributes: MRAttributes
    user: GLUser | None = None


class GLMergeRequest(_Schema):
    iid: Id
    state: Name | None = None


class NoteAttributes(_Schema):
    id: Id
    note: Text
    noteable_type: Name
    type: Name | None = None
    system: bool | None = None
    discussion_id: Annotated[str, StringConstraints(max_length=200)] | None = None
    action: Name | None = None
    created_at: Stamp | None = None
    updated_at: Stamp | None = None


class NoteHook(_Schema):
    project: GLProject
    object_attributes: NoteAttributes
    user: GLUser
    merge_request: GLMergeRequest | None = None


class AwardAttributes(_Schema):
    id: Id
    name: Name
    awardable_type: Name
    awardable_id: Id
    action: Name | None = None


class EmojiHook(_Schema):
    project: GLProject
    object_attributes: AwardAttributes
    user: GLUser
    merge_request: GLMergeRequest | None = None


# --------------------------------------------------------------------------- routes


def build_gitlab_router(submit: Submit, *, own_logins: frozenset[str] = frozenset()) -> Router:
    """The GitLab routes; ``submit`` records the delivery (dedupe) and queues the job, if any."""
    router = Router()
    router.register("merge_request")(lambda delivery: merge_request(delivery, submit))
    router.register("note")(lambda delivery: note(delivery, submit, own_logins))
    router.register("emoji")(lambda delivery: emoji(delivery, submit))
    return router


def merge_request(delivery: Delivery, submit: Submit) -> Outcome:
    """open, reopen and update with ``oldrev`` (new commits): a review of the head; the rest ignored."""
    event = validate(MergeRequestHook, delivery)
    attrs, repo = event.object_attributes, event.project.path_with_namespace
    action = attrs.action or ""
    if action not in ("open", "reopen") and not (action == "update" and attrs.oldrev):
        submit(delivery, None)
        return Outcome(200, "ignored", f"merge request {action or 'event'} without new commits")
    if attrs.state not in (None, "opened"):
        submit(delivery, None)
        return Outcome(200, "skipped", f"{repo}!{attrs.iid} is {attrs.state}")
    head = attrs.last_commit.id
    payload = {
        "forge": "gitlab",
        "action": action,
        "delivery": delivery.delivery_id,
        "number": attrs.iid,
        "head_sha": head,
        "base_sha": None,
        "base_ref": attrs.target_branch,
        "draft": bool(attrs.draft or attrs.work_in_progress),
        "author": event.user.username if event.user else None,
        "oldrev": attrs.oldrev,
    }
    return submit(delivery, NewJob(REVIEW, review_key(repo, attrs.iid, head), repo, attrs.iid, head, payload))


def note(delivery: Delivery, submit: Submit, own_logins: frozenset[str]) -> Outcome:
    """A ``/revbot`` command, or a review comment (DiffNote) to record; the bot's own notes and
    notes elsewhere than on a merge request are ignored."""
    event = validate(NoteHook, delivery)
    attrs, repo = event.object_attributes, event.project.path_with_namespace
    if attrs.noteable_type != "MergeRequest" or event.merge_request is None or attrs.system:
        submit(delivery, None)
        return Outcome(200, "ignored", "not a comment on a merge request")
    if (event.user.username or "").lower() in own_logins or extract_fingerprints(attrs.note):
        submit(delivery, None)
        return Outcome(200, "own_comment", "the bot's own notes are not recorded as team reviews")
    number = event.merge_request.iid
    first = attrs.note.strip().split("\n", 1)[0].strip()
    match = _COMMAND.fullmatch(first)
    if match is not None:
        name, arg = (match.group(1) or "").lower(), (match.group(2) or "").strip()
        payload = {
            "forge": "gitlab",
            "action": attrs.action or "create",
            "delivery": delivery.delivery_id,
            "comment_id": attrs.id,
            "user": event.user.username,
            "command": name if name in COMMANDS else "unknown",
            "arg": arg[: MAX_GLOB + 1],
            "text": first[:300],
        }
        return submit(
            delivery, NewJob(COMMAND, f"command:{repo.lower()}!{number}:{attrs.id}", repo, number, None, payload)
        )
    if attrs.type != "DiffNote" or not attrs.discussion_id:
        submit(delivery, None)
        return Outcome(200, "ignored", "an overview note, not a review comment")
    payload = {
        "forge": "gitlab",
        "action": "edited" if attrs.action == "update" else "created",
        "delivery": delivery.delivery_id,
        "discussion_id": attrs.discussion_id,
        "comment": {"id": attrs.id, "body": scrub_text(attrs.note), "updated_at": attrs.updated_at},
    }
    key = f"comment:{repo.lower()}!{number}:{attrs.id}:{attrs.action}:{attrs.updated_at}"
    return submit(delivery, NewJob(COMMENT, key, repo, number, None, payload))


def emoji(delivery: Delivery, submit: Submit) -> Outcome:
    """An award on a merge request's note: a reaction job (the worker checks the note is the bot's)."""
    event = validate(EmojiHook, delivery)
    attrs, repo = event.object_attributes, event.project.path_with_namespace
    if attrs.awardable_type != "Note" or event.merge_request is None:
        submit(delivery, None)
        return Outcome(200, "ignored", "not an award on a merge request's note")
    number = event.merge_request.iid
    payload = {"forge": "gitlab", "delivery": delivery.delivery_id, "note_id": attrs.awardable_id}
    key = f"reaction:{repo.lower()}!{number}:{attrs.awardable_id}:{attrs.id}:{attrs.action or 'award'}"
    return submit(delivery, NewJob(REACTION, key, repo, number, None, payload))
