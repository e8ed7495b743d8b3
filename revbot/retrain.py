"""`revbot retrain`: learn from the team's newest reviews, and put the result in front of users only
when it measurably does at least as well as what they have now.

    harvest (incremental) ─► rebuild examples ─► apply the team's verdicts on the bot's own comments
        ─► train a candidate version (not promoted)
        ─► evaluate candidate and current version on the SAME newest held-out PRs
        ─► promote only if the gate finds evidence the candidate is at least as good ─► record the decision

New review comments come from two places, both already in the dataset store when this runs: an
incremental harvest (comments GitHub has that the store lacks), and the comments the webhook service
recorded as they were written (those PRs are marked pending, and the harvest step rebuilds their
examples). What the team did with the bot's own comments (👍/👎, "won't fix" replies, threads
resolved with or without a change; ``bot.feedback``) is applied to the examples before training
(``harvest.feedback``: rejected comments' hunks become negatives, accepted ones positives, and a
comment text the team keeps rejecting is taken out of the data). Every decision, promoted or not, is appended to the registry's decision log, which
`revbot models list` shows. The running service follows the registry's ``current`` pointer and
picks a promoted version up between jobs, without a restart.

The gate (``finetune.gate.decide``, the same numbers `revbot eval` prints): the candidate must be at
least as good as the current version on the gate metric (``--metric``, default ``review_f1``: the right
comment on the right line, and little else), that metric must carry signal (a 0 = 0 tie is no
evidence), and its parse-failure rate and validation loss may not be worse beyond stated tolerances.
Both versions are evaluated with the same generation settings as `revbot eval`.

Scheduling: run it from cron (docs/workflow.md, "6. Retrain"); a lock file in the models folder makes
an overlapping run stop with a message instead of training twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from adapters.cli_options import actor_option, fail, info, quiet, summary_format_option
from adapters.files import LockBusy, file_lock
from adapters.settings import Settings
from bot.config import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS
from bot.errors import DataError, RevbotError, UsageError
from bot.examples import Example
from finetune.data import split_as_configured
from finetune.gate import (
    DEFAULT_GATE_METRIC,
    GATE_METRICS,
    LOWER_IS_BETTER,
    PARSE_FAILURE_TOLERANCE,
    VAL_LOSS_TOLERANCE,
    decide,
)
from finetune.options import generation_options, pop_train_config, training_options

log = logging.getLogger(__name__)

DEFAULT_METRIC = DEFAULT_GATE_METRIC
METRICS = GATE_METRICS
LOCK_NAME = ".retrain.lock"


class RetrainBusy(RevbotError):
    """Another retrain holds the lock on this models folder."""


# --------------------------------------------------------------------------- the run


@dataclass
class RetrainResult:
    candidate: str
    incumbent: str | None
    metric: str
    candidate_value: float | None
    incumbent_value: float | None
    promoted: bool
    reason: str
    test_examples: int
    counts: dict[str, Any] = field(default_factory=dict)
    harvests: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    report_dir: str | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)  # the gate's checks, each passed or not
    feedback: dict[str, Any] = field(default_factory=dict)  # what the team's verdicts changed in the data

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def text(self) -> str:
        def fmt(v: float | None) -> str:
            return "–" if v is None else f"{v:.4f}"

        verdict = (
            f"promoted {self.candidate}" if self.promoted else f"kept {self.incumbent}, {self.candidate} not promoted"
        )
        lines = [
            f"retrain: {verdict}",
            f"  {self.metric} on {self.test_examples} held-out examples: candidate {self.candidate} {fmt(self.candidate_value)}"
            + (f", current {self.incumbent} {fmt(self.incumbent_value)}" if self.incumbent else ""),
            f"  reason: {self.reason}",
            *(f"  {'pass' if c['passed'] else 'FAIL'}  {c['detail']}" for c in self.checks),
            "  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()),
        ]
        if self.report_dir:
            lines.append(f"  evaluation report: {self.report_dir}")
        return "\n".join(lines)


def _version_answer_loss(
    version: Any, examples: Sequence[Example], quantize: str | None, batch_size: int
) -> float | None:
    from adapters.model import BackendOptions, load_backend
    from finetune.evaluate import answer_loss

    backend = load_backend(BackendOptions(adapter=str(version.path), quantize=quantize, batch_size=batch_size))
    try:
        return answer_loss(backend, examples, batch_size)
    finally:
        del backend


@contextmanager
def retrain_lock(models_dir: Path) -> Iterator[None]:
    """One retrain per models folder at a time (cron may start one while the last still runs)."""
    with ExitStack() as stack:
        try:
            stack.enter_context(file_lock(models_dir / LOCK_NAME, blocking=False))
        except LockBusy as exc:
            raise RetrainBusy(
                f"another `revbot retrain` is running on {models_dir}; try again when it is done"
            ) from exc
        yield


def _incumbent_training_ids(version: Any) -> set[str]:
    """Ids of the examples the current version was trained on (its ``data/train.jsonl``), so that
    none of them is used to judge it."""
    from adapters.files import read_examples

    path = Path(version.path) / "data" / "train.jsonl"
    if not path.is_file():
        return set()
    try:
        return {e.id for e in read_examples(path, skip_bad=True)}
    except DataError:
        return set()


def retrain(
    *,
    store: Any,
    models_dir: str | os.PathLike[str] | None = None,
    repos: Sequence[str] = (),  # harvested first (incrementally); empty: train on the store as it is
    client: Any = None,
    client_for: Callable[[str], Any] | None = None,  # per repository (its own API root); else ``client``
    harvest_options: Any = None,
    base_model: str | None = None,
    config: Any = None,
    metric: str = DEFAULT_METRIC,
    quantize: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    eval_batch_size: int = DEFAULT_BATCH_SIZE,
    parse_failure_tolerance: float = PARSE_FAILURE_TOLERANCE,
    val_loss_tolerance: float = VAL_LOSS_TOLERANCE,
    progress: bool = False,
    echo: Callable[[str], None] = lambda _text: None,
    actor: str | None = None,  # who ran it, for the events log when the candidate is promoted
) -> RetrainResult:
    """Harvest ``repos`` (through ``client_for(repo)``, else ``client``) into ``store``, train a candidate
    on every example in the store, evaluate it and the current version on the same newest held-out
    PRs, and promote it only if the gate (``finetune.gate.decide``) lets it through; the decision is
    returned and appended to the registry's log."""
    from adapters.versions import ModelRegistry
    from finetune.train import TrainConfig, train

    if metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    config, registry, timings = config or TrainConfig(), ModelRegistry(models_dir), {}
    with retrain_lock(registry.root):
        harvests = _harvest(store, repos, client, client_for, harvest_options, echo, timings)
        examples, feedback = _examples_with_feedback(store, echo)
        splits = split_as_configured(examples, config)
        incumbent = registry.current()
        base_model = _base_model(base_model, incumbent)
        counts = splits.counts()
        echo("examples: " + ", ".join(f"{name} {c['examples']} ({c['prs']} PRs)" for name, c in counts.items()))

        t0 = time.perf_counter()
        candidate = train(
            splits, base_model, registry.root, config, data_source=str(getattr(store, "path", "")), progress=progress
        )
        timings["train"] = time.perf_counter() - t0
        echo(
            f"trained candidate {candidate.name} ({candidate.metrics.get('steps')} steps, "
            f"validation loss {candidate.metrics.get('val_loss')})"
        )
        test = _held_out(list(splits.test), incumbent, echo)
        t0 = time.perf_counter()
        gate = _GateRun(store, quantize, max_new_tokens, eval_batch_size, progress)
        report, mine, theirs = gate.evidence(candidate, incumbent, test, splits.train, metric)
        timings["evaluate"] = time.perf_counter() - t0
        decision = decide(
            metric, mine, theirs, parse_failure_tolerance=parse_failure_tolerance, val_loss_tolerance=val_loss_tolerance
        )
        if decision.promote:
            registry.promote(candidate.name, by=actor)
        gate_settings = {
            "test": test,
            "tolerances": {"parse_failure_rate": parse_failure_tolerance, "val_loss": val_loss_tolerance},
            "generation": {"max_new_tokens": max_new_tokens, "batch_size": eval_batch_size},
        }
        _record(registry, candidate, incumbent, metric, mine, theirs, decision, gate_settings)
        return RetrainResult(
            candidate.name,
            incumbent.name if incumbent else None,
            metric,
            mine.metric,
            theirs.metric if theirs else None,
            decision.promote,
            decision.reason,
            len(test),
            counts,
            harvests,
            {k: round(v, 2) for k, v in timings.items()},
            str(report.out_dir) if report.out_dir else None,
            [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in decision.checks],
            feedback,
        )


def _record(
    registry: Any,
    candidate: Any,
    incumbent: Any,
    metric: str,
    mine: Any,
    theirs: Any,
    decision: Any,
    settings: dict[str, Any],
) -> None:
    """Append the decision, with every value it was made on, to the registry's log."""
    test = settings["test"]
    values = {
        "candidate": mine.metric,
        "incumbent": theirs.metric if theirs else None,
        "test_examples": len(test),
        "test_prs": len({(e.repo, e.pr) for e in test}),
        "higher_is_better": metric not in LOWER_IS_BETTER,
        "parse_failure_rate": {
            "candidate": mine.parse_failure_rate,
            "incumbent": theirs.parse_failure_rate if theirs else None,
        },
        "val_loss": {"candidate": mine.val_loss, "incumbent": theirs.val_loss if theirs else None},
        "tolerances": settings["tolerances"],
        "generation": settings["generation"],
        "checks": [{"name": c.name, "passed": c.passed} for c in decision.checks],
    }
    registry.record_decision(
        candidate.name, incumbent.name if incumbent else None, metric, values, decision.promote, decision.reason
    )


def _base_model(base_model: str | None, incumbent: Any) -> str:
    """The model to adapt: the one asked for, else the current version's, else the settings'."""
    if base_model is None:
        base_model = incumbent.base_model if incumbent is not None else Settings.from_env().model
    if not base_model:
        raise UsageError("no base model: nothing is current yet, so pass --model (a hub id or a local path)")
    return base_model


def _harvest(
    store: Any,
    repos: Sequence[str],
    client: Any,
    client_for: Callable[[str], Any] | None,
    harvest_options: Any,
    echo: Callable[[str], None],
    timings: dict[str, float],
) -> list[dict[str, Any]]:
    """Harvest each repository incrementally (also rebuilding the PRs whose comments the webhook
    service recorded); their summaries."""
    if not repos:
        return []
    from harvest.mine import harvest_github

    if client is None and client_for is None:
        raise UsageError("harvesting needs a GitHub client (a token, or --no-harvest)")
    t0 = time.perf_counter()
    harvests = []
    for repo in repos:
        github = client_for(repo) if client_for is not None else client
        summary = harvest_github(github, store, repo, harvest_options)
        harvests.append(summary.to_dict())
        echo(summary.text())
    timings["harvest"] = time.perf_counter() - t0
    return harvests


def _examples_with_feedback(store: Any, echo: Callable[[str], None]) -> tuple[list[Any], dict[str, Any]]:
    """Every example in the store, with what the team's reactions to the bot's comments say applied."""
    examples = list(store.iter_examples())
    feedback: dict[str, Any] = {}
    if examples:
        from bot.feedback import refresh_evidence
        from harvest.feedback import apply_feedback

        refresh_evidence(store)
        used = apply_feedback(examples, store.iter_evidence())
        examples, feedback = used.examples, used.summary()
        if any(v for k, v in feedback.items() if k != "skipped"):
            echo(
                f"feedback on the bot's comments: {used.negatives_added} negative and {used.positives_added} "
                f"positive example(s) added, {used.comments_removed} comment(s) of {len(used.habits)} rejected "
                f"habit(s) removed ({used.turned_negative} example(s) now negative)"
            )
    if not examples:
        raise DataError(
            "the dataset store holds no examples; harvest reviews first (`revbot harvest github OWNER/REPO`)",
            str(getattr(store, "path", "store")),
        )
    return examples, feedback


def _held_out(test: list[Any], incumbent: Any, echo: Callable[[str], None]) -> list[Any]:
    """The test examples neither version was trained on."""
    if incumbent is None:
        return test
    seen = _incumbent_training_ids(incumbent)
    held_out = [e for e in test if e.id not in seen]
    if len(held_out) < len(test):
        echo(f"left out {len(test) - len(held_out)} test example(s) the current version was trained on")
    if not held_out:
        raise DataError(
            f"every held-out example was in {incumbent.name}'s training data; harvest more reviews before retraining"
        )
    return held_out


@dataclass
class _GateRun:
    """The gate's evaluations: the candidate and the current version on the same hunks, with the same
    generation settings as `revbot eval` (each with its own exemplars and calibrated threshold)."""

    store: Any
    quantize: str | None
    max_new_tokens: int
    batch_size: int
    progress: bool

    def evidence(
        self, candidate: Any, incumbent: Any, test: list[Any], train: list[Any], metric: str
    ) -> tuple[Any, Any, Any]:
        from finetune.evaluate import evaluate, gate_evidence

        def run(version: Any, out_dir: Any, store: Any) -> Any:
            return evaluate(
                version,
                test,
                train,
                base=None,
                quantize=self.quantize,
                max_new_tokens=self.max_new_tokens,
                batch_size=self.batch_size,
                out_dir=out_dir,
                store=store,
                progress=self.progress,
            )

        report = run(candidate, "auto", getattr(self.store, "path", None))
        current = run(incumbent, None, None) if incumbent is not None else None
        candidate_loss = incumbent_loss = None
        if metric == "answer_loss":
            candidate_loss = _version_answer_loss(candidate, test, self.quantize, self.batch_size)
            if incumbent is not None:
                incumbent_loss = _version_answer_loss(incumbent, test, self.quantize, self.batch_size)
        mine = gate_evidence(report, metric, candidate.name, candidate_loss)
        theirs = gate_evidence(current, metric, incumbent.name, incumbent_loss) if current else None
        return report, mine, theirs


def harvested_repos(store: Any) -> list[str]:
    """Repositories the store was harvested from (or has webhook-recorded comments waiting for)."""
    return sorted(
        repo for repo, entry in store.stats()["repos"].items() if entry.get("high_water") or entry.get("pending_prs")
    )


# --------------------------------------------------------------------------- command line

RETRAIN_EPILOG = """\b
Examples:
  revbot retrain                                  # every repository harvested before, default gate
  revbot retrain acme/stockroom --max-steps 300   # one repository, a short training run
  revbot retrain --no-harvest --metric line_f1    # train on the store as it is, gate on placement

\b
Schedule it with cron (weekly, Monday 03:00), from the service's working directory:
  0 3 * * 1  cd /srv/revbot && .venv/bin/revbot retrain >> retrain.log 2>&1
A promoted version is picked up by the running service between jobs, without a restart.
"""


class GitHubClients:
    """One forge client per API root: each repository is harvested again from the API root its last
    harvest used (recorded in the store), unless --api-url was given on the command line; a
    repository never harvested uses $REVBOT_GITHUB_API_URL / $GITHUB_API_URL, else api.github.com.
    A GitLab project (the store records which forge) gets a GitLab client for its recorded instance."""

    def __init__(self, store: Any, token: str | None, explicit_url: str | None, fallback_url: str | None):
        self.store, self.token = store, token
        self.explicit_url, self.fallback_url = explicit_url, fallback_url
        self.clients: dict[str | None, Any] = {}

    def url_for(self, repo: str) -> str | None:
        return self.explicit_url or self.store.api_url(repo) or self.fallback_url

    def __call__(self, repo: str) -> Any:
        url = self.url_for(repo)
        if self.store.get_state(repo, "forge") == "gitlab":  # harvested from GitLab: its recorded /api/v4 root
            return self._gitlab((self.store.api_url(repo) or "").removesuffix("/api/v4") or None)
        if url not in self.clients:
            from adapters.github import GitHubClient

            self.clients[url] = GitHubClient.from_settings(Settings.from_env(), token=self.token, api_url=url)
        return self.clients[url]

    def _gitlab(self, root: str | None) -> Any:
        """A GitLab client for the instance a project was harvested from (token: REVBOT_GITLAB_TOKEN)."""
        key = f"gitlab:{root}"
        if key not in self.clients:
            from adapters.gitlab import GitLabClient

            self.clients[key] = GitLabClient(url=root)
        return self.clients[key]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()


@click.command(
    "retrain", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, epilog=RETRAIN_EPILOG
)
@click.argument("repos", nargs=-1, metavar="[OWNER/REPO]...")
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    help="Dataset store (SQLite). Default: $REVBOT_DB, else revbot.db (relative to $REVBOT_HOME, default the "
    "current directory).",
)
@click.option(
    "--models-dir",
    type=click.Path(file_okay=False),
    help="Model versions folder. Default: $REVBOT_MODELS_DIR, else models/ (relative to $REVBOT_HOME).",
)
@click.option(
    "--api-url",
    help="GitHub API root (GitHub Enterprise: https://HOST/api/v3) for every repository. Default: the one "
    "each repository was last harvested from, else $REVBOT_GITHUB_API_URL or $GITHUB_API_URL, else "
    "https://api.github.com.",
)
@click.option(
    "--token",
    help="GitHub token. Default: $REVBOT_GITHUB_TOKEN, else $GITHUB_TOKEN (prefer the variable: a command line "
    "is visible to other users).",
)
@click.option(
    "--no-harvest",
    is_flag=True,
    help="Train on the store as it is: no GitHub requests (PRs the service marked pending are not rebuilt).",
)
@click.option(
    "--model", "base_model", metavar="ID_OR_PATH", help="Base model. Default: the current version's base model."
)
@click.option(
    "--metric",
    type=click.Choice(METRICS),
    default=DEFAULT_METRIC,
    show_default=True,
    help="Gate: promote only if the candidate is at least as good as the current version on it "
    "(and it is not zero or undefined for both).",
)
@click.option(
    "--parse-failure-tolerance",
    type=click.FloatRange(min=0, max=1),
    default=PARSE_FAILURE_TOLERANCE,
    show_default=True,
    help="Gate: how much higher the candidate's parse-failure rate may be (absolute).",
)
@click.option(
    "--val-loss-tolerance",
    type=click.FloatRange(min=0),
    default=VAL_LOSS_TOLERANCE,
    show_default=True,
    help="Gate: how much higher the candidate's validation loss may be (relative: 0.2 = 20%).",
)
@training_options
@generation_options("eval_batch_size")
@summary_format_option("the decision")
@actor_option
def retrain_cmd(
    repos,
    db,
    models_dir,
    api_url,
    token,
    no_harvest,
    base_model,
    metric,
    parse_failure_tolerance,
    val_loss_tolerance,
    max_new_tokens,
    eval_batch_size,
    as_json,
    actor,
    **training,
):
    """Harvest new reviews, train a candidate, and promote it only if it is at least as good.

    The candidate and the current version are evaluated on the same newest held-out pull requests,
    with the same generation settings as `revbot eval`. The candidate is promoted only if it is at
    least as good on the gate metric (default review_f1: the right comment on the right line, little
    else), that metric is not zero or undefined for both, and its parse-failure rate and validation
    loss are not worse beyond the tolerances. Every decision is recorded with its reason; `revbot
    models list` shows them.
    """
    from adapters.store import Store

    try:
        if no_harvest and repos:
            raise UsageError("--no-harvest and OWNER/REPO arguments exclude each other")
        store = Store(db)
        quantize = training["quantize"]  # the same weights for the gate's evaluation
        config = pop_train_config(training)
        clients = None
        targets: list[str] = []
        if not no_harvest:
            targets = list(repos) or harvested_repos(store)
            if targets:
                # without --api-url: each repository's recorded root, else the settings' (GitHubClient's default)
                clients = GitHubClients(store, token or None, api_url or None, None)
            else:
                info("no repository harvested yet: training on the store as it is")
        echo = (lambda text: None) if as_json else info
        try:
            result = retrain(
                store=store,
                models_dir=models_dir,
                repos=targets,
                client_for=clients,
                base_model=base_model,
                config=config,
                metric=metric,
                quantize=quantize,
                max_new_tokens=max_new_tokens,
                eval_batch_size=eval_batch_size,
                parse_failure_tolerance=parse_failure_tolerance,
                val_loss_tolerance=val_loss_tolerance,
                progress=not quiet() and not as_json,
                echo=echo,
                actor=f"retrain: {actor}",
            )
        finally:
            if clients is not None:
                clients.close()
    except RevbotError as exc:
        fail(exc)
    click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True) if as_json else result.text())
