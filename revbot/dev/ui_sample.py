"""A store, a model registry and a job queue filled like a few weeks of the demo team's use, for the
operator pages' tests and screenshots (``revbot.dev``: a development tool, never product code).

The comments are the sample project's habits (``revbot.dev.demo_data.templates.STYLE``), posted by
three versions over three weeks, with the team's reactions, replies and resolved threads on them;
one comment body and one skipped file path are hostile HTML, to show they render as text.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from adapters.store import BotPost, Feedback, ReviewRecord, Store
from adapters.versions import DECISIONS_FILE, EVENTS_FILE, ModelRegistry, other_eval_dir, record_other_evaluation
from bot.feedback import refresh_evidence
from bot.prompt import PROMPT_FORMAT_VERSION
from revbot.dev.demo_data.templates import STYLE

REPOS = ("acme/shop", "acme/billing")
HOSTILE_BODY = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'
HOSTILE_PATH = '"><script>document.title="pwned"</script>.py'
WEEKS = ("2026-11-16", "2026-11-23", "2026-11-30")  # Mondays
REPORT = """# Evaluation of {name}

verdict: the tuned model beats retrieval on review_f1

| system | review_f1 | BLEU-4 -stop |
|---|---|---|
| tuned | {f1} | {bleu} |
| retrieval | 0.100 | 4.00 |

<script>document.title="pwned"</script>
"""


def _versions(models: Path) -> ModelRegistry:
    registry = ModelRegistry(models)
    for number, (f1, bleu, rouge, parse, val) in enumerate(
        [(0.211, 5.12, 20.4, 3.1, 0.412), (0.305, 6.80, 24.9, 1.2, 0.311), (0.287, 6.10, 23.0, 0.8, 0.298)], 1
    ):
        with registry.new_version() as pending:
            name = f"v{number}"
            meta = {
                "base_model": "smollm2-135m",
                "prompt_format_version": PROMPT_FORMAT_VERSION,
                "created_at": f"{WEEKS[number - 1]}T09:00:00Z",
                "metrics": {"val_loss": val},
                "evaluation": {
                    "metrics": {
                        "tuned": {"review_f1": f1, "bleu4_no_stop": bleu, "rouge_l": rouge, "parse_failure_rate": parse}
                    }
                },
            }
            (pending.path / "revbot.json").write_text(json.dumps(meta), encoding="utf-8")
            (pending.path / "eval").mkdir()
            (pending.path / "eval" / "report.md").write_text(REPORT.format(name=name, f1=f1, bleu=bleu))
    _other_evaluation(registry, models)
    registry.promote("v1", by="revbot retrain")
    registry.record_decision("v2", "v1", "review_f1", {"candidate": 0.305, "incumbent": 0.211}, True, "0.305 > 0.211")
    registry.promote("v2", by="revbot retrain")
    registry.record_decision("v3", "v2", "review_f1", {"candidate": 0.287, "incumbent": 0.305}, False, "not better")
    _backdate(models / EVENTS_FILE, ["2026-11-16T10:00:00Z", "2026-11-23T10:00:00Z"])
    _backdate(models / DECISIONS_FILE, ["2026-11-23T09:55:00Z", "2026-11-30T09:55:00Z"])
    return registry


def _backdate(log: Path, times: list[str]) -> None:
    """Give the sample's log entries the weeks they stand for (they were written just now)."""
    entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    for entry, when in zip(entries, times):
        entry["at"] = when
    log.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries), encoding="utf-8")


def _other_evaluation(registry: ModelRegistry, models: Path) -> None:
    """v1 measured on another dataset: kept beside its own numbers, never instead of them."""
    data = models.parent / "codereviewer-test.jsonl"
    data.write_text('{"id": "x"}\n', encoding="utf-8")
    folder = other_eval_dir(registry.get("v1"), data)
    folder.mkdir(parents=True)
    metrics = {"systems": {"tuned": {"metrics": {"review_f1": 0.004, "bleu4_no_stop": 3.0, "rouge_l": 9.5}}}}
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (folder / "report.md").write_text("# v1 on codereviewer-test.jsonl\n\nreview_f1 0.004\n", encoding="utf-8")
    record_other_evaluation(folder, data, "codereviewer", "2026-12-01T09:00:00Z")


def _habits() -> list[str]:
    return [*STYLE.values()]


def _posts_and_feedback(store: Store) -> None:
    habits = _habits()
    posts, feedback = [], []
    comment_id = 9000
    for week_index, monday in enumerate(WEEKS):
        version = f"v{week_index + 1}" if week_index < 2 else "v2"
        for i in range(6):
            comment_id += 1
            repo, pr = REPOS[i % 2], 10 + week_index * 10 + i
            body = HOSTILE_BODY if (week_index, i) == (1, 1) else habits[(i + week_index) % len(habits)]
            day = (dt.date.fromisoformat(monday) + dt.timedelta(days=i % 5)).isoformat()
            posts.append(
                BotPost(
                    repo,
                    pr,
                    f"fp{comment_id}",
                    f"src/mod{i}.py",
                    10 + i,
                    "RIGHT",
                    body,
                    "@@ -1 +1 @@",
                    "a" * 40,
                    version,
                    comment_id,
                    f"{day}T10:00:00Z",
                )
            )
            feedback += _reactions(repo, pr, comment_id, i, f"{day}T12:00:00Z")
    store.record_posts(posts)
    store.record_feedback(feedback)
    refresh_evidence(store)


def _reactions(repo: str, pr: int, comment_id: int, i: int, when: str) -> list[Feedback]:
    """A mix per comment: liked, disliked, a reply, resolved after a fix push, resolved unchanged."""
    kind = i % 6
    if kind == 0:
        return [Feedback(repo, pr, comment_id, "reactions", "", json.dumps({"+1": 2}), created_at=when)]
    if kind == 1:
        return [Feedback(repo, pr, comment_id, "reactions", "", json.dumps({"-1": 1}), created_at=when)]
    if kind == 2:
        return [
            Feedback(repo, pr, comment_id, "reply", "dev1", "won't fix, this is by design", comment_id + 50000, when)
        ]
    if kind == 3:
        return [
            Feedback(
                repo,
                pr,
                comment_id,
                "resolved",
                "dev2",
                json.dumps({"resolved": True, "changed": True, "by": "dev2"}),
                created_at=when,
            )
        ]
    if kind == 4:
        return [Feedback(repo, pr, comment_id, "reply", "dev3", "good catch, fixed", comment_id + 50000, when)]
    resolved = json.dumps({"resolved": True, "changed": False, "by": "dev4"})
    return [Feedback(repo, pr, comment_id, "resolved", "dev4", resolved, created_at=when)]


def _reviews(store: Store) -> None:
    for week_index, monday in enumerate(WEEKS):
        for i, repo in enumerate(REPOS):
            skipped: tuple[dict[str, str], ...] = ()
            if (week_index, i) == (2, 1):
                skipped = ({"path": HOSTILE_PATH, "reason": "over the token budget"},)
            store.record_review(
                ReviewRecord(
                    repo,
                    10 + week_index * 10 + i,
                    f"{week_index}{i}" + "b" * 38,
                    f"v{min(week_index + 1, 2)}",
                    3 + i,
                    i,
                    skipped,
                    4.5 + week_index,
                    700 + week_index * 2 + i,
                    f"{monday}T10:0{i}:00Z",
                )
            )
    for repo in REPOS:
        store.set_state(
            repo,
            "last_run",
            {
                "at": "2026-12-01T08:00:00Z",
                "comments_fetched": 42,
                "inserted": 40,
                "rate_remaining": 4890,
                "rate_limit": 5000,
            },
        )


def fill(store: Store, models: Path, queue: Any | None = None) -> ModelRegistry:
    """Write the sample into ``store`` and ``models`` (and one failed job into ``queue``)."""
    registry = _versions(models)
    _posts_and_feedback(store)
    _reviews(store)
    if queue is not None:
        from webhooks.jobs import FAILED, REVIEW, NewJob, review_key

        job = NewJob(REVIEW, review_key(REPOS[0], 77, "c" * 40), REPOS[0], 77, "c" * 40, {"installation_id": None})
        accepted = queue.submit("sample-delivery", "pull_request", "opened", job)
        taken = queue.take("sample-worker", 60.0, 5, wait=0.0)
        assert taken is not None and taken.id == accepted.job_id
        queue.store.finish(taken.id, "sample-worker", FAILED, {"error": "GitHub answered 404: pull request not found"})
    return registry
