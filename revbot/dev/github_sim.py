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

The simulator is split by concern; this module assembles ``GitHubSimulator`` from the parts and
serves it over HTTP: ``github_sim_state`` (the state, seeding and the Python admin API),
``github_sim_faults`` (faults, rate limits, tokens and App JWTs), ``github_sim_render`` (GitHub's
JSON shapes), ``github_sim_routes`` (the REST endpoints and their route table), ``github_sim_base``
(what they share: error and answer shapes, ids, times).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import click

from bot.diff import FileDiff
from bot.errors import DataError, RevbotError
from revbot.dev.github_sim_base import (
    TRANSFER_FAULTS,
    Answer,
    Context,
    HTTPError,
    SimulatorError,
    not_found,
)
from revbot.dev.github_sim_faults import SimFaults
from revbot.dev.github_sim_render import SimRenderer
from revbot.dev.github_sim_routes import Route, SimRoutes, match_route
from revbot.dev.github_sim_state import SimState

# --------------------------------------------------------------------------- the simulator


class GitHubSimulator(SimState, SimFaults, SimRenderer, SimRoutes):
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

    # ----------------------------------------------------------------- request pipeline

    def _handle(self, method: str, raw_path: str, headers: Any, raw_body: bytes, own: str) -> Answer | None:
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
        route, params = match_route(method, path)
        template = f"{method} {route.template}" if route else f"{method} (unmatched)"
        rid = "{:04X}:{:04X}:{:06X}:{:06X}:{:08X}".format(*(secrets.randbits(b) for b in (16, 16, 24, 24, 32)))
        with self._lock:
            self._stats["total"] += 1
            self._stats["by_route"][template] = self._stats["by_route"].get(template, 0) + 1
            fault = self._take_fault(method, path)
            if fault is not None:
                self._stats["faults_served"] += 1
        answer: Answer | None
        if fault is not None and fault["kind"] not in TRANSFER_FAULTS:
            answer = self._fault_answer(fault, rid)
        else:
            try:
                body = self._decode_body(raw_body, headers)
                ctx = Context(method, path, query, headers, body, own + prefix, own)
                with self._lock:
                    answer = self._dispatch(route, params, ctx)
            except HTTPError as err:
                answer = Answer(err.status, err.body(), dict(err.headers))
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
            raise HTTPError(400, "Problems parsing JSON") from exc

    # ----------------------------------------------------------------- dispatch

    def _dispatch(self, route: Route | None, params: dict, ctx: Context) -> Answer:
        if route is None:
            raise not_found()
        self._authenticate(ctx, route)
        if route.write and ctx.identity and ctx.identity.get("permission") == "read":
            raise HTTPError(403, "Resource not accessible by personal access token")
        if route.spends:
            self._spend(ctx.identity)
        return route.handler(self, ctx, **params)

    # ----------------------------------------------------------------- admin endpoints

    def _admin(self, method: str, path: str, query: dict, raw: bytes, own: str) -> Answer:
        try:
            body = json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return Answer(400, {"message": f"admin request body is not JSON: {exc}"})
        try:
            if (method, path) == ("POST", "/_sim/seed"):
                self.seed(body)
                return Answer(200, {"repos": sorted(self._state["repos"])})
            if (method, path) == ("POST", "/_sim/pulls"):
                body = dict(body)
                repo = body.pop("repo", None)
                if not repo:
                    raise SimulatorError("'repo' (OWNER/NAME) is required")
                return Answer(201, self.add_pull(repo, api_url=own, **body))
            if (method, path) == ("POST", "/_sim/comments"):
                return Answer(
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
                return Answer(
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
                return Answer(
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
                return Answer(
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
                return Answer(201, self.inject(**body))
            if (method, path) == ("DELETE", "/_sim/faults"):
                self.clear_faults()
                return Answer(200, {"faults": 0})
            if (method, path) == ("POST", "/_sim/rate-limit"):
                return Answer(200, self.set_rate_limit(**body))
            if (method, path) == ("GET", "/_sim/stats"):
                return Answer(200, self.stats())
            if (method, path) == ("POST", "/_sim/reset-stats"):
                self.reset_stats()
                return Answer(200, self.stats())
            if (method, path) == ("GET", "/_sim/state"):
                return Answer(200, self.state)
        except (RevbotError, TypeError, ValueError) as exc:
            return Answer(422, {"message": str(exc)})
        return Answer(404, {"message": f"no admin endpoint {method} {path}"})


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
            answer = Answer(500, {"message": f"simulator error: {type(exc).__name__}: {exc}"})
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


@click.command("github-sim", context_settings={"help_option_names": ["-h", "--help"]})
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
