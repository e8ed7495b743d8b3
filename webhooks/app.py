"""The Flask app factory. The view does three things: check, queue, answer.

``POST /webhook``  size cap (413) -> signature over the raw body (401, nothing else happens) ->
                   JSON (400) -> route -> record + queue -> answer, in milliseconds
``GET /healthz``   {"status": "ok" | "degraded" | "unavailable"} for anyone; the details (queue
                   depth, jobs, model version and errors) only to a reader of /metrics
``GET /metrics``   Prometheus text, for the bearer of REVBOT_METRICS_TOKEN or, when no token is
                   set, for loopback clients that did not come through a proxy
``/ui/``           the operator's pages (``webhooks.ui``), only when REVBOT_UI_TOKEN is set

Production: ``revbot serve`` runs this app under gunicorn with the queue workers beside it; a web
tier of its own: ``gunicorn 'webhooks.app:create_app()'`` (settings from REVBOT_*) plus
``revbot worker`` wherever the workers run.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import ClientDisconnected

from bot.errors import RevbotError
from bot.secrets import scrub_text
from webhooks.events import BadDelivery, Delivery, Outcome, Router, build_router, header, parse_delivery
from webhooks.gitlab_events import EVENT_HEADER as GITLAB_EVENT
from webhooks.gitlab_events import EVENTS as GITLAB_EVENTS
from webhooks.gitlab_events import (
    TOKEN_HEADER,
    build_gitlab_router,
    parse_gitlab_delivery,
    verify_signature,
    verify_token,
)
from webhooks.jobs import NewJob, QueueError
from webhooks.metrics import CONTENT_TYPE, Metrics
from webhooks.queue import JobQueue, open_queue
from webhooks.settings import ServiceConfig, is_loopback
from webhooks.signature import HEADER as SIGNATURE_HEADER
from webhooks.signature import SignatureError, verify
from webhooks.ui import register_ui

log = logging.getLogger(__name__)
EXTENSION = "revbot"
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def revbot_version() -> str:
    try:
        return metadata.version("revbot")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


class WebService:
    """What the view needs, built once per process: settings, queue, router, metrics."""

    def __init__(self, config: ServiceConfig, queue: JobQueue, metrics: Metrics | None = None):
        self.config = config
        self.queue = queue
        self.metrics = metrics or Metrics()
        self.metrics.add_gauges(self.gauges)
        self.router = build_router(self.submit, own_logins=config.own_logins())
        self.gitlab_router = build_gitlab_router(self.submit, own_logins=config.own_logins())

    def submit(self, delivery: Delivery, job: NewJob | None) -> Outcome:
        """Record the delivery (a redelivery is answered, not queued again) and queue its job."""
        accepted = self.queue.submit(delivery.delivery_id, delivery.event, delivery.action, job)
        if accepted.duplicate:
            return Outcome(200, "duplicate", f"delivery {delivery.delivery_id} was already received")
        if job is None:
            return Outcome(200, "accepted")
        if not accepted.created:
            return Outcome(200, "duplicate", f"job {accepted.job_id} already covers {job.key}", accepted.job_id)
        if accepted.superseded:
            log.info("job %s for %s supersedes job(s) %s", accepted.job_id, job.key, accepted.superseded)
        extra = {"superseded": accepted.superseded} if accepted.superseded else {}
        return Outcome(202, "queued", job.key, accepted.job_id, extra)

    def event_label(self, event: str | None, router: Router | None = None) -> str:
        """Bounded label values: unknown event names (attacker-chosen) all count as "other"."""
        return event if event and (router or self.router).handles(event) else "other"

    def health(self) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {"version": revbot_version(), "queue": {"kind": self.queue.spec.kind}}
        status = 200
        try:
            self.queue.ping()
            out["queue"].update(reachable=True, depth=self.queue.size(), jobs=self.queue.store.counts())
        except Exception as exc:  # any backend failure means "not reachable"
            out["queue"].update(reachable=False, error=scrub_text(str(exc)[:300]))
            status = 503
        workers: list[dict[str, Any]] = []
        if status == 200:
            try:
                workers = self.queue.store.workers(max_age=max(3 * self.config.settings.worker_lease, 30.0))
            except Exception as exc:  # the queue answered; only the workers' reports are unreadable
                log.warning(
                    "health: cannot read the workers' reports: %s",
                    scrub_text(str(exc)[:300]),
                    exc_info=log.isEnabledFor(logging.DEBUG),  # the traceback at debug level only
                )
                workers = []
        # the newest report first: right after a reload the freshest worker shows the new version
        loaded = sorted((w for w in workers if w.get("model_loaded")), key=lambda w: -float(w.get("seen") or 0))
        out["model"] = {
            "loaded": bool(loaded),
            "version": loaded[0].get("model_version") if loaded else None,
            "workers": len(workers),
        }
        errors = sorted({w["model_error"] for w in workers if w.get("model_error")})
        if errors:
            out["model"]["errors"] = errors
        out["status"] = "ok" if status == 200 and loaded else ("degraded" if status == 200 else "unavailable")
        return out, status

    def gauges(self) -> list[tuple[str, dict[str, str] | None, float]]:
        """Read at scrape time from the job store (the same numbers in every web process)."""
        try:
            out: list[tuple[str, dict[str, str] | None, float]] = [
                ("revbot_jobs", {"state": state}, n) for state, n in self.queue.store.counts().items()
            ]
            out.append(("revbot_queue_depth", None, self.queue.size()))
            workers = self.queue.store.workers(max_age=max(3 * self.config.settings.worker_lease, 30.0))
            out.append(("revbot_model_loaded", None, 1 if any(w.get("model_loaded") for w in workers) else 0))
            return out + [("revbot_up", None, 1)]
        except Exception as exc:  # the scrape still answers: revbot_up 0 says why the rest is missing
            log.warning("metrics: job store unreadable: %s", exc)
            return [("revbot_up", None, 0)]

    def may_read_internals(self, headers: Mapping[str, str], remote_addr: str | None) -> bool:
        """Queue depth, job counts and model errors are for operators: the bearer of the metrics
        token, or (no token set) a client on this machine that came through no proxy."""
        token = self.config.settings.secret("metrics_token")
        if token:
            given = headers.get("Authorization") or ""
            scheme, _, value = given.partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())
        return is_loopback(remote_addr) and not any(headers.get(h) for h in PROXY_HEADERS)


def create_app(config: ServiceConfig | Mapping[str, Any] | None = None, *, queue: JobQueue | None = None) -> Flask:
    """The webhook app. ``config``: a ServiceConfig, or overrides of the environment's settings
    (field names of ServiceConfig), as Flask's tutorial passes a test config."""
    if isinstance(config, ServiceConfig):
        cfg = config
    else:
        cfg = ServiceConfig.from_env(**dict(config or {}))
    cfg.check()
    if cfg.insecure_no_signature:
        log.warning("webhook signatures are NOT checked (--insecure-no-signature): use this only locally")
    queue = queue or open_queue(cfg.settings.queue, cfg.settings.home, retention_s=cfg.retention_s)
    service = WebService(cfg, queue)

    app = _flask_app(service)

    @app.post("/webhook")
    def webhook() -> Any:
        metrics = service.metrics
        body, refusal = _receive_body(cfg.settings.webhook_max_body, metrics)
        if body is None:
            return refusal
        if not cfg.insecure_no_signature:
            try:
                verify(body, request.headers.get(SIGNATURE_HEADER), cfg.secret or "")
            except SignatureError as exc:
                metrics.inc("revbot_webhook_deliveries_total", {"event": "unverified", "outcome": "unauthorized"})
                return _error(401, str(exc))
        elif not is_loopback(request.remote_addr):  # unsigned deliveries only from this machine
            metrics.inc("revbot_webhook_deliveries_total", {"event": "unverified", "outcome": "unauthorized"})
            return _error(403, "unsigned deliveries are accepted only from this machine (--insecure-no-signature)")
        label = service.event_label(header(request.headers, "X-GitHub-Event"))
        return _dispatch(metrics, label, lambda: service.router.dispatch(parse_delivery(request.headers, body)), "")

    @app.errorhandler(413)
    def too_large(_exc: Any) -> Any:
        service.metrics.inc("revbot_webhook_deliveries_total", {"event": "unverified", "outcome": "too_large"})
        return _error(413, f"body over the {cfg.settings.webhook_max_body}-byte limit")

    @app.errorhandler(RevbotError)
    def revbot_error(exc: RevbotError) -> Any:
        return _error(500, str(exc))

    @app.get("/healthz")
    def healthz() -> Any:
        body, status = service.health()
        if not service.may_read_internals(request.headers, request.remote_addr):
            body = {"status": body["status"]}
        return jsonify(body), status

    @app.get("/metrics")
    def metrics_view() -> Response:
        if not service.may_read_internals(request.headers, request.remote_addr):
            return _error(
                401 if cfg.settings.metrics_token else 403,
                "/metrics needs the REVBOT_METRICS_TOKEN bearer token"
                if cfg.settings.metrics_token
                else "/metrics is answered only on this machine; set REVBOT_METRICS_TOKEN to read it remotely",
            )
        return Response(service.metrics.render(), content_type=CONTENT_TYPE)

    return _with_gitlab(app, service, cfg)


def _with_gitlab(app: Flask, service: WebService, cfg: ServiceConfig) -> Flask:
    """``app`` with ``POST /webhook/gitlab`` (GitLab's deliveries, beside GitHub's ``/webhook``)."""
    app.add_url_rule("/webhook/gitlab", "webhook_gitlab", lambda: _gitlab_delivery(service, cfg), methods=["POST"])
    return app


def _flask_app(service: WebService) -> Flask:
    """The Flask app with the service attached and, only when REVBOT_UI_TOKEN is set, the operator
    pages (``webhooks.ui``; they open no session for /webhook, /healthz or /metrics)."""
    app = Flask("webhooks")
    app.config["MAX_CONTENT_LENGTH"] = service.config.settings.webhook_max_body
    app.extensions[EXTENSION] = service
    register_ui(app, service)
    return app


def _gitlab_delivery(service: WebService, cfg: ServiceConfig) -> Any:
    """GitLab's hook: size cap (413) -> X-Gitlab-Token and, when configured, webhook-signature (401)
    -> JSON (400) -> route -> queue; every event it does not act on is answered 2xx, so GitLab never
    disables the hook for it."""
    metrics = service.metrics
    cap = cfg.settings.webhook_max_body
    body, refusal = _receive_body(cap, metrics)  # 413 over the cap, 408 past the body deadline
    if body is None:
        return refusal
    if not cfg.insecure_no_signature:
        try:
            if cfg.gitlab_signing_token:
                verify_signature(request.headers, body, cfg.gitlab_signing_token)
            if cfg.gitlab_secret or not cfg.gitlab_signing_token:
                verify_token(request.headers.get(TOKEN_HEADER), cfg.gitlab_secret)
        except SignatureError as exc:
            metrics.inc("revbot_webhook_deliveries_total", {"event": "unverified", "outcome": "unauthorized"})
            return _error(401, str(exc))
    elif not is_loopback(request.remote_addr):
        metrics.inc("revbot_webhook_deliveries_total", {"event": "unverified", "outcome": "unauthorized"})
        return _error(403, "unsigned deliveries are accepted only from this machine (--insecure-no-signature)")
    label = service.event_label(GITLAB_EVENTS.get(header(request.headers, GITLAB_EVENT) or ""), service.gitlab_router)
    return _dispatch(
        metrics, label, lambda: service.gitlab_router.dispatch(parse_gitlab_delivery(request.headers, body)), "GitLab "
    )


def _dispatch(metrics: Metrics, label: str, route: Callable[[], Outcome], forge: str) -> Any:
    """Parse and route a verified delivery (``route``), count its outcome and answer: 400 for a bad
    payload, 503 when the queue cannot record it, else the router's answer."""
    try:
        outcome = route()
    except BadDelivery as exc:
        metrics.inc("revbot_webhook_deliveries_total", {"event": label, "outcome": "bad_request"})
        return _error(400, str(exc))
    except QueueError as exc:
        metrics.inc("revbot_webhook_deliveries_total", {"event": label, "outcome": "queue_error"})
        log.error("%sdelivery not recorded: %s", forge, exc)
        return _error(503, "the job queue is unavailable; redeliver later")
    metrics.inc("revbot_webhook_deliveries_total", {"event": label, "outcome": outcome.outcome})
    return jsonify(outcome.body()), outcome.status


def _read_body(cap: int) -> bytes | None:
    """The raw body, or None when it is longer than ``cap``. A chunked body (no Content-Length) is
    read by us, at most ``cap + 1`` bytes, because werkzeug silently cuts a streamed body at
    MAX_CONTENT_LENGTH instead of refusing it."""
    if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return request.get_data(cache=False)  # Content-Length was checked; 413 past MAX_CONTENT_LENGTH
    raw = request.environ["wsgi.input"]
    chunks, size = [], 0
    while size <= cap:
        chunk = raw.read(min(65536, cap + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > cap else b"".join(chunks)


def _receive_body(cap: int, metrics: Metrics) -> tuple[bytes | None, Any]:
    """(the body, None), or (None, the answer refusing it): 413 over ``cap`` bytes, 408 when it did
    not arrive by its deadline (issue 22; the web worker then ends the connection)."""
    length = request.content_length
    if length is not None and length > cap:
        metrics.inc("revbot_webhook_deliveries_total", {"event": "unverified", "outcome": "too_large"})
        return None, _error(413, f"body of {length} bytes is over the {cap}-byte limit")
    try:
        body = _read_body(cap)
    except (ClientDisconnected, TimeoutError, BlockingIOError) as exc:
        if not _timed_out(exc):
            raise
        metrics.inc("revbot_webhook_deliveries_total", {"event": "unverified", "outcome": "too_slow"})
        return None, _error(408, "the request body did not arrive in time")
    if body is None:
        metrics.inc("revbot_webhook_deliveries_total", {"event": "unverified", "outcome": "too_large"})
        return None, _error(413, f"body over the {cap}-byte limit")
    return body, None


def _timed_out(exc: BaseException) -> bool:
    """Whether reading the body failed on the body deadline or the read timeout (werkzeug reports
    any read error as a disconnected client, with the error as its context)."""
    cause = exc.__context__ if isinstance(exc, ClientDisconnected) else exc
    return isinstance(cause, (TimeoutError, BlockingIOError))


def _error(status: int, message: str) -> Any:
    return jsonify({"error": message}), status
