"""The GitHub simulator's faults, rate limits and authentication: injected failures, the primary
rate budget and its headers, tokens, and GitHub App JWTs."""

from __future__ import annotations

import copy
import re
import time

from revbot.dev.github_sim_base import (
    DEFAULT_LOGIN,
    DOCS,
    SECONDARY_MESSAGE,
    TRANSFER_FAULTS,
    Answer,
    Context,
    HTTPError,
    SimulatorError,
    digest,
)
from revbot.dev.github_sim_routes import Route


class SimFaults:
    """Faults, rate limits and authentication of ``GitHubSimulator``, which mixes this class in; its
    methods share the simulator's state and lock."""

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
        kinds = ("error", "secondary", "primary", "429", "disconnect", *TRANSFER_FAULTS)
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

    def _fault_answer(self, fault: dict, rid: str) -> Answer | None:
        kind = fault["kind"]
        if kind == "disconnect":
            return None
        headers: dict[str, str] = {}
        if fault["retry_after"] is not None:
            headers["Retry-After"] = str(int(fault["retry_after"]))
        if kind == "error":
            status = fault["status"] or 500
            return Answer(status, {"message": fault["message"] or "Server Error", "documentation_url": DOCS}, headers)
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
            return Answer(
                fault["status"] or 403,
                {
                    "message": message,
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                },
                headers,
            )
        status = 429 if kind == "429" else (fault["status"] or 403)
        doc = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
        return Answer(
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
            raise HTTPError(
                403,
                f"API rate limit exceeded for {who}.",
                doc="https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
            )
        rate["used"] += 1

    # ----------------------------------------------------------------- auth

    def _authenticate(self, ctx: Context, route: Route) -> None:
        header = ctx.headers.get("Authorization") or ""
        scheme, _, credential = header.strip().partition(" ")
        credential = credential.strip()
        if route.jwt:
            if scheme.lower() != "bearer" or not credential:
                raise HTTPError(401, "A JSON web token could not be decoded")
            ctx.identity = self._check_jwt(credential)
            return
        if header and scheme.lower() not in ("token", "bearer"):
            raise HTTPError(401, "Bad credentials")
        if credential.count(".") == 2 and credential.startswith("eyJ"):
            raise HTTPError(401, "A JSON web token cannot be used here; use an installation token")
        tokens = self._state["tokens"]
        if not credential:
            if tokens:
                raise HTTPError(401, "Requires authentication")
            ctx.identity = None
            return
        entry = tokens.get(digest(credential))
        if entry is None:
            if tokens:
                raise HTTPError(401, "Bad credentials")
            ctx.identity = self._user(DEFAULT_LOGIN) | {"permission": "write"}
            return
        if entry.get("expires_at") and entry["expires_at"] < time.time():
            raise HTTPError(401, "Bad credentials")
        ctx.identity = dict(entry)

    def _check_jwt(self, token: str) -> dict:
        import jwt  # PyJWT, a revbot dependency

        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
        except jwt.PyJWTError as exc:
            raise HTTPError(401, "A JSON web token could not be decoded") from exc
        if header.get("alg") != "RS256":
            raise HTTPError(401, f"'alg' must be RS256, got {header.get('alg')!r}")
        for claim in ("iat", "exp", "iss"):
            if claim not in claims:
                raise HTTPError(401, f"Missing '{claim}' claim")
        now = time.time()
        if not isinstance(claims["exp"], (int, float)) or claims["exp"] < now:
            raise HTTPError(
                401,
                "'Expiration time' claim ('exp') must be a numeric value representing the "
                "future time at which the assertion expires",
            )
        if not isinstance(claims["iat"], (int, float)) or claims["iat"] > now + 60:
            raise HTTPError(
                401, "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
            )
        if claims["exp"] - claims["iat"] > 660:
            raise HTTPError(401, "'Expiration time' claim ('exp') is too far in the future")
        apps = self._state["apps"]
        app = apps.get(str(claims["iss"]))
        if apps and app is None:
            raise HTTPError(401, f"Integration not found for 'iss' {claims['iss']!r}")
        if app and app.get("public_key"):
            try:
                jwt.decode(token, app["public_key"], algorithms=["RS256"], options={"verify_exp": False})
            except jwt.PyJWTError as exc:
                raise HTTPError(401, "A JSON web token could not be decoded (signature does not verify)") from exc
        app = app or {
            "id": int(claims["iss"]) if str(claims["iss"]).isdigit() else 0,
            "slug": f"app-{claims['iss']}",
            "installations": [],
            "token_ttl": 3600,
        }
        return {"app": app}
