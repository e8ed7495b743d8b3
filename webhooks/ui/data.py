"""What the operator pages show, read from the stores as plain data (no Flask, no HTML here).

Every number a page shows is computed in this module from the dataset store (``adapters.store``),
the model registry (``adapters.versions``) and the job queue, so the browser tests can compare the
page with the stores themselves. Free text comes from the store already scrubbed; error messages
read from the queue are scrubbed again before they are shown.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from adapters.store import Evidence, Store
from adapters.versions import ModelRegistry, other_evaluations
from bot.errors import RevbotError
from bot.feedback import habit_key, verdicts
from bot.secrets import scrub_text
from webhooks.jobs import FAILED, QUEUED, Job

# Acceptance series: (key, label, the evidence source counted, what one unit is)
SERIES: tuple[tuple[str, str, str], ...] = (
    ("thumbs_up", "thumbs-up reactions", "reaction:+1"),
    ("thumbs_down", "thumbs-down reactions", "reaction:-1"),
    ("fixed_replies", "replies: fixed / agreed", "reply:fixed"),
    ("wontfix_replies", "replies: won't fix", "reply:wont-fix"),
    ("resolved", "resolved, code unchanged", "resolved:unchanged"),
    ("addressed", "addressed by a fix push", "resolved:changed"),
)
UNKNOWN_VERSION = "unknown"
UNDATED = "undated"
# The metrics of a version shown side by side: (label, where in revbot.json, digits)
VERSION_METRICS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("review F1", ("evaluation", "metrics", "tuned", "review_f1"), 3),
    ("BLEU-4 -stop", ("evaluation", "metrics", "tuned", "bleu4_no_stop"), 2),
    ("ROUGE-L", ("evaluation", "metrics", "tuned", "rouge_l"), 2),
    ("parse failures %", ("evaluation", "metrics", "tuned", "parse_failure_rate"), 2),
    ("validation loss", ("metrics", "val_loss"), 4),
)


def dig(data: Any, path: Iterable[str]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def fmt_number(value: Any, digits: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return f"{value:.{digits}f}"


def pull_url(api_url: str, repo: str, pr: int) -> str:
    """The pull request's page on the GitHub the service talks to (github.com for api.github.com,
    the Enterprise host for HOST/api/v3, the API root itself otherwise: the simulator)."""
    parts = urlsplit(api_url)
    if parts.netloc == "api.github.com":
        root = "https://github.com"
    elif parts.path.rstrip("/").endswith("/api/v3"):
        root = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')[: -len('/api/v3')]}"
    else:
        root = api_url.rstrip("/")
    return f"{root}/{quote(repo, safe='/')}/pull/{int(pr)}"


# --------------------------------------------------------------------------- versions


@dataclass
class VersionRow:
    name: str
    created_at: str
    base_model: str
    current: bool
    metrics: list[str]
    has_report: bool
    others: list[dict[str, Any]] = field(default_factory=list)


def version_rows(registry: ModelRegistry) -> list[VersionRow]:
    current = _current_name(registry)
    rows = []
    for v in registry.list():
        rows.append(
            VersionRow(
                v.name,
                v.created_at,
                str(v.base_model or "?"),
                v.name == current,
                [fmt_number(dig(v.meta, path), digits) for _, path, digits in VERSION_METRICS],
                (v.path / "eval" / "report.md").is_file(),
                [_other_row(e) for e in other_evaluations(v)],
            )
        )
    return rows


def _other_row(entry: dict[str, Any]) -> dict[str, Any]:
    tuned = (entry.get("systems") or {}).get("tuned") or {}
    return {
        "key": entry.get("key"),
        "name": entry.get("name"),
        "sha": str(entry.get("sha256") or "")[:12],
        "at": entry.get("at"),
        "metrics": [
            fmt_number(tuned.get(path[-1]), digits) if path[0] == "evaluation" else "–"
            for _, path, digits in VERSION_METRICS
        ],
    }


def _current_name(registry: ModelRegistry) -> str | None:
    try:
        return registry.current_name()
    except RevbotError:
        return None


def current_summary(registry: ModelRegistry) -> dict[str, Any]:
    """The current version, when it became current and why (its promotion event and the gate's decision)."""
    name = _current_name(registry)
    if name is None:
        return {"name": None}
    events = [e for e in registry.events() if e.get("version") == name]
    decisions = [d for d in registry.decisions() if d.get("candidate") == name and d.get("promoted")]
    return {
        "name": name,
        "event": events[-1] if events else None,
        "decision": decisions[-1] if decisions else None,
    }


# --------------------------------------------------------------------------- service health


def health(service: Any) -> dict[str, Any]:
    """Workers, queue depth, oldest pending job, last error, failed jobs (newest first)."""
    body, _status = service.health()
    out: dict[str, Any] = {
        "status": body.get("status"),
        "version": body.get("version"),
        "queue_kind": (body.get("queue") or {}).get("kind"),
        "reachable": (body.get("queue") or {}).get("reachable"),
        "depth": (body.get("queue") or {}).get("depth"),
        "jobs": (body.get("queue") or {}).get("jobs") or {},
        "workers": (body.get("model") or {}).get("workers", 0),
        "model_version": (body.get("model") or {}).get("version"),
        "errors": [scrub_text(str(e)) for e in (body.get("model") or {}).get("errors", [])],
        "oldest_pending": None,
        "failed": [],
        "last_error": None,
    }
    if not out["reachable"]:
        out["errors"].append(scrub_text(str((body.get("queue") or {}).get("error") or "queue unreachable")))
        return out
    jobs: list[Job] = service.queue.store.find()
    pending = [j for j in jobs if j.state == QUEUED]
    if pending:
        out["oldest_pending"] = _when(min(j.created_at for j in pending))
    failed = sorted((j for j in jobs if j.state == FAILED), key=lambda j: -j.updated_at)
    out["failed"] = [_failed_row(j) for j in failed[:20]]
    if failed:
        out["last_error"] = out["failed"][0]
    return out


def _failed_row(job: Job) -> dict[str, Any]:
    result = job.result if isinstance(job.result, dict) else {}
    return {
        "id": job.id,
        "kind": job.kind,
        "repo": job.repo,
        "pr": job.pr,
        "head_sha": (job.head_sha or "")[:12],
        "attempts": job.attempts,
        "at": _when(job.updated_at),
        "error": scrub_text(str(result.get("error") or "(no message)"))[:500],
    }


def _when(stamp: float) -> str:
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def harvests(store: Store) -> list[dict[str, Any]]:
    out = []
    for entry in store.harvest_overview():
        last = entry["state"].get("last_run") or {}
        rate = (
            f"{last['rate_remaining']}/{last['rate_limit']}"
            if last.get("rate_remaining") is not None and last.get("rate_limit") is not None
            else "unknown"
        )
        out.append(
            {
                "repo": entry["repo"],
                "at": last.get("at") or entry.get("updated_at") or "never",
                "fetched": last.get("comments_fetched"),
                "stored": entry.get("comments", 0),
                "rate": rate,
            }
        )
    return out


# --------------------------------------------------------------------------- acceptance


def week_of(stamp: str | None) -> str:
    """``2026-W49`` for an ISO time; ``undated`` when there is none."""
    if not stamp:
        return UNDATED
    try:
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return UNDATED
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


@dataclass
class AcceptanceTable:
    """Counts per group (a version or a week): each series, then judged / accepted / rejected."""

    groups: list[str]
    counts: dict[str, dict[str, int]]  # group -> series key (and judged/accepted/rejected) -> count

    def rate(self, group: str) -> str:
        c = self.counts[group]
        return f"{100 * c['accepted'] / c['judged']:.0f}%" if c.get("judged") else "–"


def acceptance(evidence: list[Evidence], by: str) -> AcceptanceTable:
    """Reactions, replies and resolutions per version (``by="version"``) or per week of the feedback
    (``by="week"``). Reactions count people; the other series count comments. A comment's verdict
    (``bot.feedback.verdicts``) is counted in the group of its version, or of its newest feedback."""

    def group(e: Evidence) -> str:
        return (e.model_version or UNKNOWN_VERSION) if by == "version" else week_of(e.created_at)

    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    source_key = {source: key for key, _, source in SERIES}
    newest: dict[tuple[str, int], Evidence] = {}
    for e in evidence:
        key = source_key.get(e.source)
        if key is not None:
            counts[group(e)][key] += e.weight if e.source.startswith("reaction:") else 1
        subject = (e.repo, e.comment_id)
        if subject not in newest or (e.created_at or "") > (newest[subject].created_at or ""):
            newest[subject] = e
    for subject, verdict in verdicts(evidence).items():
        c = counts[group(newest[subject])]
        c["judged"] += 1
        c["accepted" if verdict > 0 else "rejected"] += 1
    groups = sorted(counts, key=_version_key if by == "version" else str)
    return AcceptanceTable(groups, {g: dict(counts[g]) for g in groups})


def _version_key(name: str) -> tuple[int, int, str]:
    if name.startswith("v") and name[1:].isdigit():
        return (0, int(name[1:]), name)
    return (1, 0, name)


def most_rejected(evidence: list[Evidence], limit: int = 10) -> list[dict[str, Any]]:
    """The bot's comments the team rejected, grouped by what they say (``habit_key``), most first."""
    verdict = verdicts(evidence)
    subjects: dict[tuple[str, int], Evidence] = {}
    for e in evidence:
        subjects.setdefault((e.repo, e.comment_id), e)
    groups: dict[str, dict[str, Any]] = {}
    for subject, v in verdict.items():
        if v > 0:
            continue
        e = subjects[subject]
        entry = groups.setdefault(
            habit_key(e.body),
            {"body": e.body, "count": 0, "versions": set(), "example": (e.repo, e.pr), "path": e.path},
        )
        entry["count"] += 1
        entry["versions"].add(e.model_version or UNKNOWN_VERSION)
    ranked = sorted(groups.values(), key=lambda g: (-g["count"], g["body"]))[:limit]
    for g in ranked:
        g["versions"] = sorted(g["versions"], key=_version_key)
    return ranked
