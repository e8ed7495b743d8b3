"""The Flask app factory. The view does three things: check, queue, answer.

``POST /webhook``  size cap (413) -> signature over the raw body (401, nothing else happens) ->
                   JSON (400) -> route -> record + queue -> answer, in milliseconds
``GET /healthz``   queue reachable, model loaded (as reported by the workers), version
``GET /metrics``   Prometheus text

Production: ``gunicorn -w 4 -b 127.0.0.1:8080 'webhooks.app:create_app()'`` (settings from REVBOT_*;
run the workers with ``revbot worker``). One machine: ``revbot serve`` runs both.
"""
from __future__ import annotations

import logging
from importlib import metadata
from typing import Any, Mapping

from flask import Flask, Response, jsonify, request

from bot.errors import RevbotError
from bot.secrets import scrub_text
from webhooks.events import BadDelivery, Delivery, Outcome, build_router, header, parse_delivery
from webhooks.jobs import NewJob, QueueError
from webhooks.metrics import Metrics
from webhooks.queue import JobQueue, open_queue
from webhooks.settings import ServiceConfig
from webhooks.signature import HEADER as SIGNATURE_HEADER
from webhooks.signature import SignatureError, verify

log = logging.getLogger(__name__)
EXTENSION = "revbot"


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
        self.metrics = metrics or Metrics(queue.store)
        self.router = build_router(self.submit, own_logins=config.own_logins())

    def submit(self, delivery: Delivery, job: NewJob | None) -> Outcome:
        """Record the delivery (a redelivery is answered, not queued again) and queue its job."""
        try:
            accepted = self.queue.submit(delivery.delivery_id, delivery.event, delivery.action, job)
        except QueueError as exc:
            if job is None or not getattr(exc, "recorded", False):
                raise
            accepted = exc.recorded  # the row is durable; the reaper sends its message later
            log.warning("job %s recorded but not sent to the queue yet: %s", accepted.job_id, exc)
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

    def event_label(self, event: str | None) -> str:
        """Bounded label values: unknown event names (attacker-chosen) all count as "other"."""
        return event if event and self.router.handles(event) else "other"

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
                workers = self.queue.store.workers(max_age=max(3 * self.config.lease_s, 30.0))
            except Exception:
                workers = []
        loaded = [w for w in workers if w.get("model_loaded")]
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

    def gauges(self):
        try:
            for state, n in self.queue.store.counts().items():
                yield "revbot_jobs", {"state": state}, n
            yield "revbot_queue_depth", None, self.queue.size()
            workers = self.queue.store.workers(max_age=max(3 * self.config.lease_s, 30.0))
            yield "revbot_model_loaded", None, 1 if any(w.get("model_loaded") for w in workers) else 0
            yield "revbot_up", None, 1
        except Exception:
            yield "revbot_up", None, 0


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
    queue = queue or open_queue(cfg.queue, cfg.home)
    service = WebService(cfg, queue)

    app = Flask("webhooks")
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body_bytes
    app.extensions[EXTENSION] = service

    @app.post("/webhook")
    def webhook() -> Any:
        metrics = service.metrics
        length = request.content_length
        if length is not None and length > cfg.max_body_bytes:
            metrics.inc("revbot_webhook_deliveries_total", {"event": "unverified", "outcome": "too_large"})
            return _error(413, f"body of {length} bytes is over the {cfg.max_body_bytes}-byte limit")
        body = _read_body(cfg.max_body_bytes)
        if body is None:
            metrics.inc("revbot_webhook_deliveries_total", {"event": "unverified", "outcome": "too_large"})
            return _error(413, f"body over the {cfg.max_body_bytes}-byte limit")
        if not cfg.insecure_no_signature:
            try:
                verify(body, request.headers.get(SIGNATURE_HEADER), cfg.secret or "")
            except SignatureError as exc:
                metrics.inc("revbot_webhook_deliveries_total", {"event": "unverified", "outcome": "unauthorized"})
                return _error(401, str(exc))
        event = header(request.headers, "X-GitHub-Event")
        label = service.event_label(event)
        try:
            delivery = parse_delivery(request.headers, body)
            outcome = service.router.dispatch(delivery)
        except BadDelivery as exc:
            metrics.inc("revbot_webhook_deliveries_total", {"event": label, "outcome": "bad_request"})
            return _error(400, str(exc))
        except QueueError as exc:
            metrics.inc("revbot_webhook_deliveries_total", {"event": label, "outcome": "queue_error"})
            log.error("delivery not recorded: %s", exc)
            return _error(503, "the job queue is unavailable; redeliver later")
        metrics.inc("revbot_webhook_deliveries_total", {"event": label, "outcome": outcome.outcome})
        return jsonify(outcome.body()), outcome.status

    @app.errorhandler(413)
    def too_large(_exc: Any) -> Any:
        service.metrics.inc("revbot_webhook_deliveries_total", {"event": "unverified", "outcome": "too_large"})
        return _error(413, f"body over the {cfg.max_body_bytes}-byte limit")

    @app.errorhandler(RevbotError)
    def revbot_error(exc: RevbotError) -> Any:
        return _error(500, str(exc))

    @app.get("/healthz")
    def healthz() -> Any:
        body, status = service.health()
        return jsonify(body), status

    @app.get("/metrics")
    def metrics_view() -> Response:
        return Response(service.metrics.render(service.gauges), mimetype="text/plain; version=0.0.4")

    return app


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


def _error(status: int, message: str) -> Any:
    return jsonify({"error": message}), status
