"""The one GitHub layer: every GitHub call revbot makes (harvest, the webhook worker) goes through
:class:`GitHubClient`, built on PyGithub's public API (``Github.requester`` for raw calls,
``GithubRetry`` for retries, ``Github.rate_limiting`` / ``get_rate_limit()`` for budgets) so auth,
transport and error classes are PyGithub's, while answers are plain JSON dicts so callers never
depend on PyGithub objects. Nothing private of PyGithub or urllib3 is touched (a test checks).

What it takes care of:

* auth: a token (``token=``, or ``REVBOT_GITHUB_TOKEN`` / ``GITHUB_TOKEN``) or a GitHub App
  (``app_id`` + private key + ``installation_id``, or ``REVBOT_GITHUB_APP_ID`` /
  ``REVBOT_GITHUB_APP_PRIVATE_KEY_FILE`` or ``REVBOT_GITHUB_APP_PRIVATE_KEY`` /
  ``REVBOT_GITHUB_APP_INSTALLATION_ID``, read through ``adapters.settings``): an RS256 JWT
  buys an installation token, cached until ``token_refresh_margin`` (5 minutes) before it expires;
* ``api_url``: api.github.com, GitHub Enterprise (``https://HOST/api/v3``) or the simulator;
* 100 items a page, following ``Link: rel="next"``;
* retries with exponential backoff on 5xx and connection errors (writes are not re-sent after a
  5xx or a lost answer: GitHub may have applied them), primary rate limits (sleep until the reset,
  or :class:`~bot.errors.GitHubError` when that is longer than ``max_rate_wait``), secondary limits
  (403/429: ``Retry-After``, else ``secondary_wait`` seconds). ``sleep=`` is injectable;
* answers that arrive broken (a body cut off mid-transfer, a 200 with incomplete JSON) are asked
  for again like a 5xx for reads, and never for writes;
* errors as :class:`~bot.errors.GitHubError` with a message a user can act on. No token ever
  appears in a repr, a log line, an exception or anything stored.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from github import Auth, Github, GithubIntegration
from github.GithubException import GithubException, RateLimitExceededExceedsMaxWait
from github.GithubRetry import GithubRetry
from github.Requester import Requester
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

from adapters.logs import RedactingFilter
from adapters.settings import DEFAULT_API_URL, Settings
from bot.errors import GitHubError, InvalidPositionError, RevbotError, ThreadsUnavailable, UsageError
from bot.secrets import scrub_text

log = logging.getLogger(__name__)

# PyGithub prints its retry notices through a handler of its own; make that one scrub too.
for _handler in logging.getLogger("github").handlers:
    if not any(isinstance(f, RedactingFilter) for f in _handler.filters):
        _handler.addFilter(RedactingFilter())

DIFF_MEDIA_TYPE = "application/vnd.github.v3.diff"
RAW_MEDIA_TYPE = "application/vnd.github.raw"
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
_REPO_NAME = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="([^"]+)"')
_REVIEW_COMMENT_KEYS = ("path", "body", "line", "side", "start_line", "start_side", "position", "subject_type")


class ReviewValidationError(GitHubError, InvalidPositionError):
    """GitHub refused a review (422), usually an inline comment outside the diff: the forge port's
    ``InvalidPositionError`` as GitHub gives it.

    ``errors`` is GitHub's list as parsed; ``failed_indexes`` the positions (in the ``comments``
    that were sent) of the comments GitHub named, or None when its answer does not say which, so a
    caller can drop exactly those and post again.
    """

    def __init__(self, message: str, errors: list, failed_indexes: list[int] | None):
        super().__init__(message, 422, failed_indexes)
        self.errors = errors


class GraphQLError(GitHubError):
    """GitHub's GraphQL API answered with errors (HTTP 200 and an ``errors`` list). ``types`` holds
    their types (``FORBIDDEN``, ``NOT_FOUND``...); ``forbidden`` says the credentials lack the right."""

    def __init__(self, message: str, errors: list):
        super().__init__(message, 400)
        self.errors = errors
        self.types = {str(e.get("type")) for e in errors if isinstance(e, dict) and e.get("type")}

    @property
    def forbidden(self) -> bool:
        return "FORBIDDEN" in self.types


class ThreadsRefused(GraphQLError, ThreadsUnavailable):
    """GraphQL answered that these credentials may not touch review threads (FORBIDDEN, or an
    error that makes threads unreadable): the port's ``ThreadsUnavailable``, still a GraphQLError."""


class ThreadsBlocked(GitHubError, ThreadsUnavailable):
    """The GraphQL endpoint itself refused the credentials (401/403, or 404 where GraphQL is off):
    the port's ``ThreadsUnavailable``."""


THREADS_QUERY = """
query($owner: String!, $name: String!, $number: Int!, $after: String) {
  repository(owner: $owner, name: $name) {
    pullRequest(number: $number) {
      reviewThreads(first: 50, after: $after) {
        nodes {
          id isResolved isOutdated path line originalLine diffSide
          resolvedBy { login }
          comments(first: 50) { nodes { fullDatabaseId body createdAt author { login } } }
        }
        pageInfo { hasNextPage endCursor }
      }
    }
  }
}
"""


class _Counter:
    """Requests put on the wire, shared by every copy of the retry policy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self) -> None:
        with self._lock:
            self.value += 1


class RevbotRetry(GithubRetry):
    """PyGithub's GithubRetry (403 rate limits: until the reset, or ``secondary_rate_wait``),
    shaped through urllib3's public hooks only:

    * ``is_retry``: a write is not re-sent after a 5xx (GitHub may have applied it);
    * ``increment``: nor after a connection that broke once it was sent; 429 counts as a rate
      limit; a Retry-After or reset longer than ``max_rate_limit_wait`` raises instead of waiting;
    * ``sleep``: every wait goes through the injectable ``sleep``; a 429 without Retry-After waits
      for the reset (budget spent) or ``secondary_rate_wait``;
    * ``get_backoff_time``: factor, 2*factor, 4*factor... from the first retry;
    * every response and connection error is counted (``request_count``).
    """

    def __init__(
        self, *, sleep: Callable[[float], Any] = time.sleep, counter: _Counter | None = None, **kwargs: Any
    ) -> None:
        self.sleep_fn = sleep
        self.counter = counter or _Counter()
        kwargs.setdefault("status_forcelist", list(range(500, 600)) + [429])
        super().__init__(**kwargs)

    def new(self, **kw: Any) -> RevbotRetry:
        kw.setdefault("sleep", self.sleep_fn)
        kw.setdefault("counter", self.counter)
        return super().new(**kw)  # type: ignore[return-value]

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        self.counter.add()  # urllib3 asks this once for every response it receives
        if status_code >= 500 and method.upper() not in _IDEMPOTENT:
            return False
        return super().is_retry(method, status_code, has_retry_after)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        if error is not None:
            self.counter.add()
            sent = isinstance(error, (ReadTimeoutError, ProtocolError))  # the request went out
            if sent and method and method.upper() not in _IDEMPOTENT:
                raise error  # the server may have acted on it: do not send it twice
        if response is not None and response.status in (403, 429):
            # Out of retries? Say so before GithubRetry reads the body to classify it, so the
            # body still reaches PyGithub and the final error names the rate limit.
            Retry.increment(self, method, url, response, error, _pool, _stacktrace)
            wait = self.rate_wait(response)
            if wait is not None and self.max_rate_limit_wait is not None and wait > self.max_rate_limit_wait:
                raise RateLimitExceededExceedsMaxWait(response.status, None, dict(response.headers), wait=wait)
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def rate_wait(self, response: Any) -> float | None:
        """What a rate-limited answer asks for: its Retry-After, or for a 429 without one the
        reset (budget spent) or ``secondary_rate_wait``; None when GithubRetry decides (403)."""
        retry_after = self.get_retry_after(response)
        if retry_after is not None or response.status != 429:
            return retry_after
        reset = response.headers.get("X-RateLimit-Reset")
        if response.headers.get("X-RateLimit-Remaining") == "0" and reset and reset.isdigit():
            return max(int(reset) - time.time(), 0) + 1
        return float(self.secondary_rate_wait)

    def get_backoff_time(self) -> float:
        """factor, 2*factor, 4*factor ... from the first retry (urllib3 skips the first wait)."""
        errors = sum(1 for entry in self.history if entry.redirect_location is None)
        if errors == 0:
            return 0.0
        return float(min(self.backoff_max, self.backoff_factor * (2 ** (errors - 1))))

    def sleep(self, response: Any = None) -> None:
        wait = self.rate_wait(response) if response is not None and response.status in (403, 429) else None
        if wait is None:
            wait = self.get_backoff_time()  # GithubRetry sets this to the rate-limit wait of a 403
        if wait > 0:
            self.sleep_fn(wait)


class _InstallationAuth(Auth.Auth):
    """A GitHub App installation token, fetched with the App's JWT and reused until
    ``margin`` seconds before it expires (PyGithub's own refreshes only 20 s before)."""

    def __init__(
        self,
        integration: GithubIntegration,
        app_id: str,
        installation_id: int,
        margin: float,
        clock: Callable[[], float],
    ):
        self._integration, self._app_id, self._installation_id = integration, app_id, installation_id
        self._margin, self._clock = margin, clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    @property
    def token_type(self) -> str:
        return "token"

    @property
    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - self._margin:
                self._fetch_token()
            return self._token  # type: ignore[return-value]

    def _fetch_token(self) -> None:
        try:
            grant = self._integration.get_access_token(self._installation_id)
        except GithubException as exc:
            message = _message_of(exc.data)
            if exc.status in (401, 403):
                raise GitHubError(
                    f"GitHub App {self._app_id} could not get a token for installation {self._installation_id} "
                    f"({exc.status} {message}); check the App id, its private key and the installation id",
                    exc.status,
                ) from exc
            if exc.status == 404:
                raise GitHubError(
                    f"installation {self._installation_id} of GitHub App {self._app_id} not found", 404
                ) from exc
            raise GitHubError(f"GitHub App token request failed ({exc.status} {message})", exc.status) from exc
        self._token = grant.token
        expires = grant.expires_at
        self._expires_at = expires.timestamp() if expires else self._clock() + 3600

    def __repr__(self) -> str:
        return f"_InstallationAuth(app={self._app_id}, installation={self._installation_id})"


def _message_of(data: Any) -> str:
    if isinstance(data, dict):
        return scrub_text(str(data.get("message") or "")) or ""
    return scrub_text(str(data or "")) or ""


class GitHubClient:
    """The GitHub client harvest and the webhook service share. Methods answer plain JSON dicts.

    Credentials are explicit: ``token``, else ``app_id`` (+ key + installation); with neither it goes
    anonymous (public data only, 60 requests an hour on github.com). It never reads the environment:
    ``from_settings`` builds one from the settings model (``adapters.settings.Settings``). Tests pass
    ``sleep=`` (waits are recorded, not slept), a short ``secondary_wait`` and ``min_write_interval=0``.
    """

    forge = "github"

    def __init__(
        self,
        token: str | None = None,
        *,
        api_url: str | None = None,
        app_id: int | str | None = None,
        private_key_path: str | os.PathLike | None = None,
        private_key: str | None = None,
        installation_id: int | str | None = None,
        max_retries: int = 5,
        backoff_factor: float = 1.0,
        max_rate_wait: float = 900.0,
        secondary_wait: float = 60.0,
        sleep: Callable[[float], Any] = time.sleep,
        timeout: int = 30,
        per_page: int = 100,
        min_write_interval: float = 1.0,
        token_refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.time,
        user_agent: str = "revbot",
    ) -> None:
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        if not re.match(r"https?://[^/]+", self.api_url):
            raise UsageError(f"GitHub API URL must start with http:// or https://, got {self.api_url!r}")
        self._prefix = urlsplit(self.api_url).path.rstrip("/")
        self.max_retries, self.max_rate_wait = max_retries, max_rate_wait
        self._sleep, self._backoff_factor = sleep, backoff_factor
        # what another installation's client is built with (with_installation)
        self._options = dict(
            api_url=self.api_url,
            max_retries=max_retries,
            backoff_factor=backoff_factor,
            max_rate_wait=max_rate_wait,
            secondary_wait=secondary_wait,
            sleep=sleep,
            timeout=timeout,
            per_page=per_page,
            min_write_interval=min_write_interval,
            token_refresh_margin=token_refresh_margin,
            clock=clock,
            user_agent=user_agent,
        )
        self._counter = _Counter()
        self._viewer: str | None = None
        self._viewer_asked = False
        self._retry = RevbotRetry(
            sleep=sleep,
            counter=self._counter,
            total=max_retries,
            backoff_factor=backoff_factor,
            secondary_rate_wait=secondary_wait,
            max_rate_limit_wait=max_rate_wait,
            raise_on_status=False,
        )
        self._settings = dict(
            timeout=int(timeout),
            user_agent=user_agent,
            per_page=per_page,
            retry=self._retry,
            seconds_between_requests=None,
            seconds_between_writes=min_write_interval or None,
        )
        self._app: tuple[str, str] | None = None  # (app id, PEM) kept for with_installation()
        self._token_margin, self._clock = token_refresh_margin, clock
        self._auth = self._credentials(token, app_id, private_key, private_key_path, installation_id)
        auth = self._auth
        self._gh = Github(auth=auth, base_url=self.api_url, **self._settings)  # type: ignore[arg-type]

    def _credentials(
        self,
        token: str | None,
        app_id: int | str | None,
        private_key: str | None,
        private_key_path: str | os.PathLike | None,
        installation_id: int | str | None,
    ) -> Auth.Auth | None:
        """PyGithub's auth for a token, else a GitHub App installation, else None (anonymous);
        ``_auth_label`` says which, for reprs and messages."""
        if token is not None:
            if not token.strip():
                raise UsageError("the GitHub token is empty")
            self._auth_label = "token"
            return Auth.Token(token.strip())
        if app_id is None:
            self._auth_label = "anonymous"
            return None
        pem = self._read_key(private_key, private_key_path)
        self._app = (str(app_id), pem)
        if installation_id is None:
            raise UsageError(
                "GitHub App auth needs an installation id (installation_id= or REVBOT_GITHUB_APP_INSTALLATION_ID)"
            )
        self._auth_label = f"app {app_id} installation {installation_id}"
        return self._installation_auth(str(app_id), pem, installation_id)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        token: str | None = None,
        api_url: str | None = None,
        installation_id: int | str | None = None,
        **options: Any,
    ) -> GitHubClient:
        """A client with the settings' credentials: ``token`` (a command-line --token) first, else the
        settings' token (REVBOT_GITHUB_TOKEN, GITHUB_TOKEN), else their GitHub App (REVBOT_GITHUB_APP_*;
        ``installation_id`` wins over theirs), else anonymous. ``api_url`` wins over the settings' root;
        ``options`` are the constructor's other keywords."""
        url = api_url or settings.github_api_url
        token = token or settings.secret("github_token")
        if token is None and settings.github_app_id is not None:
            return cls(
                api_url=url,
                app_id=settings.github_app_id,
                private_key=settings.secret("github_app_private_key"),
                private_key_path=settings.github_app_private_key_file,
                installation_id=installation_id or settings.github_app_installation_id,
                **options,
            )
        return cls(token, api_url=url, **options)

    # ----------------------------------------------------------------- set-up helpers

    @staticmethod
    def _read_key(private_key: str | None, path: str | os.PathLike | None) -> str:
        """The App's PEM key, checked now so a bad file fails here, naming the file, not its content."""
        from cryptography.hazmat.primitives import serialization

        where = "the private_key argument"
        if private_key is None:
            if path is None:
                raise UsageError(
                    "GitHub App auth needs a private key (private_key=, private_key_path=, or "
                    "REVBOT_GITHUB_APP_PRIVATE_KEY_FILE or REVBOT_GITHUB_APP_PRIVATE_KEY)"
                )
            where = os.fspath(path)
            try:
                with open(path, encoding="utf-8") as fh:
                    private_key = fh.read()
            except (OSError, UnicodeDecodeError) as exc:
                # from None on purpose: a UnicodeDecodeError holds the key file's bytes (its ``object``),
                # and no error report may carry a private key; the message says what went wrong
                raise UsageError(
                    f"cannot read the GitHub App private key {where}: {getattr(exc, 'strerror', None) or exc}"
                ) from None
        try:
            serialization.load_pem_private_key(private_key.encode(), password=None)
        except (ValueError, TypeError):
            # from None on purpose: the parser's error is about the key material, which must stay out of reports
            raise UsageError(
                f"{where} is not an unencrypted PEM private key (download it from the App's settings page)"
            ) from None
        return private_key

    def _installation_auth(self, app_id: str, pem: str, installation_id: int | str) -> _InstallationAuth:
        try:
            installation = int(installation_id)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"GitHub App installation id must be a number, got {installation_id!r}") from exc
        # token requests create nothing, so they skip the pause PyGithub puts between writes
        settings = dict(self._settings, seconds_between_writes=None)
        integration = GithubIntegration(auth=Auth.AppAuth(app_id, pem), base_url=self.api_url, **settings)
        return _InstallationAuth(integration, app_id, installation, self._token_margin, self._clock)

    def with_installation(self, installation_id: int | str) -> GitHubClient:
        """The same App, acting for another installation (the webhook payload names it)."""
        if self._app is None:
            raise UsageError("with_installation() needs a client built with GitHub App credentials")
        app_id, pem = self._app
        return GitHubClient(app_id=app_id, private_key=pem, installation_id=installation_id, **self._options)

    def __repr__(self) -> str:
        return f"GitHubClient(api_url={self.api_url!r}, auth={self._auth_label!r})"

    def close(self) -> None:
        self._gh.close()

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def anonymous(self) -> bool:
        """No credentials: public data only, and github.com allows 60 requests an hour."""
        return self._auth is None

    @property
    def request_count(self) -> int:
        """HTTP attempts made so far, retries and token requests included (for benchmarks)."""
        return self._counter.value

    @property
    def rate_limiting(self) -> tuple[int, int]:
        """(remaining, limit) of the core budget as the last answer's headers gave it; one
        ``GET /rate_limit`` (free) when no answer has come yet."""
        return self._call(lambda: self._gh.rate_limiting, "GET", what="reading the rate limit")

    # ----------------------------------------------------------------- transport

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        body: Any = None,
        headers: dict | None = None,
        what: str,
        not_found: str | None = None,
        on_422: Callable[[GithubException], GitHubError] | None = None,
    ) -> tuple[dict, Any]:
        log.debug("%s %s", method, path)
        return self._call(
            lambda: self._gh.requester.requestJsonAndCheck(
                method, path, parameters=params, headers=headers, input=body
            ),
            method,
            what=what,
            not_found=not_found,
            on_422=on_422,
        )

    def _call(
        self,
        fn: Callable[[], Any],
        method: str,
        *,
        what: str,
        not_found: str | None = None,
        on_422: Callable[[GithubException], GitHubError] | None = None,
    ) -> Any:
        """``fn()`` (one PyGithub call) with its errors turned into GitHubError, and a read whose
        answer arrived broken (cut off mid-transfer, or a 200 with incomplete JSON) asked again,
        up to ``max_retries`` times: urllib3 retries only what fails before the body is read."""
        broken = 0
        while True:
            try:
                return fn()
            except (
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
                json.JSONDecodeError,
            ) as exc:
                cause = (
                    "the body was cut off mid-transfer"
                    if isinstance(exc, requests.exceptions.RequestException)
                    else f"the JSON body is incomplete: {exc.msg.lower()}, character {exc.pos}"
                )
                if method.upper() not in _IDEMPOTENT:
                    raise GitHubError(
                        f"GitHub's answer while {what} arrived broken ({cause}); not re-sent: "
                        "GitHub may have applied the write"
                    ) from exc
                broken += 1
                if broken > self.max_retries:
                    times = f"{broken} times in a row" if broken > 1 else "and retries are off"
                    raise GitHubError(
                        f"GitHub's answer while {what} arrived broken {times} ({cause}); "
                        f"something between here and {self.api_url} cuts answers off"
                    ) from exc
                log.warning("GitHub's answer while %s arrived broken (%s); asking again", what, cause)
                self._sleep(self._backoff_factor * (2 ** (broken - 1)))
            except RevbotError:
                raise  # e.g. the installation-token refresh, already explained
            except RateLimitExceededExceedsMaxWait as exc:
                raise GitHubError(
                    f"GitHub rate limit while {what}: the wait ({exc.wait:.0f} s) is longer than max_rate_wait "
                    f"({self.max_rate_wait:.0f} s); try again later or raise max_rate_wait",
                    exc.status or 403,
                ) from exc
            except GithubException as exc:
                if exc.status == 422 and on_422 is not None:
                    raise on_422(exc) from exc
                raise self._error(exc, what, not_found, method) from exc
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, MaxRetryError) as exc:
                tail = (
                    f"after {self.max_retries} retries"
                    if method.upper() in _IDEMPOTENT
                    else "a write is re-sent only when it surely never arrived"
                )
                raise GitHubError(
                    f"cannot reach {self.api_url}: {_reason(exc)} (gave up while {what}; {tail})"
                ) from exc
            except requests.exceptions.RequestException as exc:
                raise GitHubError(f"request to {self.api_url} failed while {what}: {_reason(exc)}") from exc

    def _error(self, exc: GithubException, what: str, not_found: str | None, method: str) -> GitHubError:
        status, message = exc.status, _message_of(exc.data)
        if status == 401:
            return GitHubError(
                f"GitHub rejected the credentials ({self._auth_label}) at {self.api_url}: "
                f"401 {message or 'Bad credentials'}; check the token or the App key and id",
                401,
            )
        if status in (403, 429) and Requester.isRateLimitError(message):
            reset = (exc.headers or {}).get("x-ratelimit-reset")
            when = ""
            if reset and str(reset).isdigit():
                when = f"; it resets at {datetime.fromtimestamp(int(reset), UTC):%Y-%m-%d %H:%M:%S} UTC"
            return GitHubError(f"GitHub rate limit exceeded while {what} (retries spent): {message}{when}", status)
        if status == 403:
            return GitHubError(
                f"no permission for {what}: 403 {message}; the credentials ({self._auth_label}) lack that permission",
                403,
            )
        if status == 404:
            return GitHubError(not_found or f"not found while {what} (404)", 404)
        if status == 422:
            return GitHubError(f"GitHub refused {what}: 422 {message} {_errors_text(exc.data)}".rstrip(), 422)
        if status >= 500:
            tail = (
                f"after {self.max_retries} retries"
                if method.upper() in _IDEMPOTENT
                else "not retried: GitHub may have applied the write"
            )
            return GitHubError(f"GitHub API error {status} while {what}: {message or 'server error'} ({tail})", status)
        return GitHubError(f"GitHub API error {status} while {what}: {message}", status)

    def _paged(self, path: str, params: dict | None, *, what: str, not_found: str | None = None) -> Iterator[dict]:
        url: str | None = path
        query: dict | None = dict(params or {}, per_page=self._settings["per_page"])
        while url:
            headers, data = self._request("GET", url, params=query, what=what, not_found=not_found)
            if isinstance(data, dict) and "items" in data:  # search-style envelopes
                data = data["items"]
            if data is not None and not isinstance(data, list):
                raise GitHubError(f"unexpected answer while {what}: expected a list, got {type(data).__name__}")
            yield from data or []
            url, query = self._next_page(headers), None

    def _next_page(self, headers: dict) -> str | None:
        """The rel="next" link as a path the requester accepts (GHE prefix removed)."""
        for target, rel in _LINK.findall(headers.get("link") or ""):
            if rel == "next":
                parts = urlsplit(target)
                path = parts.path
                if self._prefix and path.startswith(self._prefix + "/"):
                    path = path[len(self._prefix) :]
                return path + (f"?{parts.query}" if parts.query else "")
        return None

    @staticmethod
    def _repo(repo: str) -> str:
        if not isinstance(repo, str) or not _REPO_NAME.fullmatch(repo):
            raise UsageError(f"a repository is written OWNER/REPO, got {repo!r}")
        return repo

    def _missing_repo(self, repo: str) -> str:
        return f"repository {repo} not found or not visible to this token ({self._auth_label})"

    def _missing_pull(self, repo: str, number: int) -> str:
        return f"pull request {repo}#{number} not found (or repository {repo} not visible to this token)"

    # ----------------------------------------------------------------- API

    def get_repo(self, full_name: str) -> dict:
        repo = self._repo(full_name)
        return self._request("GET", f"/repos/{repo}", what=f"reading {repo}", not_found=self._missing_repo(repo))[1]

    def iter_pulls(
        self, repo: str, state: str = "all", *, sort: str = "created", direction: str = "asc"
    ) -> Iterator[dict]:
        repo = self._repo(repo)
        yield from self._paged(
            f"/repos/{repo}/pulls",
            {"state": state, "sort": sort, "direction": direction},
            what=f"listing pull requests of {repo}",
            not_found=self._missing_repo(repo),
        )

    def get_pull(self, repo: str, number: int) -> dict:
        repo = self._repo(repo)
        return self._request(
            "GET",
            f"/repos/{repo}/pulls/{int(number)}",
            what=f"reading {repo}#{number}",
            not_found=self._missing_pull(repo, number),
        )[1]

    def pull_diff(self, repo: str, number: int) -> str:
        """The PR's unified diff as GitHub renders it (``.diff`` media type)."""
        repo = self._repo(repo)
        try:
            _, data = self._request(
                "GET",
                f"/repos/{repo}/pulls/{int(number)}",
                headers={"Accept": DIFF_MEDIA_TYPE},
                what=f"reading the diff of {repo}#{number}",
                not_found=self._missing_pull(repo, number),
            )
        except GitHubError as exc:
            if exc.status == 406:
                raise GitHubError(
                    f"the diff of {repo}#{number} is too large for GitHub to render; use pull_files() instead", 406
                ) from exc
            raise
        if data is None:
            return ""
        return data.get("data", "") if isinstance(data, dict) else str(data)

    def pull_files(self, repo: str, number: int) -> list[dict]:
        repo = self._repo(repo)
        return list(
            self._paged(
                f"/repos/{repo}/pulls/{int(number)}/files",
                None,
                what=f"listing files of {repo}#{number}",
                not_found=self._missing_pull(repo, number),
            )
        )

    def iter_review_comments(
        self, repo: str, since: datetime | str | None = None, sort: str = "updated", direction: str = "asc"
    ) -> Iterator[dict]:
        """Every review comment of the repository (``/pulls/comments``), oldest change first by default."""
        repo = self._repo(repo)
        params: dict[str, Any] = {"sort": sort, "direction": direction}
        if since is not None:
            params["since"] = _iso(since)
        yield from self._paged(
            f"/repos/{repo}/pulls/comments",
            params,
            what=f"listing review comments of {repo}",
            not_found=self._missing_repo(repo),
        )

    def pull_review_comments(self, repo: str, number: int) -> list[dict]:
        repo = self._repo(repo)
        return list(
            self._paged(
                f"/repos/{repo}/pulls/{int(number)}/comments",
                None,
                what=f"listing review comments of {repo}#{number}",
                not_found=self._missing_pull(repo, number),
            )
        )

    def list_reviews(self, repo: str, number: int) -> list[dict]:
        repo = self._repo(repo)
        return list(
            self._paged(
                f"/repos/{repo}/pulls/{int(number)}/reviews",
                None,
                what=f"listing reviews of {repo}#{number}",
                not_found=self._missing_pull(repo, number),
            )
        )

    def create_review(
        self,
        repo: str,
        number: int,
        *,
        commit_id: str,
        body: str,
        event: str = "COMMENT",
        comments: list[dict] | tuple = (),
    ) -> dict:
        """Post one review with all inline comments (one call: no burst of single comments).

        Raises :class:`ReviewValidationError` on 422, naming the failing comments where GitHub does.
        """
        repo = self._repo(repo)
        sent = [{k: c[k] for k in _REVIEW_COMMENT_KEYS if c.get(k) is not None} for c in comments]
        payload: dict[str, Any] = {"commit_id": commit_id, "body": body, "event": event, "comments": sent}

        def refused(exc: GithubException) -> GitHubError:
            errors = (exc.data.get("errors") or []) if isinstance(exc.data, dict) else []
            failed = _failed_indexes(errors, sent)
            named = f" (comments {', '.join(map(str, failed))})" if failed else ""
            return ReviewValidationError(
                f"GitHub refused the review on {repo}#{number}: 422 "
                f"{_message_of(exc.data)}{named} {_errors_text(exc.data)}".rstrip(),
                errors,
                failed,
            )

        return self._request(
            "POST",
            f"/repos/{repo}/pulls/{int(number)}/reviews",
            body=payload,
            what=f"posting a review on {repo}#{number}",
            not_found=self._missing_pull(repo, number),
            on_422=refused,
        )[1]

    def get_file_text(self, repo: str, path: str, ref: str | None = None) -> str | None:
        """A file's text at ``ref`` (branch or sha; the default branch when None); None when absent."""
        repo = self._repo(repo)
        params = {"ref": ref} if ref else None
        url = f"/repos/{repo}/contents/{quote(path.lstrip('/'))}"
        what = f"reading {path} at {ref or 'the default branch'} of {repo}"
        try:
            _, data = self._request("GET", url, params=params, what=what)
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise
        if isinstance(data, list) or not isinstance(data, dict) or data.get("type", "file") != "file":
            raise GitHubError(f"{path} at {ref or 'the default branch'} of {repo} is not a file")
        if data.get("encoding") == "base64":
            return base64.b64decode(data.get("content") or "").decode("utf-8", errors="replace")
        _, raw = self._request("GET", url, params=params, headers={"Accept": RAW_MEDIA_TYPE}, what=what)
        return raw.get("data", "") if isinstance(raw, dict) else ("" if raw is None else str(raw))

    def comment_reactions(self, repo: str, comment_id: int, *, number: int | None = None) -> list[dict]:
        """``number`` is not needed on GitHub (comment ids are per repository); the forge port has it."""
        repo = self._repo(repo)
        return list(
            self._paged(
                f"/repos/{repo}/pulls/comments/{int(comment_id)}/reactions",
                None,
                what=f"listing reactions to comment {comment_id} in {repo}",
                not_found=f"review comment {comment_id} not found in {repo}",
            )
        )

    def issue_comments(self, repo: str, number: int) -> list[dict]:
        repo = self._repo(repo)
        return list(
            self._paged(
                f"/repos/{repo}/issues/{int(number)}/comments",
                None,
                what=f"listing comments of {repo}#{number}",
                not_found=self._missing_pull(repo, number),
            )
        )

    def create_issue_comment(self, repo: str, number: int, body: str) -> dict:
        repo = self._repo(repo)
        return self._request(
            "POST",
            f"/repos/{repo}/issues/{int(number)}/comments",
            body={"body": body},
            what=f"commenting on {repo}#{number}",
            not_found=self._missing_pull(repo, number),
        )[1]

    def compare(self, repo: str, base: str, head: str) -> dict:
        """``GET /repos/{repo}/compare/{base}...{head}``: ``status`` (ahead, behind, diverged,
        identical), ``ahead_by``/``behind_by`` and ``files`` with their patches. A 404 means one of
        the commits is not there (any more): a force-push dropped it."""
        repo = self._repo(repo)
        path = f"/repos/{repo}/compare/{quote(base, safe='')}...{quote(head, safe='')}"
        return self._request(
            "GET",
            path,
            what=f"comparing {base[:12]}...{head[:12]} in {repo}",
            not_found=f"{repo} has no commit {base[:12]} or {head[:12]} (force-pushed away?)",
        )[1]

    def reply_to_review_comment(self, repo: str, number: int, comment_id: int, body: str) -> dict:
        """A reply in the thread of review comment ``comment_id``."""
        repo = self._repo(repo)
        return self._request(
            "POST",
            f"/repos/{repo}/pulls/{int(number)}/comments/{int(comment_id)}/replies",
            body={"body": body},
            what=f"replying to comment {comment_id} on {repo}#{number}",
            not_found=f"review comment {comment_id} not found on {repo}#{number}",
        )[1]

    def collaborator_permission(self, repo: str, login: str) -> str:
        """``admin``, ``write``, ``read`` or ``none``: what ``login`` may do in ``repo`` (GitHub
        folds maintain into write and triage into read here). An unknown login is ``none``."""
        repo = self._repo(repo)
        try:
            data = self._request(
                "GET",
                f"/repos/{repo}/collaborators/{quote(login, safe='')}/permission",
                what=f"reading {login}'s permission on {repo}",
            )[1]
        except GitHubError as exc:
            if exc.status == 404:
                return "none"
            raise
        return str((data or {}).get("permission") or "none")

    def react_to_issue_comment(self, repo: str, comment_id: int, content: str, *, number: int | None = None) -> dict:
        """Add a reaction (``+1``, ``eyes``, ``confused``...) to a conversation comment (``number``:
        unused on GitHub, where comment ids are per repository)."""
        repo = self._repo(repo)
        return self._request(
            "POST",
            f"/repos/{repo}/issues/comments/{int(comment_id)}/reactions",
            body={"content": content},
            what=f"reacting to comment {comment_id} in {repo}",
            not_found=f"comment {comment_id} not found in {repo}",
        )[1]

    # ----------------------------------------------------------------- GraphQL

    def graphql(self, query: str, variables: dict[str, Any] | None = None, *, what: str = "querying GraphQL") -> dict:
        """The ``data`` of one GraphQL request (PyGithub's ``Requester.graphql_query``: the same auth,
        retries and errors). Raises :class:`GraphQLError` when GitHub answers with errors, and
        GitHubError (403) when the endpoint itself refuses the credentials."""
        _, data = self._graphql_call(lambda: self._gh.requester.graphql_query(query, variables or {}), what)
        return (data or {}).get("data") or {}

    def _graphql_call(self, fn: Callable[[], Any], what: str) -> Any:
        def run() -> Any:
            try:
                return fn()
            except GithubException as exc:
                errors = exc.data.get("errors") if isinstance(exc.data, dict) else None
                if exc.status == 400 and isinstance(errors, list):
                    text = "; ".join(
                        scrub_text(str(e.get("message") if isinstance(e, dict) else e)) or "" for e in errors[:3]
                    )
                    raise GraphQLError(f"GitHub's GraphQL API refused {what}: {text}", errors) from exc
                raise

        return self._call(run, "POST", what=what)

    def viewer_login(self) -> str | None:
        """The login these credentials act as (a GitHub App installation: ``slug[bot]``), or None
        when GitHub will not say; asked once: GraphQL's ``viewer``, else ``GET /user`` (tokens)."""
        if not self._viewer_asked:
            self._viewer_asked = True
            try:
                self._viewer = str(
                    self.graphql("query { viewer { login } }", what="asking who the bot is")["viewer"]["login"]
                )
            except (GitHubError, KeyError, TypeError):
                try:
                    self._viewer = str(self.get_authenticated_user().get("login") or "") or None
                except GitHubError:
                    self._viewer = None
        return self._viewer

    def review_threads(self, repo: str, number: int) -> list[dict]:
        """Every review thread of a pull request (GraphQL): ``id``, ``isResolved``, ``isOutdated``,
        ``path``, ``line``, ``resolvedBy`` and its ``comments`` (``fullDatabaseId``: the REST id as a string,
        since review comment ids outgrew GraphQL's 32-bit ``databaseId``; ``body``, ``author``).

        Raises ``ThreadsUnavailable`` (``ThreadsRefused``, ``ThreadsBlocked``) when GraphQL answers
        with errors or refuses the credentials (401/403/404): callers rebuild threads from REST."""
        try:
            return self._thread_pages(repo, number)
        except GraphQLError as exc:
            raise ThreadsRefused(str(exc), exc.errors) from exc
        except GitHubError as exc:
            if exc.status in (401, 403, 404):
                raise ThreadsBlocked(str(exc), exc.status) from exc
            raise

    def _thread_pages(self, repo: str, number: int) -> list[dict]:
        owner, name = self._repo(repo).split("/")
        out: list[dict] = []
        after = None
        while True:
            data = self.graphql(
                THREADS_QUERY,
                {"owner": owner, "name": name, "number": int(number), "after": after},
                what=f"listing review threads of {repo}#{number}",
            )
            pull = ((data.get("repository") or {}).get("pullRequest")) or {}
            threads = pull.get("reviewThreads") or {}
            out += [t for t in threads.get("nodes") or [] if t]
            page = threads.get("pageInfo") or {}
            if not page.get("hasNextPage") or not page.get("endCursor"):
                return out
            after = page["endCursor"]

    def resolve_review_thread(self, thread_id: str) -> bool:
        """Resolve one review thread (GraphQL ``resolveReviewThread``); whether it is resolved now.
        Raises ``ThreadsUnavailable`` when the credentials may not (GraphQL FORBIDDEN: ``ThreadsRefused``;
        the endpoint refusing them, 401/403: ``ThreadsBlocked``)."""
        try:
            _, result = self._graphql_call(
                lambda: self._gh.requester.graphql_named_mutation(
                    "resolveReviewThread", {"threadId": thread_id}, "thread { id isResolved }"
                ),
                f"resolving review thread {thread_id}",
            )
        except GraphQLError as exc:
            if exc.forbidden and not isinstance(exc, ThreadsRefused):
                raise ThreadsRefused(str(exc), exc.errors) from exc
            raise
        except GitHubError as exc:
            if exc.status in (401, 403):
                raise ThreadsBlocked(str(exc), exc.status) from exc
            raise
        return bool(((result or {}).get("thread") or {}).get("isResolved"))

    def rate_limit(self) -> dict:
        """The core budget: ``{"remaining", "limit", "reset"}`` (reset as a Unix time)."""
        overview = self._call(self._gh.get_rate_limit, "GET", what="reading the rate limit")
        core = overview.resources.core
        return {"remaining": core.remaining, "limit": core.limit, "reset": int(core.reset.timestamp())}

    def get_authenticated_user(self) -> dict:
        """``GET /user`` (a token's user; GitHub answers 403 to App installation tokens)."""
        return self._request("GET", "/user", what="reading the authenticated user")[1]


def _iso(value: datetime | str) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _reason(exc: BaseException) -> str:
    """A short cause ("Connection refused") from requests' nested connection errors."""
    text = str(exc)
    inner = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", None)
    if reason is not None:
        text = str(reason)
    m = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if m:
        return m.group(1).strip()
    if "timed out" in text.lower():
        return "timed out"
    return scrub_text(text[:200]) or type(exc).__name__


def _errors_text(data: Any) -> str:
    errors = data.get("errors") if isinstance(data, dict) else None
    if not errors:
        return ""
    parts = []
    for err in errors[:5]:
        if isinstance(err, dict):
            where = " ".join(str(err[k]) for k in ("path", "line", "side") if err.get(k) is not None)
            parts.append((err.get("message") or err.get("code") or "invalid") + (f" [{where}]" if where else ""))
        else:
            parts.append(str(err))
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "- " + "; ".join(scrub_text(p) or "" for p in parts) + more


def _failed_indexes(errors: list, sent: list[dict]) -> list[int] | None:
    """Which sent comments GitHub's 422 errors name: an explicit index, a ``comments[N]`` field, or
    a (path, line) that matches; None when some error names no comment."""
    found: set[int] = set()
    for err in errors:
        index = None
        if isinstance(err, dict):
            if isinstance(err.get("index"), int):
                index = err["index"]
            else:
                m = re.search(r"comments\[(\d+)\]", f"{err.get('field', '')} {err.get('message', '')}")
                if m:
                    index = int(m.group(1))
                elif err.get("path") is not None and err.get("line") is not None:
                    matches = [
                        i for i, c in enumerate(sent) if c.get("path") == err["path"] and c.get("line") == err["line"]
                    ]
                    if matches:
                        found.update(matches)
                        continue
        else:
            m = re.search(r"comments\[(\d+)\]", str(err))
            index = int(m.group(1)) if m else None
        if index is None or not 0 <= index < len(sent):
            return None
        found.add(index)
    return sorted(found) if found else None
