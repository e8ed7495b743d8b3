"""A GitHub REST v3 simulator on loopback, so tests, benchmarks and the demo talk real HTTP to
something that answers like GitHub: the same field names and shapes, pagination ``Link``
headers, rate-limit headers, 422 for a review comment outside the diff, 403 secondary limits.

Run it with ``revbot dev github-sim`` (see :data:`github_sim_command`) or from Python::

    with GitHubSimulator(seed) as sim:          # port 0 -> a free port
        client = GitHubClient(token="t", api_url=sim.url)

Endpoints (GitHub's own paths; ``/api/v3`` may prefix them, as on GitHub Enterprise):
``GET /repos/{o}/{r}``, ``GET .../pulls`` (state, sort, direction, base, paging),
``GET .../pulls/{n}`` (JSON, or the ``.diff`` with ``Accept: application/vnd.github.v3.diff``),
``GET .../pulls/{n}/files``, ``GET .../pulls/comments`` (sort, direction, since),
``GET .../pulls/comments/{id}``, ``GET|POST .../pulls/{n}/comments`` (``in_reply_to``),
``POST .../pulls/{n}/comments/{id}/replies``, ``GET|POST .../pulls/{n}/reviews``,
``GET .../pulls/{n}/reviews/{id}``, ``GET|POST .../issues/{n}/comments``,
``GET|POST .../pulls/comments/{id}/reactions``, ``GET|POST .../issues/comments/{id}/reactions``,
``GET .../compare/{base}...{head}`` (two heads of a pull request, or its base and a head),
``GET .../collaborators/{user}/permission``, ``GET .../contents/{path}?ref=``, ``GET /rate_limit``,
``GET /user``, ``GET /app``, ``POST /app/installations/{id}/access_tokens``, and ``POST /graphql``
(review threads and resolving them: ``revbot.dev.github_sim_graphql``).

Seed description (JSON; every key optional except where noted)::

    {
      "tokens": ["t1", {"token": "t2", "login": "alice", "type": "User", "permission": "read",
                        "graphql": true}],
      "rate_limit": {"limit": 5000, "window": 3600},
      "apps": [{"id": 42, "slug": "revbot", "installations": [7],
                "public_key": "-----BEGIN PUBLIC KEY-----...", "token_ttl": 3600}],
      "repos": [{
        "owner": "acme", "name": "widgets",                       # required
        "owner_type": "Organization", "default_branch": "main", "private": false,
        "collaborators": {"alice": "write", "bob": "read"},       # the owner is admin
        "files": {"main": {".revbot.yml": "max_comments: 3\\n"}, "feature": {"a.py": "..."}},
        "pulls": [{
          "number": 1,                                            # default: next free number
          "title": "Fix", "body": "", "user": "alice",            # user: login or {"login", "type"}
          "state": "open", "draft": false, "merged": false,
          "base": "main", "head": "feature", "head_sha": "...", "base_sha": "...",
          "created_at": "2024-01-02T03:04:05Z", "updated_at": "...",
          "files": [{"filename": "a.py", "status": "modified", "patch": "@@ -1,2 +1,3 @@\\n...",
                     "previous_filename": "old.py", "binary": false}],
          "comments": [{"path": "a.py", "line": 3, "side": "RIGHT", "body": "nit",
                        "user": {"login": "bob", "type": "User"}, "start_line": null,
                        "in_reply_to_id": null, "created_at": "...", "id": 123,
                        "reactions": {"+1": 2, "-1": 0}}],
          "issue_comments": [{"body": "LGTM", "user": "carol"}],
          "reviews": [{"user": "bob", "state": "APPROVED", "body": ""}]
        }]
      }]
    }

A review whose inline comments include one off the diff gets 422 and creates nothing, like
GitHub; each error item names its comment so a client can drop it: ``{"resource", "code",
"field": "comments[i].line", "message": "Pull request review thread line must be part of the
diff", "index": i, "path", "line", "side"}``.

Tokens: ``Authorization: token X`` or ``Bearer X``. With no tokens configured any token (or none)
is accepted; otherwise an unknown token gets 401 ``Bad credentials``. A ``"permission": "read"``
token gets 403 on writes. Tokens are kept only as SHA-256 digests, so a state file holds none.
Files of a PR's head branch fall back to its base branch (``files`` of the base), so
``.revbot.yml`` read from the base is what the base holds, whatever the PR changes.

Admin API (not GitHub's, no auth): ``POST /_sim/seed`` (merge a description),
``POST /_sim/pulls`` (open a PR, or push to one when its ``number`` exists; answers the PR JSON
and a ready ``pull_request`` webhook payload; ``"force": true`` for a force-push), ``POST
/_sim/comments`` (human review comments: a ``comments`` list or a ``count`` to generate), ``POST
/_sim/issue-comments`` (a conversation comment and its ``issue_comment`` payload), ``POST
/_sim/reactions`` (someone reacts to a comment), ``POST /_sim/threads`` (someone resolves a review
thread; answers the ``pull_request_review_thread`` payload), ``POST /_sim/faults`` / ``DELETE /_sim/faults``,
``POST /_sim/rate-limit``, ``GET /_sim/stats``, ``POST /_sim/reset-stats``, ``GET /_sim/state``.

Faults: the next ``count`` requests matching optional ``method``/``path`` regexes answer
``error`` (a 5xx, default 500), ``secondary`` (403, GitHub's secondary-limit message, optional
``Retry-After``), ``primary`` (403, ``X-RateLimit-Remaining: 0``, reset ``reset_in`` s ahead,
"API rate limit exceeded for ..."), ``429`` (optional ``Retry-After``), ``disconnect`` (the
connection closes with no answer), or faults in the transfer of a real answer (the request is
served, so a write is applied): ``truncated`` (a 200 whose JSON body is cut in half, with a
Content-Length that matches what is sent, as a broken proxy would), ``cutoff`` (the full
Content-Length is announced but the connection closes halfway through the body) and ``slow``
(the answer is held back ``delay`` seconds after the request took effect).

Deliberate simplifications: one primary rate-limit budget for all tokens; repositories are never
forks (no ``parent``/``source``); GraphQL knows only review threads (and has no budget of its
own); ``PENDING`` reviews hide their comments from lists. A push keeps each head's patches, so the
compare API and moved or outdated comments follow from them (``revbot.dev.github_sim_heads``).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import click

from adapters.files import atomic_write_json
from bot.diff import LEFT, RIGHT, Diff, FileDiff, parse_patch
from bot.errors import DataError, DiffError, RevbotError
from revbot.dev.github_sim_heads import compare_patch, moved_line

DOCS = "https://docs.github.com/rest"
REACTIONS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID {rid}."
)
DEFAULT_LOGIN = "revbot-sim"
PERMISSIONS = ("admin", "maintain", "write", "triage", "read", "none")
_TRANSFER_FAULTS = ("truncated", "cutoff", "slow")


class SimulatorError(RevbotError):
    """A bad seed, fault or admin request; the message says which part is wrong."""


# --------------------------------------------------------------------------- small helpers


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str, what: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, AttributeError) as exc:
        raise _HTTPError(422, f"Invalid value for {what}: {value!r} is not an ISO 8601 timestamp") from exc


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _fake_sha(*parts: Any) -> str:
    return hashlib.sha1("\x00".join(map(str, parts)).encode()).hexdigest()


def _blob_sha(content: str) -> str:
    data = content.encode()
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def _node_id(kind: str, ident: int) -> str:
    return base64.b64encode(f"0{len(kind)}:{kind}{ident}".encode()).decode()


class _HTTPError(Exception):
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


def _not_found() -> _HTTPError:
    return _HTTPError(404, "Not Found")


def _unprocessable(
    resource: str, field_name: str, message: str | None = None, code: str = "invalid", doc: str = DOCS
) -> _HTTPError:
    """GitHub's 422 for one bad field."""
    error = {"resource": resource, "code": code, "field": field_name}
    if message:
        error["message"] = message
    return _HTTPError(422, "Unprocessable Entity", [error], doc=doc)


@dataclass
class _Answer:
    status: int
    body: Any = None  # JSON-able, or str for text media types
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"
    transfer: str | None = None  # a transfer fault: truncated | cutoff | slow
    delay: float = 0.0


@dataclass
class _Context:
    """What a handler needs to know about one request."""

    method: str
    path: str
    query: dict[str, str]
    headers: Any
    body: Any
    api: str  # absolute API root for URLs in answers, e.g. http://127.0.0.1:8765 (+/api/v3)
    web: str  # root for html_url-style links
    identity: dict | None = None


# --------------------------------------------------------------------------- the simulator


class GitHubSimulator:
    """The simulator: in-memory state behind a thread-safe lock, served by a ThreadingHTTPServer.

    ``state_path`` persists the state as JSON (written atomically after every mutation) and is
    loaded on start when it exists, so a restarted simulator keeps what was posted to it.
    """

    def __init__(
        self,
        seed: dict | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state_path: str | os.PathLike | None = None,
        tokens: list[str] | None = None,
    ):
        self.host, self.port = host, port
        self.state_path = os.fspath(state_path) if state_path else None
        self._lock = threading.RLock()
        self._state = self._empty_state()
        self._faults: list[dict] = []
        self._stats = self._empty_stats()
        self._diff_cache: dict[tuple, dict[str, FileDiff]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        if self.state_path and os.path.exists(self.state_path):
            self._load_state(self.state_path)
        if seed:
            self.seed(seed)
        if tokens:
            self.seed({"tokens": list(tokens)})

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise SimulatorError("the GitHub simulator is not started; call start() first")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> GitHubSimulator:
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"sim": self})
        try:
            self._server = _Server((self.host, self.port), handler)
        except OSError as exc:
            raise SimulatorError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="github-sim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GitHubSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server else "stopped"
        return f"GitHubSimulator({where}, repos={len(self._state['repos'])})"

    # ----------------------------------------------------------------- state

    @staticmethod
    def _empty_state() -> dict:
        return {
            "next_id": 1000,
            "tokens": {},  # sha256(token) -> {"login", "type", "permission", "expires_at"?}
            "apps": {},  # str(app id) -> {"id", "slug", "installations", "public_key", "token_ttl"}
            "rate": {"limit": 5000, "window": 3600, "used": 0, "reset": 0},
            "users": {},  # login -> {"id", "type"}
            "repos": {},  # "owner/name" -> repo record
        }

    @staticmethod
    def _empty_stats() -> dict:
        return {"total": 0, "by_route": {}, "by_status": {}, "faults_served": 0, "tokens_issued": 0}

    @property
    def state(self) -> dict:
        """A deep copy of the whole state (what a state file holds)."""
        with self._lock:
            return copy.deepcopy(self._state)

    def _load_state(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = json.load(fh)
        except json.JSONDecodeError as exc:
            raise DataError(f"state file is not valid JSON: {exc.msg}", path, exc.lineno) from exc
        except OSError as exc:
            raise DataError(f"cannot read state file: {exc.strerror}", path) from exc
        if not isinstance(loaded, dict) or "repos" not in loaded:
            raise DataError("not a GitHub simulator state file (no 'repos')", path)
        base = self._empty_state()
        base.update(loaded)
        self._state = base

    def _save(self) -> None:
        """Write the state atomically (the project's one atomic writer) so a crash never leaves half a file."""
        if self.state_path:
            atomic_write_json(self.state_path, self._state, indent=None, sort_keys=False)

    def _new_id(self) -> int:
        self._state["next_id"] += 1
        return self._state["next_id"]

    def _user(self, spec: Any, default_type: str = "User") -> dict:
        """Register a user given as a login or {"login", "type"}; returns {"login", "type"}."""
        if isinstance(spec, dict):
            login, kind = spec.get("login"), spec.get("type") or default_type
        else:
            login, kind = spec, default_type
        if not isinstance(login, str) or not login:
            raise SimulatorError(f"a user must be a login or an object with 'login', got {spec!r}")
        users = self._state["users"]
        if login not in users:
            users[login] = {"id": self._new_id(), "type": kind}
        elif isinstance(spec, dict) and spec.get("type"):
            users[login]["type"] = spec["type"]
        return {"login": login, "type": users[login]["type"]}

    def _repo(self, full_name: str) -> dict:
        repo = self._state["repos"].get(full_name)
        if repo is None:
            raise _not_found()
        return repo

    def _pull(self, repo: dict, number: Any) -> dict:
        pull = repo["pulls"].get(str(number))
        if pull is None:
            raise _not_found()
        return pull

    # ----------------------------------------------------------------- seeding

    def seed(self, description: dict) -> None:
        """Load or merge a seed description (schema in the module docstring)."""
        if not isinstance(description, dict):
            raise SimulatorError("a seed description must be a JSON object")
        with self._lock:
            backup = copy.deepcopy(self._state)
            try:
                self._merge_seed(description)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                self._state = backup
                raise SimulatorError(f"bad seed description: {type(exc).__name__}: {exc}") from exc
            except SimulatorError:
                self._state = backup  # all or nothing
                raise
            finally:
                self._diff_cache.clear()
            self._save()

    def _merge_seed(self, description: dict) -> None:
        for i, tok in enumerate(description.get("tokens") or []):
            self._seed_token(tok, f"tokens[{i}]")
        if "rate_limit" in description:
            rate = description["rate_limit"] or {}
            self._state["rate"].update({k: int(rate[k]) for k in ("limit", "window") if k in rate}, used=0, reset=0)
        for i, app in enumerate(description.get("apps") or []):
            if not isinstance(app, dict) or "id" not in app:
                raise SimulatorError(f"apps[{i}]: an app needs an 'id'")
            self._state["apps"][str(app["id"])] = {
                "id": int(app["id"]),
                "slug": app.get("slug") or f"app-{app['id']}",
                "installations": [int(x) for x in app.get("installations") or []],
                "public_key": app.get("public_key"),
                "token_ttl": int(app.get("token_ttl", 3600)),
            }
        for i, repo in enumerate(description.get("repos") or []):
            self._seed_repo(repo, f"repos[{i}]")

    def _seed_token(self, tok: Any, where: str) -> None:
        if isinstance(tok, str):
            tok = {"token": tok}
        if not isinstance(tok, dict) or not isinstance(tok.get("token"), str) or not tok["token"]:
            raise SimulatorError(f"{where}: a token is a string or an object with a 'token' string")
        user = self._user({"login": tok.get("login") or DEFAULT_LOGIN, "type": tok.get("type") or "User"})
        self._state["tokens"][_digest(tok["token"])] = {
            "login": user["login"],
            "type": user["type"],
            "permission": tok.get("permission", "write"),
            "graphql": tok.get("graphql", True) if tok.get("graphql") == "read" else bool(tok.get("graphql", True)),
        }

    def _seed_repo(self, spec: Any, where: str) -> None:
        if not isinstance(spec, dict) or not spec.get("owner") or not spec.get("name"):
            raise SimulatorError(f"{where}: a repo needs 'owner' and 'name'")
        full = f"{spec['owner']}/{spec['name']}"
        repo = self._state["repos"].get(full)
        if repo is None:
            owner = self._user({"login": spec["owner"], "type": spec.get("owner_type", "User")})
            repo = {
                "id": self._new_id(),
                "owner": owner["login"],
                "name": spec["name"],
                "default_branch": spec.get("default_branch", "main"),
                "private": bool(spec.get("private", False)),
                "description": spec.get("description"),
                "created_at": spec.get("created_at") or _iso(_now()),
                "files": {},
                "pulls": {},
                "review_comments": {},
                "reviews": {},
                "issue_comments": {},
                "collaborators": {},
            }
            self._state["repos"][full] = repo
        else:
            for key in ("default_branch", "private", "description"):
                if key in spec:
                    repo[key] = spec[key]
        for login, permission in (spec.get("collaborators") or {}).items():
            if permission not in PERMISSIONS:
                raise SimulatorError(
                    f"{where}.collaborators.{login}: permission must be one of {', '.join(PERMISSIONS)}"
                )
            self._user(login)
            repo.setdefault("collaborators", {})[login] = permission
        for branch, files in (spec.get("files") or {}).items():
            if not isinstance(files, dict):
                raise SimulatorError(f"{where}.files.{branch}: expected an object of path -> content")
            repo["files"].setdefault(branch, {}).update({str(k): str(v) for k, v in files.items()})
        for j, pull in enumerate(spec.get("pulls") or []):
            self._seed_pull(repo, pull, f"{where}.pulls[{j}]")

    def _seed_pull(self, repo: dict, spec: Any, where: str) -> dict:
        if not isinstance(spec, dict):
            raise SimulatorError(f"{where}: a pull request must be an object")
        number = spec.get("number") or (max((int(n) for n in repo["pulls"]), default=0) + 1)
        full = f"{repo['owner']}/{repo['name']}"
        created = spec.get("created_at") or _iso(_now())
        state = spec.get("state", "open")
        if state not in ("open", "closed"):
            raise SimulatorError(f"{where}: state must be 'open' or 'closed', got {state!r}")
        merged = bool(spec.get("merged", False))
        closed_at = spec.get("closed_at") or (spec.get("updated_at") or created if state == "closed" else None)
        pull = {
            "number": int(number),
            "id": self._new_id(),
            "title": spec.get("title", f"Pull request {number}"),
            "body": spec.get("body", ""),
            "user": self._user(spec.get("user") or "octocat"),
            "state": state,
            "draft": bool(spec.get("draft", False)),
            "locked": False,
            "merged": merged,
            "base": spec.get("base") or repo["default_branch"],
            "head": spec.get("head") or f"pr-{number}",
            "head_sha": spec.get("head_sha") or _fake_sha(full, number, "head", created),
            "base_sha": spec.get("base_sha") or _fake_sha(full, number, "base", created),
            "created_at": created,
            "updated_at": spec.get("updated_at") or created,
            "closed_at": closed_at,
            "merged_at": spec.get("merged_at") or (closed_at if merged else None),
            "files": [],
            "shas": [],
        }
        pull["shas"].append(pull["head_sha"])
        pull["files"] = self._check_files(spec.get("files") or [], f"{where}.files", full, number)
        pull["snapshots"] = {pull["head_sha"]: copy.deepcopy(pull["files"])}
        repo["pulls"][str(pull["number"])] = pull
        for k, comment in enumerate(spec.get("comments") or []):
            self._add_review_comment(repo, pull, comment, f"{where}.comments[{k}]")
        for k, comment in enumerate(spec.get("issue_comments") or []):
            if not isinstance(comment, dict) or "body" not in comment:
                raise SimulatorError(f"{where}.issue_comments[{k}]: needs a 'body'")
            self._add_issue_comment(
                repo, pull, comment.get("user") or "octocat", comment["body"], comment.get("created_at")
            )
        for k, review in enumerate(spec.get("reviews") or []):
            if not isinstance(review, dict):
                raise SimulatorError(f"{where}.reviews[{k}]: a review must be an object")
            self._add_review(
                repo,
                pull,
                self._user(review.get("user") or "octocat"),
                review.get("body", ""),
                review.get("state", "COMMENTED"),
                review.get("commit_id") or pull["head_sha"],
                review.get("submitted_at"),
                review.get("id"),
            )
        return pull

    def _check_files(self, files: Any, where: str, full: str, number: Any) -> list[dict]:
        if not isinstance(files, list):
            raise SimulatorError(f"{where}: expected a list of files")
        out = []
        for k, f in enumerate(files):
            if not isinstance(f, dict) or not f.get("filename"):
                raise SimulatorError(f"{where}[{k}]: a file needs a 'filename'")
            status = f.get("status", "modified")
            entry = {
                "filename": f["filename"],
                "status": status,
                "patch": f.get("patch"),
                "previous_filename": f.get("previous_filename"),
                "binary": bool(f.get("binary", False)),
            }
            try:  # refuse a broken patch now, not on the first request that needs it
                parse_patch(
                    entry["patch"],
                    entry["filename"],
                    entry["previous_filename"],
                    _diff_status(status),
                    source=f"{full}#{number} {entry['filename']}",
                )
            except DiffError as exc:
                raise SimulatorError(f"{where}[{k}]: bad patch: {exc}") from exc
            out.append(entry)
        return out

    # ----------------------------------------------------------------- mutations used by seed, admin and API

    def _file_diffs(self, full: str, pull: dict) -> dict[str, FileDiff]:
        key = (full, pull["number"], pull["head_sha"], len(pull["files"]))
        cached = self._diff_cache.get(key)
        if cached is None:
            cached = {}
            for f in pull["files"]:
                fd = parse_patch(
                    f["patch"],
                    f["filename"],
                    f["previous_filename"],
                    _diff_status(f["status"]),
                    source=f"{full}#{pull['number']} {f['filename']}",
                )
                fd.is_binary = f["binary"]
                cached[f["filename"]] = fd
            self._diff_cache[key] = cached
        return cached

    def _anchor(self, full: str, pull: dict, path: str, line: int | None, side: str) -> tuple[str, int | None]:
        """GitHub's diff_hunk (hunk header down to the commented line) and diff position, or ("", None)."""
        fd = self._file_diffs(full, pull).get(path)
        if fd is None or line is None:
            return "", None
        position = 0
        for h_index, hunk in enumerate(fd.hunks):
            if h_index:
                position += 1  # later hunk headers count as diff lines
            for l_index, ln in enumerate(hunk.lines):
                position += 1
                hit = (side == RIGHT and ln.kind in "+ " and ln.new_no == line) or (
                    side == LEFT and ln.kind in "- " and ln.old_no == line
                )
                if hit:
                    return "\n".join([hunk.header, *(x.render() for x in hunk.lines[: l_index + 1])]), position
                if ln.no_newline:
                    position += 1
        return "", None

    def _position_to_line(self, full: str, pull: dict, path: str, position: int) -> tuple[int, str] | None:
        fd = self._file_diffs(full, pull).get(path)
        if fd is None:
            return None
        count = 0
        for h_index, hunk in enumerate(fd.hunks):
            if h_index:
                count += 1
            for ln in hunk.lines:
                count += 1
                if count == position:
                    return (ln.old_no, LEFT) if ln.kind == "-" else (ln.new_no, RIGHT)  # type: ignore[return-value]
                if ln.no_newline:
                    count += 1
        return None

    def _add_review(
        self,
        repo: dict,
        pull: dict,
        user: dict,
        body: str,
        state: str,
        commit_id: str,
        submitted_at: str | None = None,
        review_id: int | None = None,
    ) -> dict:
        rid = int(review_id) if review_id else self._new_id()
        self._state["next_id"] = max(self._state["next_id"], rid)
        review = {
            "id": rid,
            "pull": pull["number"],
            "user": user,
            "body": body or "",
            "state": state,
            "commit_id": commit_id,
            "submitted_at": None if state == "PENDING" else (submitted_at or _iso(_now())),
        }
        repo["reviews"][str(rid)] = review
        return review

    def _add_review_comment(
        self, repo: dict, pull: dict, spec: dict, where: str, review_id: int | None = None, identity: dict | None = None
    ) -> dict:
        """Store a review comment as given (seeds may hold lines outside the diff, as real data does)."""
        if not isinstance(spec, dict) or "body" not in spec:
            raise SimulatorError(f"{where}: a review comment needs a 'body'")
        full = f"{repo['owner']}/{repo['name']}"
        user = identity or self._user(spec.get("user") or "octocat")
        parent = None
        if spec.get("in_reply_to_id") is not None:
            parent = repo["review_comments"].get(str(spec["in_reply_to_id"]))
            if parent is None:
                raise SimulatorError(f"{where}: in_reply_to_id {spec['in_reply_to_id']} is not a comment of {full}")
        path = parent["path"] if parent else spec.get("path")
        if not path:
            raise SimulatorError(f"{where}: a review comment needs a 'path'")
        side = parent["side"] if parent else (spec.get("side") or RIGHT)
        line = parent["line"] if parent else spec.get("line")
        start_line = parent["start_line"] if parent else spec.get("start_line")
        diff_hunk, position = self._anchor(full, pull, path, line, side)
        created = spec.get("created_at") or _iso(_now())
        cid = int(spec["id"]) if spec.get("id") else self._new_id()
        self._state["next_id"] = max(self._state["next_id"], cid)
        if review_id is None:
            review_id = spec.get("pull_request_review_id")
            if review_id is None or str(review_id) not in repo["reviews"]:
                review_id = self._add_review(
                    repo, pull, user, "", "COMMENTED", spec.get("commit_id") or pull["head_sha"], created, review_id
                )["id"]
        comment = {
            "id": cid,
            "pull": pull["number"],
            "review_id": int(review_id),
            "path": path,
            "diff_hunk": spec.get("diff_hunk") or (parent["diff_hunk"] if parent else diff_hunk),
            "position": position,
            "line": line,
            "side": side,
            "start_line": start_line,
            "start_side": (spec.get("start_side") or side) if start_line is not None else None,
            "original_line": spec.get("original_line", line),
            "original_start_line": spec.get("original_start_line", start_line),
            "commit_id": spec.get("commit_id") or pull["head_sha"],
            "original_commit_id": spec.get("original_commit_id") or spec.get("commit_id") or pull["head_sha"],
            "user": user,
            "body": spec["body"],
            "created_at": created,
            "updated_at": spec.get("updated_at") or created,
            "in_reply_to_id": parent["id"] if parent else None,
            "subject_type": spec.get("subject_type") or ("file" if line is None else "line"),
            "author_association": spec.get("author_association"),
            "reactions": [],
        }
        for content, n in (spec.get("reactions") or {}).items():
            if content in REACTIONS:
                for k in range(int(n)):
                    comment["reactions"].append(
                        {
                            "id": self._new_id(),
                            "content": content,
                            "created_at": created,
                            "user": self._user(f"reactor-{k + 1}"),
                        }
                    )
        repo["review_comments"][str(cid)] = comment
        return comment

    def _add_issue_comment(self, repo: dict, pull: dict, user: Any, body: str, created: str | None = None) -> dict:
        created = created or _iso(_now())
        cid = self._new_id()
        comment = {
            "id": cid,
            "issue": pull["number"],
            "user": self._user(user),
            "body": body,
            "created_at": created,
            "updated_at": created,
            "reactions": [],
        }
        repo["issue_comments"][str(cid)] = comment
        return comment

    def _move_comments(self, repo: dict, pull: dict, old_diffs: dict[str, FileDiff]) -> None:
        """After a push: comments on lines the push left alone follow them to their new number;
        the others become outdated (no ``line``/``position``; ``original_*`` and ``diff_hunk`` stay)."""
        full = f"{repo['owner']}/{repo['name']}"
        new_diffs = self._file_diffs(full, pull)
        changes: dict[str, FileDiff | None] = {}
        for c in repo["review_comments"].values():
            if c["pull"] != pull["number"] or c["line"] is None or c["in_reply_to_id"] is not None:
                continue
            path = c["path"]
            if path not in changes:
                patch = compare_patch(old_diffs.get(path), new_diffs.get(path))
                changes[path] = parse_patch(patch, path) if patch else None
            line = moved_line(changes[path], c["line"], c["start_line"]) if c["side"] == RIGHT else c["line"]
            fd = new_diffs.get(path)
            if line is None or fd is None or not fd.is_commentable(line, c["side"]):
                c.update(line=None, start_line=None, position=None)
            else:
                shift = line - c["line"]
                _, position = self._anchor(full, pull, path, line, c["side"])
                c.update(
                    line=line,
                    position=position,
                    commit_id=pull["head_sha"],
                    start_line=c["start_line"] + shift if c["start_line"] is not None else None,
                )
            for reply in repo["review_comments"].values():
                if reply["in_reply_to_id"] == c["id"]:
                    reply.update(line=c["line"], start_line=c["start_line"], position=c["position"])

    def _compare_files(self, full: str, pull: dict, old_sha: str, new_sha: str) -> list[dict]:
        """The files that differ between two heads of ``pull`` (each a snapshot of its patches)."""
        snapshots = pull.get("snapshots") or {}

        def diffs(sha: str) -> dict[str, FileDiff]:
            return {
                f["filename"]: parse_patch(
                    f["patch"],
                    f["filename"],
                    f["previous_filename"],
                    _diff_status(f["status"]),
                    source=f"{full} {sha[:12]} {f['filename']}",
                )
                for f in snapshots[sha]
                if f["patch"] is not None
            }

        old, new = diffs(old_sha), diffs(new_sha)
        out = []
        for path in sorted(set(old) | set(new)):
            patch = compare_patch(old.get(path), new.get(path))
            if not patch:
                continue
            if path not in new and old[path].status == "added":
                status = "removed"
            elif path not in old and new[path].status == "added":
                status = "added"
            else:
                status = "modified"
            fd = parse_patch(patch, path, status=_diff_status(status))
            out.append(
                {
                    "filename": path,
                    "status": status,
                    "patch": patch,
                    "additions": fd.added,
                    "deletions": fd.removed,
                    "changes": fd.added + fd.removed,
                }
            )
        return out

    # ----------------------------------------------------------------- Python admin API

    def add_pull(
        self,
        repo: str,
        *,
        files: list[dict],
        number: int | None = None,
        title: str | None = None,
        body: str = "",
        user: Any = "octocat",
        head: str | None = None,
        base: str | None = None,
        head_sha: str | None = None,
        draft: bool = False,
        head_files: dict[str, str] | None = None,
        api_url: str | None = None,
        force: bool = False,
    ) -> dict:
        """Open a PR (or push new files to PR ``number`` if it exists, a ``synchronize``).

        ``files`` is the PR's whole diff against its base after the push, as GitHub lists it. A push
        moves the review comments whose lines it did not touch, and makes the others outdated
        (``line``/``position`` null), as GitHub does. ``force=True`` is a force-push that rewrote
        history: the earlier heads are no longer ancestors, so comparing with them answers 404.

        Returns ``{"pull": PR JSON, "webhook": pull_request payload}`` (payload ready to sign and POST).
        """
        with self._lock:
            record = self._state["repos"].get(repo)
            if record is None:
                raise SimulatorError(f"unknown repository {repo!r}; seed it first")
            api = api_url or (self.url if self._server else "http://127.0.0.1")
            existing = record["pulls"].get(str(number)) if number is not None else None
            if existing is not None:
                before = existing["head_sha"]
                old_diffs = self._file_diffs(repo, existing)
                existing["files"] = self._check_files(files, "files", repo, number)
                existing["head_sha"] = head_sha or _fake_sha(repo, number, "push", len(existing["shas"]), _now())
                existing["shas"].append(existing["head_sha"])
                existing["updated_at"] = _iso(_now())
                snapshots = existing.setdefault("snapshots", {})
                if force:
                    snapshots.clear()
                snapshots[existing["head_sha"]] = copy.deepcopy(existing["files"])
                self._diff_cache.clear()
                self._move_comments(record, existing, old_diffs)
                pull, action, extra = existing, "synchronize", {"before": before, "after": existing["head_sha"]}
            else:
                spec = {
                    "number": number,
                    "title": title,
                    "body": body,
                    "user": user,
                    "head": head,
                    "base": base,
                    "head_sha": head_sha,
                    "draft": draft,
                    "files": files,
                }
                pull = self._seed_pull(record, {k: v for k, v in spec.items() if v is not None}, "pull")
                action, extra = "opened", {}
            if head_files:
                record["files"].setdefault(pull["head"], {}).update(head_files)
            self._diff_cache.clear()
            self._save()
            ctx = _Context("GET", "", {}, {}, None, api, api)
            pull_json = self._render_pull(ctx, record, pull)
            payload = {
                "action": action,
                "number": pull["number"],
                **extra,
                "pull_request": pull_json,
                "repository": self._render_repo(ctx, record),
                "sender": self._render_user(ctx, pull["user"]),
            }
            installation = self._first_installation()
            if installation is not None:
                payload["installation"] = {"id": installation, "node_id": _node_id("Installation", installation)}
            return {"pull": pull_json, "webhook": payload}

    def add_comments(
        self,
        repo: str,
        number: int,
        comments: list[dict] | None = None,
        *,
        count: int | None = None,
        user: Any = "reviewer",
        api_url: str | None = None,
    ) -> dict:
        """Add human review comments (given, or ``count`` generated on commentable lines).

        Returns ``{"comments": [comment JSON], "webhooks": [pull_request_review_comment payloads]}``.
        """
        with self._lock:
            record = self._state["repos"].get(repo)
            if record is None:
                raise SimulatorError(f"unknown repository {repo!r}; seed it first")
            pull = record["pulls"].get(str(number))
            if pull is None:
                raise SimulatorError(f"unknown pull request {repo}#{number}")
            specs = list(comments or [])
            if count:
                anchors = sorted(
                    (fd.path, ln, side)
                    for fd in self._file_diffs(repo, pull).values()
                    for (ln, side) in fd.anchors
                    if side == RIGHT
                )
                if not anchors:
                    raise SimulatorError(f"{repo}#{number} has no commentable line to generate comments on")
                for k in range(int(count)):
                    path, line, side = anchors[k % len(anchors)]
                    specs.append(
                        {
                            "path": path,
                            "line": line,
                            "side": side,
                            "user": user,
                            "body": f"Human review comment {k + 1} on {path}:{line}",
                        }
                    )
            made = [self._add_review_comment(record, pull, spec, f"comments[{k}]") for k, spec in enumerate(specs)]
            self._save()
            api = api_url or (self.url if self._server else "http://127.0.0.1")
            ctx = _Context("GET", "", {}, {}, None, api, api)
            rendered = [self._render_review_comment(ctx, record, c) for c in made]
            pull_json = self._render_pull(ctx, record, pull, listing=True)
            repo_json = self._render_repo(ctx, record)
            hooks = [
                {
                    "action": "created",
                    "comment": c,
                    "pull_request": pull_json,
                    "repository": repo_json,
                    "sender": c["user"],
                }
                for c in rendered
            ]
            return {"comments": rendered, "webhooks": hooks}

    def add_issue_comment(
        self, repo: str, number: int, body: str, *, user: Any = "octocat", api_url: str | None = None
    ) -> dict:
        """A conversation comment on PR ``number`` (e.g. ``/revbot review``), as ``user`` writes it.

        Returns ``{"comment": comment JSON, "webhook": issue_comment payload}``."""
        with self._lock:
            record, pull = self._admin_pull(repo, number)
            comment = self._add_issue_comment(record, pull, user, body)
            self._save()
            ctx = self._admin_ctx(api_url)
            rendered = self._render_issue_comment(ctx, record, comment)
            pull_json = self._render_pull(ctx, record, pull, listing=True)
            issue = {
                "number": pull["number"],
                "title": pull["title"],
                "state": pull["state"],
                "user": pull_json["user"],
                "body": pull["body"],
                "html_url": pull_json["html_url"],
                "pull_request": {
                    "url": pull_json["url"],
                    "html_url": pull_json["html_url"],
                    "diff_url": pull_json["diff_url"],
                    "patch_url": pull_json["patch_url"],
                },
            }
            hook = {
                "action": "created",
                "issue": issue,
                "comment": rendered,
                "repository": self._render_repo(ctx, record),
                "sender": rendered["user"],
            }
            self._with_installation(hook)
            return {"comment": rendered, "webhook": hook}

    def react(self, repo: str, comment_id: int, content: str, *, user: Any = "octocat", issue: bool = False) -> dict:
        """``user`` reacts to a review comment (or, ``issue=True``, a conversation comment)."""
        if content not in REACTIONS:
            raise SimulatorError(f"unknown reaction {content!r}; expected one of {', '.join(REACTIONS)}")
        with self._lock:
            record = self._state["repos"].get(repo)
            if record is None:
                raise SimulatorError(f"unknown repository {repo!r}; seed it first")
            comment = record["issue_comments" if issue else "review_comments"].get(str(comment_id))
            if comment is None:
                raise SimulatorError(f"no {'issue' if issue else 'review'} comment {comment_id} in {repo}")
            who = self._user(user)
            reaction = {"id": self._new_id(), "content": content, "user": who, "created_at": _iso(_now())}
            comment.setdefault("reactions", []).append(reaction)
            self._save()
            return dict(reaction)

    def resolve_thread(
        self, repo: str, comment_id: int, *, user: Any = "octocat", resolved: bool = True, api_url: str | None = None
    ) -> dict:
        """``user`` resolves (or unresolves) the thread of review comment ``comment_id`` in GitHub's
        UI. Returns ``{"webhook": pull_request_review_thread payload}``."""
        from revbot.dev.github_sim_graphql import thread_id

        with self._lock:
            record = self._state["repos"].get(repo)
            if record is None:
                raise SimulatorError(f"unknown repository {repo!r}; seed it first")
            root = record["review_comments"].get(str(comment_id))
            while root is not None and root["in_reply_to_id"] is not None:
                root = record["review_comments"].get(str(root["in_reply_to_id"]))
            if root is None:
                raise SimulatorError(f"no review comment {comment_id} in {repo}")
            who = self._user(user)
            root["resolved"], root["resolved_by"] = resolved, (who if resolved else None)
            self._save()
            ctx = self._admin_ctx(api_url)
            pull = record["pulls"][str(root["pull"])]
            thread = [root] + sorted(
                (c for c in record["review_comments"].values() if c["in_reply_to_id"] == root["id"]),
                key=lambda c: c["id"],
            )
            hook = {
                "action": "resolved" if resolved else "unresolved",
                "thread": {
                    "node_id": thread_id(root["id"]),
                    "comments": [self._render_review_comment(ctx, record, c) for c in thread],
                },
                "pull_request": self._render_pull(ctx, record, pull, listing=True),
                "repository": self._render_repo(ctx, record),
                "sender": self._render_user(ctx, who),
            }
            self._with_installation(hook)
            return {"webhook": hook}

    def _admin_pull(self, repo: str, number: Any) -> tuple[dict, dict]:
        record = self._state["repos"].get(repo)
        if record is None:
            raise SimulatorError(f"unknown repository {repo!r}; seed it first")
        pull = record["pulls"].get(str(number))
        if pull is None:
            raise SimulatorError(f"unknown pull request {repo}#{number}")
        return record, pull

    def _admin_ctx(self, api_url: str | None) -> _Context:
        api = api_url or (self.url if self._server else "http://127.0.0.1")
        return _Context("GET", "", {}, {}, None, api, api)

    def _with_installation(self, payload: dict) -> None:
        installation = self._first_installation()
        if installation is not None:
            payload["installation"] = {"id": installation, "node_id": _node_id("Installation", installation)}

    def inject(
        self,
        kind: str = "error",
        *,
        count: int = 1,
        status: int | None = None,
        method: str | None = None,
        path: str | None = None,
        retry_after: int | None = None,
        reset_in: int | None = None,
        message: str | None = None,
        delay: float | None = None,
    ) -> dict:
        """Make the next ``count`` matching requests fail (kinds in the module docstring)."""
        kinds = ("error", "secondary", "primary", "429", "disconnect", *_TRANSFER_FAULTS)
        if kind not in kinds:
            raise SimulatorError(f"unknown fault kind {kind!r}; expected one of {', '.join(kinds)}")
        for name, pattern in (("method", method), ("path", path)):
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise SimulatorError(f"fault {name} is not a valid regex: {exc}") from exc
        fault = {
            "kind": kind,
            "count": int(count),
            "status": int(status) if status else None,
            "method": method,
            "path": path,
            "retry_after": retry_after,
            "reset_in": reset_in,
            "message": message,
            "delay": float(delay) if delay is not None else 1.0,
        }
        with self._lock:
            self._faults.append(fault)
        return dict(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_rate_limit(
        self, *, limit: int | None = None, remaining: int | None = None, reset_in: int | None = None
    ) -> dict:
        """Set the primary budget, e.g. ``remaining=0, reset_in=30`` for an exhausted limit."""
        with self._lock:
            rate = self._state["rate"]
            self._roll_rate_window()
            if limit is not None:
                rate["limit"] = int(limit)
            if remaining is not None:
                rate["used"] = max(rate["limit"] - int(remaining), 0)
            if reset_in is not None:
                rate["reset"] = int(time.time()) + int(reset_in)
            self._save()
            return self._rate_view()

    def stats(self) -> dict:
        with self._lock:
            return copy.deepcopy(self._stats)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = self._empty_stats()

    def _first_installation(self) -> int | None:
        for app in self._state["apps"].values():
            if app["installations"]:
                return app["installations"][0]
        return None

    # ----------------------------------------------------------------- request pipeline

    def _handle(self, method: str, raw_path: str, headers: Any, raw_body: bytes, own: str) -> _Answer | None:
        split = urlsplit(raw_path)
        path = unquote(split.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        prefix = ""
        if path.startswith("/api/v3/") or path == "/api/v3":
            prefix, path = "/api/v3", path[len("/api/v3") :] or "/"
        if path.startswith("/_sim/"):
            return self._admin(method, path, query, raw_body, own)
        if prefix == "" and path == "/api/graphql":  # GitHub Enterprise's GraphQL root
            path = "/graphql"
        route, params = _match_route(method, path)
        template = f"{method} {route.template}" if route else f"{method} (unmatched)"
        rid = "{:04X}:{:04X}:{:06X}:{:06X}:{:08X}".format(*(secrets.randbits(b) for b in (16, 16, 24, 24, 32)))
        with self._lock:
            self._stats["total"] += 1
            self._stats["by_route"][template] = self._stats["by_route"].get(template, 0) + 1
            fault = self._take_fault(method, path)
            if fault is not None:
                self._stats["faults_served"] += 1
        answer: _Answer | None
        if fault is not None and fault["kind"] not in _TRANSFER_FAULTS:
            answer = self._fault_answer(fault, rid)
        else:
            try:
                body = self._decode_body(raw_body, headers)
                ctx = _Context(method, path, query, headers, body, own + prefix, own)
                with self._lock:
                    answer = self._dispatch(route, params, ctx)
            except _HTTPError as err:
                answer = _Answer(err.status, err.body(), dict(err.headers))
            if fault is not None:  # served for real; only its transfer goes wrong
                answer.transfer, answer.delay = fault["kind"], fault["delay"]
        if answer is None:
            return None
        answer.headers.setdefault("X-GitHub-Request-Id", rid)
        with self._lock:
            key = str(answer.status)
            self._stats["by_status"][key] = self._stats["by_status"].get(key, 0) + 1
            for name, value in self._rate_headers().items():
                answer.headers.setdefault(name, value)
        return answer

    @staticmethod
    def _decode_body(raw: bytes, headers: Any) -> Any:
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _HTTPError(400, "Problems parsing JSON") from exc

    def _take_fault(self, method: str, path: str) -> dict | None:
        for fault in self._faults:
            if fault["method"] and not re.fullmatch(fault["method"], method, re.I):
                continue
            if fault["path"] and not re.search(fault["path"], path):
                continue
            fault["count"] -= 1
            if fault["count"] <= 0:
                self._faults.remove(fault)
            return fault
        return None

    def _fault_answer(self, fault: dict, rid: str) -> _Answer | None:
        kind = fault["kind"]
        if kind == "disconnect":
            return None
        headers: dict[str, str] = {}
        if fault["retry_after"] is not None:
            headers["Retry-After"] = str(int(fault["retry_after"]))
        if kind == "error":
            status = fault["status"] or 500
            return _Answer(status, {"message": fault["message"] or "Server Error", "documentation_url": DOCS}, headers)
        if kind == "primary":
            with self._lock:
                reset = int(time.time()) + int(fault["reset_in"] if fault["reset_in"] is not None else 60)
                headers.update(
                    {
                        "X-RateLimit-Limit": str(self._state["rate"]["limit"]),
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Used": str(self._state["rate"]["limit"]),
                        "X-RateLimit-Reset": str(reset),
                        "X-RateLimit-Resource": "core",
                    }
                )
            message = fault["message"] or (
                "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, "
                f"please include the request ID {rid}."
            )
            return _Answer(
                fault["status"] or 403,
                {
                    "message": message,
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                },
                headers,
            )
        status = 429 if kind == "429" else (fault["status"] or 403)
        doc = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
        return _Answer(
            status,
            {"message": fault["message"] or SECONDARY_MESSAGE.format(rid=rid), "documentation_url": doc},
            headers,
        )

    # ----------------------------------------------------------------- rate budget

    def _roll_rate_window(self) -> None:
        rate = self._state["rate"]
        now = int(time.time())
        if rate["reset"] <= now:
            rate["used"], rate["reset"] = 0, now + int(rate["window"])

    def _rate_view(self) -> dict:
        rate = self._state["rate"]
        return {
            "limit": rate["limit"],
            "remaining": max(rate["limit"] - rate["used"], 0),
            "reset": rate["reset"],
            "used": rate["used"],
            "resource": "core",
        }

    def _rate_headers(self) -> dict[str, str]:
        view = self._rate_view()
        return {
            "X-RateLimit-Limit": str(view["limit"]),
            "X-RateLimit-Remaining": str(view["remaining"]),
            "X-RateLimit-Reset": str(view["reset"]),
            "X-RateLimit-Used": str(view["used"]),
            "X-RateLimit-Resource": "core",
        }

    def _spend(self, identity: dict | None) -> None:
        self._roll_rate_window()
        rate = self._state["rate"]
        if rate["used"] >= rate["limit"]:
            who = (
                f"installation ID {identity['installation']}"
                if identity and identity.get("installation")
                else (
                    f"user ID {self._state['users'].get(identity['login'], {}).get('id', 1)}"
                    if identity
                    else "127.0.0.1"
                )
            )
            raise _HTTPError(
                403,
                f"API rate limit exceeded for {who}.",
                doc="https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
            )
        rate["used"] += 1

    # ----------------------------------------------------------------- auth

    def _authenticate(self, ctx: _Context, route: _Route) -> None:
        header = ctx.headers.get("Authorization") or ""
        scheme, _, credential = header.strip().partition(" ")
        credential = credential.strip()
        if route.jwt:
            if scheme.lower() != "bearer" or not credential:
                raise _HTTPError(401, "A JSON web token could not be decoded")
            ctx.identity = self._check_jwt(credential)
            return
        if header and scheme.lower() not in ("token", "bearer"):
            raise _HTTPError(401, "Bad credentials")
        if credential.count(".") == 2 and credential.startswith("eyJ"):
            raise _HTTPError(401, "A JSON web token cannot be used here; use an installation token")
        tokens = self._state["tokens"]
        if not credential:
            if tokens:
                raise _HTTPError(401, "Requires authentication")
            ctx.identity = None
            return
        entry = tokens.get(_digest(credential))
        if entry is None:
            if tokens:
                raise _HTTPError(401, "Bad credentials")
            ctx.identity = self._user(DEFAULT_LOGIN) | {"permission": "write"}
            return
        if entry.get("expires_at") and entry["expires_at"] < time.time():
            raise _HTTPError(401, "Bad credentials")
        ctx.identity = dict(entry)

    def _check_jwt(self, token: str) -> dict:
        import jwt  # PyJWT, a revbot dependency

        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
        except jwt.PyJWTError as exc:
            raise _HTTPError(401, "A JSON web token could not be decoded") from exc
        if header.get("alg") != "RS256":
            raise _HTTPError(401, f"'alg' must be RS256, got {header.get('alg')!r}")
        for claim in ("iat", "exp", "iss"):
            if claim not in claims:
                raise _HTTPError(401, f"Missing '{claim}' claim")
        now = time.time()
        if not isinstance(claims["exp"], (int, float)) or claims["exp"] < now:
            raise _HTTPError(
                401,
                "'Expiration time' claim ('exp') must be a numeric value representing the "
                "future time at which the assertion expires",
            )
        if not isinstance(claims["iat"], (int, float)) or claims["iat"] > now + 60:
            raise _HTTPError(
                401, "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
            )
        if claims["exp"] - claims["iat"] > 660:
            raise _HTTPError(401, "'Expiration time' claim ('exp') is too far in the future")
        apps = self._state["apps"]
        app = apps.get(str(claims["iss"]))
        if apps and app is None:
            raise _HTTPError(401, f"Integration not found for 'iss' {claims['iss']!r}")
        if app and app.get("public_key"):
            try:
                jwt.decode(token, app["public_key"], algorithms=["RS256"], options={"verify_exp": False})
            except jwt.PyJWTError as exc:
                raise _HTTPError(401, "A JSON web token could not be decoded (signature does not verify)") from exc
        app = app or {
            "id": int(claims["iss"]) if str(claims["iss"]).isdigit() else 0,
            "slug": f"app-{claims['iss']}",
            "installations": [],
            "token_ttl": 3600,
        }
        return {"app": app}

    # ----------------------------------------------------------------- dispatch

    def _dispatch(self, route: _Route | None, params: dict, ctx: _Context) -> _Answer:
        if route is None:
            raise _not_found()
        self._authenticate(ctx, route)
        if route.write and ctx.identity and ctx.identity.get("permission") == "read":
            raise _HTTPError(403, "Resource not accessible by personal access token")
        if route.spends:
            self._spend(ctx.identity)
        return route.handler(self, ctx, **params)

    def _page(self, ctx: _Context, items: list, render: Callable[[Any], Any]) -> _Answer:
        """GitHub paging: per_page (default 30, at most 100), page, Link with first/prev/next/last."""
        try:
            per_page = min(max(int(ctx.query.get("per_page", 30)), 1), 100)
            page = max(int(ctx.query.get("page", 1)), 1)
        except ValueError as exc:
            raise _HTTPError(422, "Invalid page or per_page parameter") from exc
        last = max((len(items) + per_page - 1) // per_page, 1)
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []

        def link(n: int, rel: str) -> str:
            query = dict(ctx.query, per_page=str(per_page), page=str(n))
            return f'<{ctx.api}{quote(ctx.path)}?{urlencode(query)}>; rel="{rel}"'

        if page > 1:
            links.append(link(min(page - 1, last), "prev"))
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links.append(link(1, "first"))
        headers = {"Link": ", ".join(links)} if links else {}
        return _Answer(200, [render(x) for x in chunk], headers)

    # ----------------------------------------------------------------- renderers (GitHub's shapes)

    def _render_user(self, ctx: _Context, user: dict) -> dict:
        login = user["login"]
        uid = self._state["users"].get(login, {}).get("id", 1)
        base = f"{ctx.api}/users/{login}"
        kind = user.get("type") or self._state["users"].get(login, {}).get("type", "User")
        return {
            "login": login,
            "id": uid,
            "node_id": _node_id("Bot" if kind == "Bot" else "User", uid),
            "avatar_url": f"{ctx.web}/_avatars/u/{uid}",
            "gravatar_id": "",
            "url": base,
            "html_url": f"{ctx.web}/{login}",
            "followers_url": f"{base}/followers",
            "following_url": f"{base}/following{{/other_user}}",
            "gists_url": f"{base}/gists{{/gist_id}}",
            "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{base}/subscriptions",
            "organizations_url": f"{base}/orgs",
            "repos_url": f"{base}/repos",
            "events_url": f"{base}/events{{/privacy}}",
            "received_events_url": f"{base}/received_events",
            "type": kind,
            "user_view_type": "public",
            "site_admin": False,
        }

    def _render_repo(self, ctx: _Context, repo: dict) -> dict:
        full = f"{repo['owner']}/{repo['name']}"
        api = f"{ctx.api}/repos/{full}"
        owner = self._render_user(ctx, {"login": repo["owner"]})
        n_open = sum(1 for p in repo["pulls"].values() if p["state"] == "open")
        out: dict[str, Any] = {
            "id": repo["id"],
            "node_id": _node_id("Repository", repo["id"]),
            "name": repo["name"],
            "full_name": full,
            "private": repo["private"],
            "owner": owner,
            "html_url": f"{ctx.web}/{full}",
            "description": repo["description"],
            "fork": False,
            "url": api,
        }
        for key, suffix in _REPO_URLS:
            out[key] = api + suffix
        out.update(
            {
                "created_at": repo["created_at"],
                "updated_at": repo["created_at"],
                "pushed_at": repo["created_at"],
                "git_url": f"git://127.0.0.1/{full}.git",
                "ssh_url": f"git@127.0.0.1:{full}.git",
                "clone_url": f"{ctx.web}/{full}.git",
                "svn_url": f"{ctx.web}/{full}",
                "homepage": None,
                "size": 0,
                "stargazers_count": 0,
                "watchers_count": 0,
                "language": None,
                "has_issues": True,
                "has_projects": True,
                "has_downloads": True,
                "has_wiki": True,
                "has_pages": False,
                "has_discussions": False,
                "forks_count": 0,
                "mirror_url": None,
                "archived": False,
                "disabled": False,
                "open_issues_count": n_open,
                "license": None,
                "allow_forking": True,
                "is_template": False,
                "web_commit_signoff_required": False,
                "topics": [],
                "visibility": "private" if repo["private"] else "public",
                "forks": 0,
                "open_issues": n_open,
                "watchers": 0,
                "default_branch": repo["default_branch"],
                "permissions": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True},
                "temp_clone_token": "",
                "allow_squash_merge": True,
                "allow_merge_commit": True,
                "allow_rebase_merge": True,
                "allow_auto_merge": False,
                "delete_branch_on_merge": False,
                "allow_update_branch": False,
                "use_squash_pr_title_as_default": False,
                "squash_merge_commit_message": "COMMIT_MESSAGES",
                "squash_merge_commit_title": "COMMIT_OR_PR_TITLE",
                "merge_commit_message": "PR_TITLE",
                "merge_commit_title": "MERGE_MESSAGE",
                "custom_properties": {},
                "security_and_analysis": {
                    k: {"status": "disabled"}
                    for k in (
                        "secret_scanning",
                        "secret_scanning_push_protection",
                        "dependabot_security_updates",
                        "secret_scanning_non_provider_patterns",
                        "secret_scanning_validity_checks",
                    )
                },
                "network_count": 0,
                "subscribers_count": 0,
            }
        )
        if self._state["users"].get(repo["owner"], {}).get("type") == "Organization":
            out["organization"] = owner
        return out

    def _association(self, repo: dict, login: str) -> str:
        if login == repo["owner"]:
            return "OWNER"
        if any(p["user"]["login"] == login for p in repo["pulls"].values()):
            return "CONTRIBUTOR"
        return "NONE"

    def _render_pull(self, ctx: _Context, repo: dict, pull: dict, listing: bool = False) -> dict:
        full = f"{repo['owner']}/{repo['name']}"
        api = f"{ctx.api}/repos/{full}"
        n = pull["number"]
        html = f"{ctx.web}/{full}/pull/{n}"
        repo_json = self._render_repo(ctx, repo)
        owner = self._render_user(ctx, {"login": repo["owner"]})

        def ref(branch: str, sha: str) -> dict:
            return {"label": f"{repo['owner']}:{branch}", "ref": branch, "sha": sha, "user": owner, "repo": repo_json}

        out = {
            "url": f"{api}/pulls/{n}",
            "id": pull["id"],
            "node_id": _node_id("PullRequest", pull["id"]),
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": f"{api}/issues/{n}",
            "number": n,
            "state": pull["state"],
            "locked": pull["locked"],
            "title": pull["title"],
            "user": self._render_user(ctx, pull["user"]),
            "body": pull["body"],
            "created_at": pull["created_at"],
            "updated_at": pull["updated_at"],
            "closed_at": pull["closed_at"],
            "merged_at": pull["merged_at"],
            "merge_commit_sha": _fake_sha(full, n, "merge", pull["head_sha"]),
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "labels": [],
            "milestone": None,
            "draft": pull["draft"],
            "commits_url": f"{api}/pulls/{n}/commits",
            "review_comments_url": f"{api}/pulls/{n}/comments",
            "review_comment_url": f"{api}/pulls/comments{{/number}}",
            "comments_url": f"{api}/issues/{n}/comments",
            "statuses_url": f"{api}/statuses/{pull['head_sha']}",
            "head": ref(pull["head"], pull["head_sha"]),
            "base": ref(pull["base"], pull["base_sha"]),
            "_links": {
                "self": {"href": f"{api}/pulls/{n}"},
                "html": {"href": html},
                "issue": {"href": f"{api}/issues/{n}"},
                "comments": {"href": f"{api}/issues/{n}/comments"},
                "review_comments": {"href": f"{api}/pulls/{n}/comments"},
                "review_comment": {"href": f"{api}/pulls/comments{{/number}}"},
                "commits": {"href": f"{api}/pulls/{n}/commits"},
                "statuses": {"href": f"{api}/statuses/{pull['head_sha']}"},
            },
            "author_association": self._association(repo, pull["user"]["login"]),
            "auto_merge": None,
            "active_lock_reason": None,
        }
        if listing:  # GitHub's list items stop here; the counts below cost a pass over the comments
            return out
        diffs = self._file_diffs(full, pull)
        closed = pull["state"] == "closed"
        out.update(
            {
                "merged": pull["merged"],
                "mergeable": None if closed else True,
                "rebaseable": None if closed else True,
                "mergeable_state": "unknown" if closed else "clean",
                "merged_by": None,
                "comments": sum(1 for c in repo["issue_comments"].values() if c["issue"] == n),
                "review_comments": len(self._visible_comments(repo, n)),
                "maintainer_can_modify": False,
                "commits": len(pull["shas"]),
                "additions": sum(fd.added for fd in diffs.values()),
                "deletions": sum(fd.removed for fd in diffs.values()),
                "changed_files": len(pull["files"]),
            }
        )
        return out

    def _render_file(self, ctx: _Context, repo: dict, pull: dict, entry: dict) -> dict:
        full = f"{repo['owner']}/{repo['name']}"
        fd = self._file_diffs(full, pull)[entry["filename"]]
        sha = pull["head_sha"]
        path = quote(entry["filename"])
        out = {
            "sha": _fake_sha(full, sha, entry["filename"]),
            "filename": entry["filename"],
            "status": entry["status"],
            "additions": fd.added,
            "deletions": fd.removed,
            "changes": fd.added + fd.removed,
            "blob_url": f"{ctx.web}/{full}/blob/{sha}/{path}",
            "raw_url": f"{ctx.web}/{full}/raw/{sha}/{path}",
            "contents_url": f"{ctx.api}/repos/{full}/contents/{path}?ref={sha}",
        }
        if entry["patch"] is not None:
            out["patch"] = entry["patch"]
        if entry["previous_filename"]:
            out["previous_filename"] = entry["previous_filename"]
        return out

    def _render_review_comment(self, ctx: _Context, repo: dict, c: dict) -> dict:
        full = f"{repo['owner']}/{repo['name']}"
        api = f"{ctx.api}/repos/{full}"
        html = f"{ctx.web}/{full}/pull/{c['pull']}#discussion_r{c['id']}"
        out = {
            "url": f"{api}/pulls/comments/{c['id']}",
            "pull_request_review_id": c["review_id"],
            "id": c["id"],
            "node_id": _node_id("PullRequestReviewComment", c["id"]),
            "diff_hunk": c["diff_hunk"],
            "path": c["path"],
            "commit_id": c["commit_id"],
            "original_commit_id": c["original_commit_id"],
            "user": self._render_user(ctx, c["user"]),
            "body": c["body"],
            "created_at": c["created_at"],
            "updated_at": c["updated_at"],
            "html_url": html,
            "pull_request_url": f"{api}/pulls/{c['pull']}",
            "author_association": c["author_association"] or self._association(repo, c["user"]["login"]),
            "_links": {
                "self": {"href": f"{api}/pulls/comments/{c['id']}"},
                "html": {"href": html},
                "pull_request": {"href": f"{api}/pulls/{c['pull']}"},
            },
            "reactions": self._rollup(f"{api}/pulls/comments/{c['id']}/reactions", c["reactions"]),
            "start_line": c["start_line"],
            "original_start_line": c["original_start_line"],
            "start_side": c["start_side"],
            "line": c["line"],
            "original_line": c["original_line"],
            "side": c["side"],
            "original_position": c["position"],
            "position": c["position"],
            "subject_type": c["subject_type"],
        }
        if c["in_reply_to_id"] is not None:
            out["in_reply_to_id"] = c["in_reply_to_id"]
        return out

    @staticmethod
    def _rollup(url: str, reactions: list[dict]) -> dict:
        out: dict[str, Any] = {"url": url, "total_count": len(reactions)}
        for content in REACTIONS:
            out[content] = sum(1 for r in reactions if r["content"] == content)
        return out

    def _render_review(self, ctx: _Context, repo: dict, r: dict) -> dict:
        full = f"{repo['owner']}/{repo['name']}"
        html = f"{ctx.web}/{full}/pull/{r['pull']}#pullrequestreview-{r['id']}"
        pr_url = f"{ctx.api}/repos/{full}/pulls/{r['pull']}"
        out = {
            "id": r["id"],
            "node_id": _node_id("PullRequestReview", r["id"]),
            "user": self._render_user(ctx, r["user"]),
            "body": r["body"],
            "state": r["state"],
            "html_url": html,
            "pull_request_url": pr_url,
            "author_association": self._association(repo, r["user"]["login"]),
            "_links": {"html": {"href": html}, "pull_request": {"href": pr_url}},
            "commit_id": r["commit_id"],
        }
        if r["submitted_at"]:
            out["submitted_at"] = r["submitted_at"]
        return out

    def _render_issue_comment(self, ctx: _Context, repo: dict, c: dict) -> dict:
        full = f"{repo['owner']}/{repo['name']}"
        api = f"{ctx.api}/repos/{full}"
        return {
            "url": f"{api}/issues/comments/{c['id']}",
            "html_url": f"{ctx.web}/{full}/pull/{c['issue']}#issuecomment-{c['id']}",
            "issue_url": f"{api}/issues/{c['issue']}",
            "id": c["id"],
            "node_id": _node_id("IssueComment", c["id"]),
            "user": self._render_user(ctx, c["user"]),
            "created_at": c["created_at"],
            "updated_at": c["updated_at"],
            "author_association": self._association(repo, c["user"]["login"]),
            "body": c["body"],
            "reactions": self._rollup(f"{api}/issues/comments/{c['id']}/reactions", c.get("reactions") or []),
            "performed_via_github_app": None,
        }

    def _render_reaction(self, ctx: _Context, r: dict) -> dict:
        return {
            "id": r["id"],
            "node_id": _node_id("Reaction", r["id"]),
            "user": self._render_user(ctx, r["user"]),
            "content": r["content"],
            "created_at": r["created_at"],
        }

    def _visible_comments(self, repo: dict, number: int) -> list[dict]:
        pending = {r["id"] for r in repo["reviews"].values() if r["state"] == "PENDING"}
        return [c for c in repo["review_comments"].values() if c["pull"] == number and c["review_id"] not in pending]

    # ----------------------------------------------------------------- GitHub endpoints

    def _get_repo(self, ctx: _Context, owner: str, repo: str) -> _Answer:
        return _Answer(200, self._render_repo(ctx, self._repo(f"{owner}/{repo}")))

    def _list_pulls(self, ctx: _Context, owner: str, repo: str) -> _Answer:
        record = self._repo(f"{owner}/{repo}")
        state = ctx.query.get("state", "open")
        if state not in ("open", "closed", "all"):
            raise _HTTPError(422, f"Invalid value for state: {state!r}")
        pulls = [p for p in record["pulls"].values() if state == "all" or p["state"] == state]
        if "base" in ctx.query:
            pulls = [p for p in pulls if p["base"] == ctx.query["base"]]
        if "head" in ctx.query:
            pulls = [p for p in pulls if f"{record['owner']}:{p['head']}" == ctx.query["head"]]
        sort = ctx.query.get("sort", "created")
        key = {"created": "created_at", "updated": "updated_at"}.get(sort, "created_at")
        pulls.sort(key=lambda p: (p[key], p["number"]), reverse=ctx.query.get("direction", "desc") == "desc")
        return self._page(ctx, pulls, lambda p: self._render_pull(ctx, record, p, listing=True))

    def _get_pull(self, ctx: _Context, owner: str, repo: str, number: str) -> _Answer:
        full = f"{owner}/{repo}"
        record = self._repo(full)
        pull = self._pull(record, number)
        accept = (ctx.headers.get("Accept") or "").lower()
        if "diff" in accept or "patch" in accept:
            diffs = self._file_diffs(full, pull)
            text = Diff(files=[diffs[f["filename"]] for f in pull["files"]], source=full).text()
            return _Answer(200, text, content_type="text/plain; charset=utf-8")
        return _Answer(200, self._render_pull(ctx, record, pull))

    def _pull_files(self, ctx: _Context, owner: str, repo: str, number: str) -> _Answer:
        record = self._repo(f"{owner}/{repo}")
        pull = self._pull(record, number)
        return self._page(ctx, pull["files"], lambda f: self._render_file(ctx, record, pull, f))

    def _sorted_comments(self, ctx: _Context, comments: list[dict], default_sort: str = "created") -> list[dict]:
        since = ctx.query.get("since")
        if since:
            floor = _parse_time(since, "since")
            comments = [c for c in comments if _parse_time(c["updated_at"], "updated_at") >= floor]
        sort = ctx.query.get("sort", default_sort)
        if sort not in ("created", "updated"):
            raise _HTTPError(422, f"Invalid value for sort: {sort!r}")
        key = "created_at" if sort == "created" else "updated_at"
        direction = ctx.query.get("direction", "asc")
        if direction not in ("asc", "desc"):
            raise _HTTPError(422, f"Invalid value for direction: {direction!r}")
        return sorted(comments, key=lambda c: (c[key], c["id"]), reverse=direction == "desc")

    def _repo_comments(self, ctx: _Context, owner: str, repo: str) -> _Answer:
        record = self._repo(f"{owner}/{repo}")
        pending = {r["id"] for r in record["reviews"].values() if r["state"] == "PENDING"}
        comments = [c for c in record["review_comments"].values() if c["review_id"] not in pending]
        ordered = self._sorted_comments(ctx, comments)
        return self._page(ctx, ordered, lambda c: self._render_review_comment(ctx, record, c))

    def _get_comment(self, ctx: _Context, owner: str, repo: str, comment_id: str) -> _Answer:
        record = self._repo(f"{owner}/{repo}")
        comment = record["review_comments"].get(comment_id)
        if comment is None:
            raise _not_found()
        return _Answer(200, self._render_review_comment(ctx, record, comment))

    def _pull_comments(self, ctx: _Context, owner: str, repo: str, number: str) -> _Answer:
        record = self._repo(f"{owner}/{repo}")
        pull = self._pull(record, number)
        ordered = self._sorted_comments(ctx, self._visible_comments(record, pull["number"]))
        return self._page(ctx, ordered, lambda c: self._render_review_comment(ctx, record, c))

    def _validate_inline(self, full: str, pull: dict, spec: Any, index: int | None) -> tuple[dict, list[dict]]:
        """Check one inline comment against the PR's diff like GitHub does; returns (normalised, errors)."""
        label = f"comments[{index}]" if index is not None else "comment"

        def error(field_name: str, message: str, code: str = "custom", **where: Any) -> dict:
            out = {
                "resource": "PullRequestReviewComment",
                "code": code,
                "field": f"{label}.{field_name}" if index is not None else field_name,
                "message": message,
            }
            if index is not None:
                out["index"] = index
            out.update(where)
            return out

        if not isinstance(spec, dict):
            return {}, [error("comment", f"{label} must be an object", code="invalid")]
        errors = []
        body, path = spec.get("body"), spec.get("path")
        if not isinstance(body, str) or not body:
            errors.append(error("body", "Body can't be blank", code="missing_field"))
        if not isinstance(path, str) or not path:
            errors.append(error("path", "Path can't be blank", code="missing_field"))
            return {}, errors
        diffs = self._file_diffs(full, pull)
        fd = diffs.get(path)
        where = {"path": path}
        if fd is None:
            errors.append(error("path", "Path could not be resolved", **where))
            return {}, errors
        if spec.get("subject_type") == "file":
            return {"path": path, "body": body, "line": None, "side": RIGHT, "subject_type": "file"}, errors
        line, side = spec.get("line"), spec.get("side") or RIGHT
        if line is None and spec.get("position") is not None:
            resolved = self._position_to_line(full, pull, path, int(spec["position"]))
            if resolved is None:
                errors.append(
                    error(
                        "position",
                        "Pull request review thread position could not be resolved",
                        **where,
                        position=spec["position"],
                    )
                )
                return {}, errors
            line, side = resolved
        if side not in (LEFT, RIGHT):
            errors.append(error("side", f"side must be LEFT or RIGHT, got {side!r}", code="invalid", **where))
            return {}, errors
        if not isinstance(line, int) or isinstance(line, bool):
            errors.append(error("line", "Line could not be resolved", code="invalid", **where, line=line))
            return {}, errors
        where.update(line=line, side=side)
        if not fd.is_commentable(line, side):
            errors.append(error("line", "Pull request review thread line must be part of the diff", **where))
            return {}, errors
        start_line = spec.get("start_line")
        start_side = spec.get("start_side") or side
        if start_line is not None:
            if not isinstance(start_line, int) or start_line >= line and start_side == side:
                errors.append(
                    error(
                        "start_line",
                        "start_line must precede the end line",
                        code="invalid",
                        **where,
                        start_line=start_line,
                    )
                )
            elif not fd.is_commentable(start_line, start_side) or fd.hunk_for(
                start_line, start_side
            ) is not fd.hunk_for(line, side):
                errors.append(
                    error(
                        "start_line",
                        "Pull request review thread start line must be part of the same hunk as the line",
                        **where,
                        start_line=start_line,
                    )
                )
        return {
            "path": path,
            "body": body,
            "line": line,
            "side": side,
            "start_line": start_line,
            "start_side": start_side if start_line is not None else None,
        }, errors

    def _identity_user(self, ctx: _Context) -> dict:
        if ctx.identity is None:
            raise _HTTPError(401, "Requires authentication")
        return self._user({"login": ctx.identity["login"], "type": ctx.identity.get("type", "User")})

    def _create_comment(self, ctx: _Context, owner: str, repo: str, number: str) -> _Answer:
        full = f"{owner}/{repo}"
        record = self._repo(full)
        pull = self._pull(record, number)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        user = self._identity_user(ctx)
        if body.get("in_reply_to") is not None:
            return self._reply(ctx, record, pull, body.get("in_reply_to"), body.get("body"), user)
        commit_id = body.get("commit_id")
        if not commit_id:
            raise _HTTPError(422, 'Invalid request.\n\n"commit_id" wasn\'t supplied.')
        if commit_id not in pull["shas"]:
            raise _unprocessable("PullRequestReviewComment", "commit_id", "commit_id is not part of the pull request")
        spec, errors = self._validate_inline(full, pull, body, None)
        if errors:
            raise _HTTPError(
                422,
                "Unprocessable Entity",
                errors,
                doc=f"{DOCS}/pulls/comments#create-a-review-comment-for-a-pull-request",
            )
        spec.update(commit_id=commit_id)
        comment = self._add_review_comment(record, pull, spec, "comment", identity=user)
        self._touch(pull)
        return _Answer(201, self._render_review_comment(ctx, record, comment))

    def _reply(self, ctx: _Context, record: dict, pull: dict, parent_id: Any, text: Any, user: dict) -> _Answer:
        parent = record["review_comments"].get(str(parent_id))
        if parent is None or parent["pull"] != pull["number"]:
            raise _HTTPError(404, "Not Found")
        if not isinstance(text, str) or not text:
            raise _unprocessable("PullRequestReviewComment", "body", code="missing_field")
        comment = self._add_review_comment(
            record,
            pull,
            {"body": text, "in_reply_to_id": parent["id"], "commit_id": pull["head_sha"]},
            "reply",
            identity=user,
        )
        self._touch(pull)
        return _Answer(201, self._render_review_comment(ctx, record, comment))

    def _create_reply(self, ctx: _Context, owner: str, repo: str, number: str, comment_id: str) -> _Answer:
        record = self._repo(f"{owner}/{repo}")
        pull = self._pull(record, number)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        return self._reply(ctx, record, pull, comment_id, body.get("body"), self._identity_user(ctx))

    def _list_reviews(self, ctx: _Context, owner: str, repo: str, number: str) -> _Answer:
        record = self._repo(f"{owner}/{repo}")
        pull = self._pull(record, number)
        reviews = [r for r in record["reviews"].values() if r["pull"] == pull["number"]]
        return self._page(ctx, reviews, lambda r: self._render_review(ctx, record, r))

    def _get_review(self, ctx: _Context, owner: str, repo: str, number: str, review_id: str) -> _Answer:
        record = self._repo(f"{owner}/{repo}")
        pull = self._pull(record, number)
        review = record["reviews"].get(review_id)
        if review is None or review["pull"] != pull["number"]:
            raise _not_found()
        return _Answer(200, self._render_review(ctx, record, review))

    def _create_review(self, ctx: _Context, owner: str, repo: str, number: str) -> _Answer:
        """All or nothing, like GitHub: one bad inline comment fails the review with 422."""
        full = f"{owner}/{repo}"
        record = self._repo(full)
        pull = self._pull(record, number)
        doc = f"{DOCS}/pulls/reviews#create-a-review-for-a-pull-request"
        body = ctx.body if ctx.body is not None else {}
        if not isinstance(body, dict):
            raise _HTTPError(400, "Problems parsing JSON")
        user = self._identity_user(ctx)
        event = body.get("event")
        states = {
            "APPROVE": "APPROVED",
            "REQUEST_CHANGES": "CHANGES_REQUESTED",
            "COMMENT": "COMMENTED",
            None: "PENDING",
        }
        if event not in states:
            raise _unprocessable("PullRequestReview", "event", f"Invalid event {event!r}", doc=doc)
        commit_id = body.get("commit_id") or pull["head_sha"]
        if commit_id not in pull["shas"]:
            raise _HTTPError(422, "Unprocessable Entity", ["Commit could not be resolved"], doc=doc)
        comments = body.get("comments") or []
        if not isinstance(comments, list):
            raise _unprocessable("PullRequestReview", "comments", "comments must be a list", doc=doc)
        text = body.get("body") or ""
        if event == "REQUEST_CHANGES" and not text:
            raise _HTTPError(422, "Unprocessable Entity", ["Review Body can't be blank"], doc=doc)
        if event == "COMMENT" and not text and not comments:
            raise _HTTPError(422, "Unprocessable Entity", ["Review Body can't be blank"], doc=doc)
        normalised, errors = [], []
        for index, spec in enumerate(comments):
            norm, errs = self._validate_inline(full, pull, spec, index)
            normalised.append(norm)
            errors += errs
        if errors:
            raise _HTTPError(422, "Unprocessable Entity", errors, doc=doc)
        review = self._add_review(record, pull, user, text, states[event], commit_id)
        for index, norm in enumerate(normalised):
            self._add_review_comment(
                record,
                pull,
                dict(norm, commit_id=commit_id),
                f"comments[{index}]",
                review_id=review["id"],
                identity=user,
            )
        self._touch(pull)
        return _Answer(200, self._render_review(ctx, record, review))

    def _touch(self, pull: dict) -> None:
        pull["updated_at"] = _iso(_now())
        self._save()

    def _issue_comments(self, ctx: _Context, owner: str, repo: str, number: str) -> _Answer:
        record = self._repo(f"{owner}/{repo}")
        pull = self._pull(record, number)
        comments = [c for c in record["issue_comments"].values() if c["issue"] == pull["number"]]
        if ctx.query.get("since"):
            floor = _parse_time(ctx.query["since"], "since")
            comments = [c for c in comments if _parse_time(c["updated_at"], "updated_at") >= floor]
        return self._page(ctx, comments, lambda c: self._render_issue_comment(ctx, record, c))

    def _create_issue_comment(self, ctx: _Context, owner: str, repo: str, number: str) -> _Answer:
        record = self._repo(f"{owner}/{repo}")
        pull = self._pull(record, number)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        if not isinstance(body.get("body"), str) or not body["body"]:
            raise _unprocessable("IssueComment", "body", code="missing_field")
        comment = self._add_issue_comment(record, pull, self._identity_user(ctx), body["body"])
        self._touch(pull)
        return _Answer(201, self._render_issue_comment(ctx, record, comment))

    def _comment_for_reactions(self, owner: str, repo: str, comment_id: str) -> tuple[dict, dict]:
        record = self._repo(f"{owner}/{repo}")
        comment = record["review_comments"].get(comment_id)
        if comment is None:
            raise _not_found()
        return record, comment

    def _list_reactions(self, ctx: _Context, owner: str, repo: str, comment_id: str) -> _Answer:
        _, comment = self._comment_for_reactions(owner, repo, comment_id)
        reactions = comment["reactions"]
        if ctx.query.get("content"):
            reactions = [r for r in reactions if r["content"] == ctx.query["content"]]
        return self._page(ctx, reactions, lambda r: self._render_reaction(ctx, r))

    def _add_reaction(self, ctx: _Context, owner: str, repo: str, comment_id: str) -> _Answer:
        _, comment = self._comment_for_reactions(owner, repo, comment_id)
        return self._react(ctx, comment, (ctx.body or {}).get("content") if isinstance(ctx.body, dict) else None)

    def _issue_comment_for_reactions(self, owner: str, repo: str, comment_id: str) -> dict:
        comment = self._repo(f"{owner}/{repo}")["issue_comments"].get(comment_id)
        if comment is None:
            raise _not_found()
        comment.setdefault("reactions", [])
        return comment

    def _list_issue_reactions(self, ctx: _Context, owner: str, repo: str, comment_id: str) -> _Answer:
        reactions = self._issue_comment_for_reactions(owner, repo, comment_id)["reactions"]
        if ctx.query.get("content"):
            reactions = [r for r in reactions if r["content"] == ctx.query["content"]]
        return self._page(ctx, reactions, lambda r: self._render_reaction(ctx, r))

    def _add_issue_reaction(self, ctx: _Context, owner: str, repo: str, comment_id: str) -> _Answer:
        comment = self._issue_comment_for_reactions(owner, repo, comment_id)
        return self._react(ctx, comment, (ctx.body or {}).get("content") if isinstance(ctx.body, dict) else None)

    def _react(self, ctx: _Context, comment: dict, content: Any) -> _Answer:
        if content not in REACTIONS:
            raise _unprocessable("Reaction", "content", f"content must be one of {', '.join(REACTIONS)}")
        user = self._identity_user(ctx)
        for existing in comment["reactions"]:
            if existing["content"] == content and existing["user"]["login"] == user["login"]:
                return _Answer(200, self._render_reaction(ctx, existing))
        reaction = {"id": self._new_id(), "content": content, "user": user, "created_at": _iso(_now())}
        comment["reactions"].append(reaction)
        self._save()
        return _Answer(201, self._render_reaction(ctx, reaction))

    def _compare(self, ctx: _Context, owner: str, repo: str, basehead: str) -> _Answer:
        """``GET /repos/{o}/{r}/compare/{base}...{head}`` between two heads of one pull request (or
        its base and a head): ``status`` ahead/behind/identical and the files that differ. A sha no
        pull request still has (a force-push dropped it) answers 404, as GitHub does for a commit
        it cannot find."""
        full = f"{owner}/{repo}"
        record = self._repo(full)
        base, sep, head = basehead.partition("...")
        if not sep or not base or not head:
            raise _not_found()
        for pull in record["pulls"].values():
            snapshots = pull.get("snapshots") or {}
            order = [pull["base_sha"], *snapshots]
            if head not in snapshots or base not in order:
                continue
            i, j = order.index(base), order.index(head)
            ahead, behind = max(j - i, 0), max(i - j, 0)
            if i == 0:
                files = []
                for f in snapshots[head]:
                    fd = parse_patch(f["patch"], f["filename"], status=_diff_status(f["status"]))
                    files.append(
                        {
                            "filename": f["filename"],
                            "status": f["status"],
                            "patch": f["patch"],
                            "additions": fd.added,
                            "deletions": fd.removed,
                            "changes": fd.added + fd.removed,
                        }
                    )
            else:
                files = self._compare_files(full, pull, base, head)
            status = "identical" if ahead == behind == 0 else "ahead" if behind == 0 else "behind"
            api = f"{ctx.api}/repos/{full}"
            out = {
                "url": f"{api}/compare/{base}...{head}",
                "html_url": f"{ctx.web}/{full}/compare/{base}...{head}",
                "base_commit": {"sha": base, "url": f"{api}/commits/{base}"},
                "merge_base_commit": {"sha": order[min(i, j)], "url": f"{api}/commits/{order[min(i, j)]}"},
                "status": status,
                "ahead_by": ahead,
                "behind_by": behind,
                "total_commits": ahead,
                "commits": [
                    {"sha": sha, "url": f"{api}/commits/{sha}", "commit": {"message": f"commit {sha[:7]}"}}
                    for sha in order[i + 1 : j + 1]
                ],
                "files": [
                    dict(
                        f,
                        sha=_fake_sha(full, head, f["filename"]),
                        blob_url=f"{ctx.web}/{full}/blob/{head}/{quote(f['filename'])}",
                    )
                    for f in files
                ],
            }
            return _Answer(200, out)
        raise _not_found()

    def _permission(self, ctx: _Context, owner: str, repo: str, username: str) -> _Answer:
        """A collaborator's permission: seeded ``collaborators``, the owner is admin, anyone else
        reads a public repository (``none`` on a private one); an unknown login is 404."""
        record = self._repo(f"{owner}/{repo}")
        if username not in self._state["users"]:
            raise _HTTPError(404, f"{username} is not a user")
        permission = (record.get("collaborators") or {}).get(username)
        if permission is None:
            permission = "admin" if username == record["owner"] else ("none" if record["private"] else "read")
        legacy = {"maintain": "write", "triage": "read"}.get(permission, permission)
        user = self._render_user(ctx, {"login": username})
        user["permissions"] = {
            "admin": legacy == "admin",
            "maintain": permission in ("admin", "maintain"),
            "push": legacy in ("admin", "write"),
            "triage": legacy != "none",
            "pull": legacy != "none",
        }
        user["role_name"] = permission
        return _Answer(200, {"permission": legacy, "role_name": permission, "user": user})

    def _graphql(self, ctx: _Context) -> _Answer:
        from revbot.dev.github_sim_graphql import execute

        if ctx.identity is None:
            raise _HTTPError(401, "This endpoint requires you to be authenticated.")
        if ctx.identity.get("graphql") is False:
            raise _HTTPError(403, "Resource not accessible by personal access token")
        return _Answer(200, execute(self, ctx.identity, ctx.web, ctx.body))

    def _branch_of(self, record: dict, ref: str) -> tuple[str, dict | None]:
        """(branch, PR whose head it is) for a branch name or a known commit sha."""
        for pull in record["pulls"].values():
            if ref == pull["head"] or ref in pull["shas"]:
                return pull["head"], pull
            if ref == pull["base_sha"]:
                return pull["base"], None
        return ref, None

    def _get_contents(self, ctx: _Context, owner: str, repo: str, path: str) -> _Answer:
        full = f"{owner}/{repo}"
        record = self._repo(full)
        ref = ctx.query.get("ref") or record["default_branch"]
        branch, pull = self._branch_of(record, ref)
        known = (
            branch in record["files"]
            or branch == record["default_branch"]
            or pull is not None
            or any(p["base"] == branch for p in record["pulls"].values())
        )
        if not known:
            raise _HTTPError(404, f"No commit found for the ref {ref}")
        content = record["files"].get(branch, {}).get(path)
        if content is None and pull is not None:
            deleted = any(f["filename"] == path and f["status"] == "removed" for f in pull["files"])
            if not deleted:
                content = record["files"].get(pull["base"], {}).get(path)
        if content is None:
            raise _not_found()
        accept = (ctx.headers.get("Accept") or "").lower()
        if "raw" in accept:
            return _Answer(200, content, content_type="text/plain; charset=utf-8")
        encoded = base64.b64encode(content.encode()).decode()
        api = f"{ctx.api}/repos/{full}/contents/{quote(path)}?ref={quote(ref)}"
        sha = _blob_sha(content)
        html = f"{ctx.web}/{full}/blob/{quote(ref)}/{quote(path)}"
        return _Answer(
            200,
            {
                "type": "file",
                "encoding": "base64",
                "size": len(content.encode()),
                "name": path.rsplit("/", 1)[-1],
                "path": path,
                "content": "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)) + "\n",
                "sha": sha,
                "url": api,
                "git_url": f"{ctx.api}/repos/{full}/git/blobs/{sha}",
                "html_url": html,
                "download_url": f"{ctx.web}/{full}/raw/{quote(ref)}/{quote(path)}",
                "_links": {"self": api, "git": f"{ctx.api}/repos/{full}/git/blobs/{sha}", "html": html},
            },
        )

    def _get_rate_limit(self, ctx: _Context) -> _Answer:
        self._roll_rate_window()
        core = self._rate_view()
        other = {"limit": 30, "remaining": 30, "reset": core["reset"], "used": 0}
        return _Answer(
            200,
            {
                "resources": {
                    "core": core,
                    "search": dict(other, resource="search"),
                    "graphql": dict(core, resource="graphql"),
                },
                "rate": core,
            },
        )

    def _get_user(self, ctx: _Context) -> _Answer:
        if ctx.identity is None:
            raise _HTTPError(401, "Requires authentication")
        if ctx.identity.get("installation"):
            raise _HTTPError(403, "Resource not accessible by integration")
        user = self._identity_user(ctx)
        out = self._render_user(ctx, user)
        out.update(
            {
                "name": None,
                "company": None,
                "blog": "",
                "location": None,
                "email": None,
                "hireable": None,
                "bio": None,
                "twitter_username": None,
                "public_repos": 0,
                "public_gists": 0,
                "followers": 0,
                "following": 0,
                "created_at": "2020-01-01T00:00:00Z",
                "updated_at": "2020-01-01T00:00:00Z",
            }
        )
        return _Answer(200, out)

    def _get_app(self, ctx: _Context) -> _Answer:
        app = ctx.identity["app"]  # type: ignore[index]
        return _Answer(
            200,
            {
                "id": app["id"],
                "slug": app["slug"],
                "node_id": _node_id("Integration", app["id"]),
                "name": app["slug"],
                "description": "",
                "external_url": ctx.web,
                "html_url": f"{ctx.web}/apps/{app['slug']}",
                "created_at": "2020-01-01T00:00:00Z",
                "updated_at": "2020-01-01T00:00:00Z",
                "permissions": {"pull_requests": "write", "contents": "read", "metadata": "read"},
                "events": ["pull_request"],
                "owner": self._render_user(ctx, self._user(app["slug"] + "-owner")),
            },
        )

    def _access_token(self, ctx: _Context, installation_id: str) -> _Answer:
        app = ctx.identity["app"]  # type: ignore[index]
        if app["installations"] and int(installation_id) not in app["installations"]:
            raise _not_found()
        token = "ghs_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")[:36]
        expires = time.time() + app.get("token_ttl", 3600)
        bot = self._user({"login": f"{app['slug']}[bot]", "type": "Bot"})
        self._state["tokens"][_digest(token)] = {
            "login": bot["login"],
            "type": "Bot",
            "permission": "write",
            "installation": int(installation_id),
            "expires_at": expires,
        }
        self._stats["tokens_issued"] += 1
        self._save()
        return _Answer(
            201,
            {
                "token": token,
                "expires_at": _iso(datetime.fromtimestamp(int(expires), UTC)),
                "permissions": {"pull_requests": "write", "contents": "read", "metadata": "read"},
                "repository_selection": "all",
            },
        )

    # ----------------------------------------------------------------- admin endpoints

    def _admin(self, method: str, path: str, query: dict, raw: bytes, own: str) -> _Answer:
        try:
            body = json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _Answer(400, {"message": f"admin request body is not JSON: {exc}"})
        try:
            if (method, path) == ("POST", "/_sim/seed"):
                self.seed(body)
                return _Answer(200, {"repos": sorted(self._state["repos"])})
            if (method, path) == ("POST", "/_sim/pulls"):
                body = dict(body)
                repo = body.pop("repo", None)
                if not repo:
                    raise SimulatorError("'repo' (OWNER/NAME) is required")
                return _Answer(201, self.add_pull(repo, api_url=own, **body))
            if (method, path) == ("POST", "/_sim/comments"):
                return _Answer(
                    201,
                    self.add_comments(
                        body.get("repo", ""),
                        body.get("pull") or body.get("number"),
                        body.get("comments"),
                        count=body.get("count"),
                        user=body.get("user", "reviewer"),
                        api_url=own,
                    ),
                )
            if (method, path) == ("POST", "/_sim/issue-comments"):
                return _Answer(
                    201,
                    self.add_issue_comment(
                        body.get("repo", ""),
                        body.get("pull") or body.get("number"),
                        body.get("body", ""),
                        user=body.get("user", "octocat"),
                        api_url=own,
                    ),
                )
            if (method, path) == ("POST", "/_sim/reactions"):
                return _Answer(
                    201,
                    self.react(
                        body.get("repo", ""),
                        int(body.get("comment_id") or 0),
                        body.get("content", ""),
                        user=body.get("user", "octocat"),
                        issue=bool(body.get("issue")),
                    ),
                )
            if (method, path) == ("POST", "/_sim/threads"):
                return _Answer(
                    200,
                    self.resolve_thread(
                        body.get("repo", ""),
                        int(body.get("comment_id") or 0),
                        user=body.get("user", "octocat"),
                        resolved=bool(body.get("resolved", True)),
                        api_url=own,
                    ),
                )
            if (method, path) == ("POST", "/_sim/faults"):
                return _Answer(201, self.inject(**body))
            if (method, path) == ("DELETE", "/_sim/faults"):
                self.clear_faults()
                return _Answer(200, {"faults": 0})
            if (method, path) == ("POST", "/_sim/rate-limit"):
                return _Answer(200, self.set_rate_limit(**body))
            if (method, path) == ("GET", "/_sim/stats"):
                return _Answer(200, self.stats())
            if (method, path) == ("POST", "/_sim/reset-stats"):
                self.reset_stats()
                return _Answer(200, self.stats())
            if (method, path) == ("GET", "/_sim/state"):
                return _Answer(200, self.state)
        except (RevbotError, TypeError, ValueError) as exc:
            return _Answer(422, {"message": str(exc)})
        return _Answer(404, {"message": f"no admin endpoint {method} {path}"})


def _diff_status(github_status: str) -> str:
    """GitHub file statuses -> the diff model's (removed -> deleted, changed -> modified)."""
    return {"removed": "deleted", "changed": "modified", "unchanged": "modified"}.get(github_status, github_status)


_REPO_URLS = [
    ("forks_url", "/forks"),
    ("keys_url", "/keys{/key_id}"),
    ("collaborators_url", "/collaborators{/collaborator}"),
    ("teams_url", "/teams"),
    ("hooks_url", "/hooks"),
    ("issue_events_url", "/issues/events{/number}"),
    ("events_url", "/events"),
    ("assignees_url", "/assignees{/user}"),
    ("branches_url", "/branches{/branch}"),
    ("tags_url", "/tags"),
    ("blobs_url", "/git/blobs{/sha}"),
    ("git_tags_url", "/git/tags{/sha}"),
    ("git_refs_url", "/git/refs{/sha}"),
    ("trees_url", "/git/trees{/sha}"),
    ("statuses_url", "/statuses/{sha}"),
    ("languages_url", "/languages"),
    ("stargazers_url", "/stargazers"),
    ("contributors_url", "/contributors"),
    ("subscribers_url", "/subscribers"),
    ("subscription_url", "/subscription"),
    ("commits_url", "/commits{/sha}"),
    ("git_commits_url", "/git/commits{/sha}"),
    ("comments_url", "/comments{/number}"),
    ("issue_comment_url", "/issues/comments{/number}"),
    ("contents_url", "/contents/{+path}"),
    ("compare_url", "/compare/{base}...{head}"),
    ("merges_url", "/merges"),
    ("archive_url", "/{archive_format}{/ref}"),
    ("downloads_url", "/downloads"),
    ("issues_url", "/issues{/number}"),
    ("pulls_url", "/pulls{/number}"),
    ("milestones_url", "/milestones{/number}"),
    ("notifications_url", "/notifications{?since,all,participating}"),
    ("labels_url", "/labels{/name}"),
    ("releases_url", "/releases{/id}"),
    ("deployments_url", "/deployments"),
]


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class _Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Callable[..., _Answer]
    write: bool = False
    jwt: bool = False
    spends: bool = True


def _route(method: str, template: str, handler: Callable[..., _Answer], **flags: bool) -> _Route:
    regex = "^" + re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", re.escape(template)) + "$"
    for numeric in ("pull_number", "issue_number", "comment_id", "review_id", "installation_id"):
        regex = regex.replace(f"(?P<{numeric}>[^/]+)", rf"(?P<{numeric}>\d+)")
    regex = regex.replace("(?P<path>[^/]+)", "(?P<path>.+)")
    return _Route(method, template, re.compile(regex), handler, **flags)


_R = "/repos/{owner}/{repo}"
_ROUTES = [
    _route("GET", _R + "/pulls/comments", GitHubSimulator._repo_comments),
    _route("GET", _R + "/pulls/comments/{comment_id}", GitHubSimulator._get_comment),
    _route("GET", _R + "/pulls/comments/{comment_id}/reactions", GitHubSimulator._list_reactions),
    _route("POST", _R + "/pulls/comments/{comment_id}/reactions", GitHubSimulator._add_reaction, write=True),
    _route("GET", _R, GitHubSimulator._get_repo),
    _route("GET", _R + "/pulls", GitHubSimulator._list_pulls),
    _route("GET", _R + "/pulls/{pull_number}", GitHubSimulator._get_pull),
    _route("GET", _R + "/pulls/{pull_number}/files", GitHubSimulator._pull_files),
    _route("GET", _R + "/pulls/{pull_number}/comments", GitHubSimulator._pull_comments),
    _route("POST", _R + "/pulls/{pull_number}/comments", GitHubSimulator._create_comment, write=True),
    _route(
        "POST", _R + "/pulls/{pull_number}/comments/{comment_id}/replies", GitHubSimulator._create_reply, write=True
    ),
    _route("GET", _R + "/pulls/{pull_number}/reviews", GitHubSimulator._list_reviews),
    _route("POST", _R + "/pulls/{pull_number}/reviews", GitHubSimulator._create_review, write=True),
    _route("GET", _R + "/pulls/{pull_number}/reviews/{review_id}", GitHubSimulator._get_review),
    _route("GET", _R + "/issues/{issue_number}/comments", GitHubSimulator._issue_comments),
    _route("POST", _R + "/issues/{issue_number}/comments", GitHubSimulator._create_issue_comment, write=True),
    _route("GET", _R + "/issues/comments/{comment_id}/reactions", GitHubSimulator._list_issue_reactions),
    _route("POST", _R + "/issues/comments/{comment_id}/reactions", GitHubSimulator._add_issue_reaction, write=True),
    _route("GET", _R + "/compare/{basehead}", GitHubSimulator._compare),
    _route("GET", _R + "/collaborators/{username}/permission", GitHubSimulator._permission),
    _route("POST", "/graphql", GitHubSimulator._graphql, spends=False),
    _route("GET", _R + "/contents/{path}", GitHubSimulator._get_contents),
    _route("GET", "/rate_limit", GitHubSimulator._get_rate_limit, spends=False),
    _route("GET", "/user", GitHubSimulator._get_user),
    _route("GET", "/app", GitHubSimulator._get_app, jwt=True, spends=False),
    _route(
        "POST",
        "/app/installations/{installation_id}/access_tokens",
        GitHubSimulator._access_token,
        jwt=True,
        spends=False,
    ),
]


def _match_route(method: str, path: str) -> tuple[_Route | None, dict]:
    for route in _ROUTES:
        if route.method == method:
            m = route.pattern.match(path)
            if m:
                params = m.groupdict()
                if "pull_number" in params:
                    params["number"] = params.pop("pull_number")
                if "issue_number" in params:
                    params["number"] = params.pop("issue_number")
                return route, params
    return None, {}


# --------------------------------------------------------------------------- HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid-connection (clients give up, retries reset) is not news."""
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Speaks HTTP/1.1 with keep-alive, as GitHub does; never logs headers (they carry tokens)."""

    sim: GitHubSimulator
    protocol_version = "HTTP/1.1"
    server_version = "revbot-github-sim"
    # headers and body go out in separate writes: without TCP_NODELAY, Nagle + delayed ACK stall each
    # keep-alive response by ~40 ms
    disable_nagle_algorithm = True
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # quiet; the path has no secrets but stay terse
        return

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        own = f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"
        try:
            answer = self.sim._handle(self.command, self.path, self.headers, raw, own)
        except Exception as exc:  # a simulator bug must answer, not hang the client
            answer = _Answer(500, {"message": f"simulator error: {type(exc).__name__}: {exc}"})
        if answer is None:  # "disconnect" fault
            self.close_connection = True
            return
        if isinstance(answer.body, str):
            payload = answer.body.encode("utf-8")
        elif answer.body is None:
            payload = b""
        else:
            payload = json.dumps(answer.body).encode("utf-8")
        if answer.transfer == "slow":
            time.sleep(answer.delay)
        announced = len(payload)
        if answer.transfer == "truncated":
            payload = payload[: len(payload) // 2]
            announced = len(payload)
        elif answer.transfer == "cutoff":
            payload = payload[: len(payload) // 2]
            self.close_connection = True
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(announced))
        if answer.content_type.startswith("application/json"):
            self.send_header("X-GitHub-Media-Type", "github.v3; format=json")
        self.send_header("X-GitHub-Api-Version-Selected", "2022-11-28")
        self.send_header("ETag", f'W/"{hashlib.sha256(payload).hexdigest()}"')
        self.send_header("Cache-Control", "private, max-age=60, s-maxage=60")
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


# --------------------------------------------------------------------------- CLI


def load_seed(path: str) -> dict:
    """Read a seed description, with errors that name the file and line."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"seed is not valid JSON: {exc.msg}", path, exc.lineno) from exc
    except OSError as exc:
        raise DataError(f"cannot read seed: {exc.strerror}", path) from exc
    if not isinstance(data, dict):
        raise DataError("a seed must be a JSON object with 'repos', 'tokens', ...", path)
    return data


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 8765,
    seed_path: str | None = None,
    state_path: str | None = None,
    tokens: tuple[str, ...] | list[str] = (),
    ready: Callable[[GitHubSimulator], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run the simulator until Ctrl-C or ``stop`` is set (what ``revbot dev github-sim`` does)."""
    seed = load_seed(seed_path) if seed_path else None
    if seed is not None and seed_path:
        try:
            sim = GitHubSimulator(seed, host=host, port=port, state_path=state_path, tokens=list(tokens))
        except SimulatorError as exc:
            raise DataError(str(exc), seed_path) from exc
    else:
        sim = GitHubSimulator(host=host, port=port, state_path=state_path, tokens=list(tokens))
    sim.start()
    if ready is not None:
        ready(sim)
    stop = stop or threading.Event()
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


@click.command("github-sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (keep it loopback).")
@click.option("--port", default=8765, show_default=True, type=int, help="Port; 0 picks a free one.")
@click.option("--seed-file", "seed_path", type=click.Path(dir_okay=False), help="JSON seed description to load.")
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False),
    help="JSON file holding the state across restarts (written after every change).",
)
@click.option(
    "--accept-token", "tokens", multiple=True, help="Accept this token (repeatable); none given = accept any."
)
def github_sim_command(
    host: str, port: int, seed_path: str | None, state_path: str | None, tokens: tuple[str, ...]
) -> None:
    """Serve a GitHub REST API simulator for tests and the offline demo."""

    def ready(sim: GitHubSimulator) -> None:
        click.echo(f"GitHub simulator listening on {sim.url} (admin API under {sim.url}/_sim/); Ctrl-C stops it")

    serve_forever(host, port, seed_path, state_path, tokens, ready=ready)
