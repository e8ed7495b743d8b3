"""The operator pages under /ui/: Overview, Versions (and each evaluation report), Acceptance,
Reviews, and the confirmed actions. Server-rendered with Flask's Jinja2 (autoescaped); no script."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_from_directory,
    session,
    url_for,
)
from markdown_it import MarkdownIt

from adapters.store import Store
from adapters.versions import EVAL_DIR, OTHER_EVALS_DIR, ModelRegistry, other_evaluations
from bot.errors import RevbotError
from webhooks.ui import actions, charts, data
from webhooks.ui.security import CSRF_FIELD, LoginLimiter, add_headers, cross_site, csrf_ok, csrf_token, token_matches

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")
EXTENSION = "revbot_ui"
_FILE = re.compile(r"^[A-Za-z0-9_.-]+\.png$")
_KEY = re.compile(r"^[A-Za-z0-9._-]+$")
_NAME_CHARS = re.compile(r"[^\w .@+-]", re.UNICODE)
OPEN = frozenset({"ui.login", "ui.static"})


class UiContext:
    """What the views read: the service (queue, health), the stores, the token, the login limiter."""

    def __init__(self, service: Any, token: str):
        self.service, self.token = service, token
        self.registry = ModelRegistry(service.config.settings.models_dir)
        self.limiter = LoginLimiter()
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.service.config.settings.db)
        return self._store


def ctx() -> UiContext:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def refuse(status: int, message: str) -> tuple[str, int]:
    return render_template("ui/refused.html", message=message, status=status), status


def actor() -> str:
    return f"{session.get('who', '?')} ({request.remote_addr or 'unknown address'})"


@bp.before_request
def guard() -> Any:
    """POSTs: same site and the session's CSRF token; everything but the login: a logged-in session."""
    if request.method == "POST":
        why = cross_site(request)
        if why:
            return refuse(403, f"refused: a cross-site request ({why})")
        if not csrf_ok(request.form.get(CSRF_FIELD)):
            return refuse(403, "refused: the form's CSRF token is missing or wrong; reload the page and try again")
    if request.endpoint in OPEN or session.get("who"):
        return None
    if request.method == "GET":
        return redirect(url_for("ui.login", next=request.path))
    return refuse(401, "log in first")


@bp.after_request
def headers(response: Response) -> Response:
    return add_headers(response)


@bp.app_context_processor
def template_globals() -> dict[str, Any]:
    return {"csrf_field": CSRF_FIELD, "csrf_token": csrf_token, "who": lambda: session.get("who")}


# --------------------------------------------------------------------------- login


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    target = request.values.get("next") or ""
    target = target if target.startswith("/ui/") and not target.startswith("//") else url_for("ui.overview")
    if request.method == "GET":
        return render_template("ui/login.html", next=target)
    limiter, client = ctx().limiter, request.remote_addr or "unknown"
    wait = limiter.retry_after(client)
    if wait:
        page, status = refuse(429, f"too many failed logins: try again in {wait} s")
        return page, status, {"Retry-After": str(wait)}
    name = _NAME_CHARS.sub("", request.form.get("name") or "").strip()[:60]
    if not token_matches(request.form.get("token") or "", ctx().token) or not name:
        limiter.failed(client)
        return render_template("ui/login.html", next=target, error="wrong token, or no name given"), 401
    session.clear()
    session.permanent = True
    session["who"] = name
    csrf_token()
    return redirect(target)


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("ui.login"))


# --------------------------------------------------------------------------- pages


@bp.get("/")
def overview() -> str:
    c = ctx()
    return render_template(
        "ui/overview.html",
        current=data.current_summary(c.registry),
        health=data.health(c.service),
        harvests=data.harvests(c.store),
        actions=c.store.recent_actions(20),
    )


@bp.get("/versions")
def versions() -> str:
    c = ctx()
    rows = data.version_rows(c.registry)
    events = c.registry.events()
    points = []
    for e in events:
        number = _number(e.get("version"))
        stamp = _stamp(e.get("at"))
        if number is not None and stamp is not None:
            points.append((stamp, str(e.get("at")), str(e.get("action")), number))
    chart = charts.timeline("Current version over time", points, time.time())
    return render_template(
        "ui/versions.html",
        rows=rows,
        labels=[label for label, _, _ in data.VERSION_METRICS],
        events=list(reversed(events)),
        decisions=list(reversed(c.registry.decisions()))[:20],
        timeline=chart,
        can_rollback=len(_history(c.registry)) >= 2,
    )


def _history(registry: ModelRegistry) -> list[str]:
    try:
        return registry.history()
    except RevbotError:
        return []


def _number(name: Any) -> int | None:
    text = str(name or "")
    return int(text[1:]) if text.startswith("v") and text[1:].isdigit() else None


def _stamp(text: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _version_or_404(name: str) -> Any:
    try:
        return ctx().registry.get(name)
    except RevbotError:
        abort(404)


_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


@bp.get("/versions/<name>/eval/")
def report(name: str) -> str:
    version = _version_or_404(name)
    path = version.path / EVAL_DIR / "report.md"
    if not path.is_file():
        abort(404)
    html = _MARKDOWN.render(path.read_text(encoding="utf-8", errors="replace"))
    return render_template("ui/report.html", version=version.name, html=html, other=None)


@bp.get("/versions/<name>/evals/<key>/")
def other_report(name: str, key: str) -> str:
    version = _version_or_404(name)
    if not _KEY.match(key):
        abort(404)
    folder = version.path / OTHER_EVALS_DIR / key
    entry = next((e for e in other_evaluations(version) if e.get("key") == key), None)
    if entry is None or not (folder / "report.md").is_file():
        abort(404)
    html = _MARKDOWN.render((folder / "report.md").read_text(encoding="utf-8", errors="replace"))
    return render_template("ui/report.html", version=version.name, html=html, other=entry)


@bp.get("/versions/<name>/eval/<filename>")
def report_file(name: str, filename: str) -> Any:
    version = _version_or_404(name)
    if not _FILE.match(filename):
        abort(404)
    return send_from_directory(version.path / EVAL_DIR, filename, mimetype="image/png")


@bp.get("/versions/<name>/evals/<key>/<filename>")
def other_report_file(name: str, key: str, filename: str) -> Any:
    version = _version_or_404(name)
    if not _FILE.match(filename) or not _KEY.match(key):
        abort(404)
    return send_from_directory(version.path / OTHER_EVALS_DIR / key, filename, mimetype="image/png")


@bp.get("/acceptance")
def acceptance() -> str:
    evidence = list(ctx().store.iter_evidence())
    series = [(key, label) for key, label, _ in data.SERIES]
    sections = []
    for by, title, x_label in (
        ("version", "Feedback per model version", "model version"),
        ("week", "Feedback per week", "ISO week of the feedback"),
    ):
        table = data.acceptance(evidence, by)
        chart = charts.grouped_bars(
            title, table.groups, series, table.counts, x_label=x_label, y_label="count (people or comments)"
        )
        sections.append({"by": by, "title": title, "table": table, "chart": chart})
    return render_template(
        "ui/acceptance.html",
        empty=not evidence,
        sections=sections,
        series=series,
        rejected=data.most_rejected(evidence),
        pull_url=lambda repo, pr: data.pull_url(ctx().service.config.settings.github_api_url, repo, pr),
    )


@bp.get("/reviews")
def reviews() -> str:
    store = ctx().store
    repo = request.args.get("repo") or None
    repos = store.review_repos()
    if repo not in repos:
        repo = None
    return render_template(
        "ui/reviews.html",
        reviews=store.recent_reviews(repo, limit=200),
        repos=repos,
        repo=repo,
        pull_url=lambda r, pr: data.pull_url(ctx().service.config.settings.github_api_url, r, pr),
    )


# --------------------------------------------------------------------------- actions (confirmed POSTs)


ACTIONS: dict[str, tuple[str, Callable[[str], str]]] = {
    "promote": ("Promote {target}", lambda t: f"Make {t} the version every new review uses."),
    "rollback": ("Roll back from {target}", lambda t: f"Serve the version promoted before {t} again."),
    "requeue": ("Re-queue job {target}", lambda t: f"Run failed job {t} again, from the start."),
}


@bp.get("/actions/<action>/<target>")
def confirm(action: str, target: str) -> Any:
    if action not in ACTIONS:
        abort(404)
    title, explain = ACTIONS[action]
    return render_template(
        "ui/confirm.html", action=action, target=target, title=title.format(target=target), explain=explain(target)
    )


@bp.post("/actions/<action>")
def act(action: str) -> Any:
    if action not in ACTIONS:
        abort(404)
    if request.form.get("confirm") != "yes":
        return refuse(400, "refused: the action was not confirmed")
    c, target = ctx(), request.form.get("target") or ""
    if action == "promote":
        outcome = actions.promote(c.registry, c.store, actor(), target)
    elif action == "rollback":
        outcome = actions.rollback(c.registry, c.store, actor())
    else:
        if not target.isdigit():
            return refuse(400, "refused: a job is named by its number")
        outcome = actions.requeue(c.service.queue, c.store, actor(), int(target))
    flash(outcome.message, "ok" if outcome.ok else "error")
    return redirect(url_for("ui.overview" if action == "requeue" else "ui.versions"))
