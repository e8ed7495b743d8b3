"""Who may see the operator pages, and what a browser may do with them.

* The pages exist only when a token is configured (REVBOT_UI_TOKEN or REVBOT_UI_TOKEN_FILE).
* The login form exchanges the token (compared in constant time) for Flask's signed session
  cookie: ``HttpOnly``, ``SameSite=Strict``, path ``/ui``, ``Secure`` when the request came over
  HTTPS (directly or, as a proxy says, ``X-Forwarded-Proto: https``), valid for 12 hours. The
  signing key is derived from the token, so every web process agrees on it and changing the token
  logs everybody out.
* Failed logins are rate-limited per client address and in total (``LoginLimiter``).
* Every POST must carry the session's CSRF token and must not come from another site (``Origin``
  and ``Sec-Fetch-Site``); actions also need an explicit confirmation (``webhooks.ui.views``).
* Every page is sent with a Content-Security-Policy that allows no script at all, and is not cached.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Request, request, session
from flask.sessions import SecureCookieSessionInterface

SESSION_HOURS = 12
CSRF_FIELD = "csrf_token"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send "Origin: null"
    "Cache-Control": "no-store",
}


def session_key(token: str) -> bytes:
    """The cookie-signing key: derived from the token, the same in every web process."""
    return hmac.new(token.encode(), b"revbot operator pages session", hashlib.sha256).digest()


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(token.encode()).digest())


def is_https(req: Request) -> bool:
    return req.is_secure or req.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower() == "https"


class UiSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, opened only under /ui (the webhook never reads a cookie) and
    marked Secure whenever the request came over HTTPS."""

    def open_session(self, app: Flask, request: Request) -> Any:
        if not request.path.startswith("/ui"):
            return self.null_session_class()
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        return is_https(request)


def configure(app: Flask, token: str) -> None:
    app.secret_key = session_key(token)
    app.session_interface = UiSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="revbot_ui",
        SESSION_COOKIE_PATH="/ui",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
    )


def csrf_token() -> str:
    """This session's CSRF token (made on first use)."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return str(session[CSRF_FIELD])


def csrf_ok(form_value: str | None) -> bool:
    expected = session.get(CSRF_FIELD)
    return bool(expected and form_value) and hmac.compare_digest(str(expected), str(form_value))


def cross_site(req: Request) -> str | None:
    """Why a state-changing request must be refused as coming from another site, or None."""
    fetch_site = req.headers.get("Sec-Fetch-Site")
    if fetch_site and fetch_site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {fetch_site}"
    origin = req.headers.get("Origin")
    if origin:
        own = urlsplit(req.host_url)
        given = urlsplit(origin)
        if (given.scheme, given.netloc) != (own.scheme, own.netloc) and not (
            is_https(req) and given.scheme == "https" and given.netloc == own.netloc
        ):
            return "Origin is another site"
    return None


def add_headers(response: Any) -> Any:
    for name, value in HEADERS.items():
        response.headers[name] = value
    return response


class LoginLimiter:
    """Failed logins allowed per client address and in total within ``window_s``. Kept in each web
    process's memory: with N gunicorn processes an address gets at most N times the limit."""

    def __init__(self, per_client: int = 5, total: int = 50, window_s: float = 300.0, clock: Any = time.monotonic):
        self.per_client, self.total, self.window_s, self.clock = per_client, total, window_s, clock
        self._failures: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def _trim(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window_s:
            times.popleft()

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0: it may now."""
        now = self.clock()
        with self._lock:
            mine = self._failures.get(client, deque())
            self._trim(mine, now)
            self._trim(self._all, now)
            waits = []
            if len(mine) >= self.per_client:
                waits.append(mine[0] + self.window_s - now)
            if len(self._all) >= self.total:
                waits.append(self._all[0] + self.window_s - now)
            return max(1, int(max(waits)) + 1) if waits else 0

    def failed(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > 10_000:  # many addresses: forget the idle ones
                self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > now - self.window_s}
            self._failures.setdefault(client, deque()).append(now)
            self._all.append(now)
