"""What every part of the GitHub simulator shares: GitHub's constants, the error and answer shapes,
the request context, and small helpers for ids, shas and times."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.errors import RevbotError

DOCS = "https://docs.github.com/rest"
REACTIONS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID {rid}."
)
DEFAULT_LOGIN = "revbot-sim"
PERMISSIONS = ("admin", "maintain", "write", "triage", "read", "none")
TRANSFER_FAULTS = ("truncated", "cutoff", "slow")


class SimulatorError(RevbotError):
    """A bad seed, fault or admin request; the message says which part is wrong."""


# --------------------------------------------------------------------------- small helpers


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str, what: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, AttributeError) as exc:
        raise HTTPError(422, f"Invalid value for {what}: {value!r} is not an ISO 8601 timestamp") from exc


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def fake_sha(*parts: Any) -> str:
    return hashlib.sha1("\x00".join(map(str, parts)).encode()).hexdigest()


def blob_sha(content: str) -> str:
    data = content.encode()
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def node_id(kind: str, ident: int) -> str:
    return base64.b64encode(f"0{len(kind)}:{kind}{ident}".encode()).decode()


class HTTPError(Exception):
    """An answer other than success, shaped like GitHub's error bodies."""

    def __init__(
        self, status: int, message: str, errors: list | None = None, headers: dict | None = None, doc: str = DOCS
    ):
        super().__init__(message)
        self.status, self.message, self.errors, self.headers, self.doc = status, message, errors, headers or {}, doc

    def body(self) -> dict:
        out: dict[str, Any] = {"message": self.message}
        if self.errors is not None:
            out["errors"] = self.errors
        out["documentation_url"] = self.doc
        out["status"] = str(self.status)
        return out


def not_found() -> HTTPError:
    return HTTPError(404, "Not Found")


def unprocessable(
    resource: str, field_name: str, message: str | None = None, code: str = "invalid", doc: str = DOCS
) -> HTTPError:
    """GitHub's 422 for one bad field."""
    error = {"resource": resource, "code": code, "field": field_name}
    if message:
        error["message"] = message
    return HTTPError(422, "Unprocessable Entity", [error], doc=doc)


@dataclass
class Answer:
    status: int
    body: Any = None  # JSON-able, or str for text media types
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"
    transfer: str | None = None  # a transfer fault: truncated | cutoff | slow
    delay: float = 0.0


@dataclass
class Context:
    """What a handler needs to know about one request."""

    method: str
    path: str
    query: dict[str, str]
    headers: Any
    body: Any
    api: str  # absolute API root for URLs in answers, e.g. http://127.0.0.1:8765 (+/api/v3)
    web: str  # root for html_url-style links
    identity: dict | None = None


def diff_status(github_status: str) -> str:
    """GitHub file statuses -> the diff model's (removed -> deleted, changed -> modified)."""
    return {"removed": "deleted", "changed": "modified", "unchanged": "modified"}.get(github_status, github_status)
