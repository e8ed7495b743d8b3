"""`revbot harvest ...` and `revbot dataset ...`: parse arguments, call harvest's library, print."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from adapters.cli_options import fail, quiet, summary_format_option, warn
from adapters.store import Store, default_db_path, utc_timestamp
from bot.datasets import IMPORT_FORMATS
from bot.errors import ForgeError, RevbotError, UsageError
from harvest.build import DEFAULT_OWN_LOGINS
from harvest.filters import DEFAULT_MIN_LENGTH

DB_HELP = (
    "Dataset store (SQLite). Default: $REVBOT_DB, else revbot.db (relative to $REVBOT_HOME, default the current "
    "directory)."
)
NO_CREDENTIALS = (
    "no GitHub credentials: set GITHUB_TOKEN (or REVBOT_GITHUB_TOKEN) to a token that can read the repository, "
    "or harvest as a GitHub App with REVBOT_GITHUB_APP_ID, REVBOT_GITHUB_APP_PRIVATE_KEY_FILE and "
    "REVBOT_GITHUB_APP_INSTALLATION_ID; --anonymous harvests a public repository without credentials "
    "(60 requests an hour on github.com)"
)

NO_GITLAB_CREDENTIALS = (
    "no GitLab token: set GITLAB_TOKEN (or REVBOT_GITLAB_TOKEN) to a token with the api scope (read_api is enough "
    "to harvest) that can read the project"
)


def _logins(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def _when(value: str | None, option: str) -> str | None:
    try:
        return utc_timestamp(value)
    except RevbotError as exc:
        raise UsageError(
            f"{option} must be a date or ISO-8601 time (2024-01-31 or 2024-01-31T12:00:00Z), got {value!r}"
        ) from exc


def _run(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except RevbotError as exc:
        fail(exc)


_FILTER_OPTIONS = (
    click.option(
        "--full",
        is_flag=True,
        help="Re-read every comment and rebuild every PR (default: only what changed since the last run).",
    ),
    click.option(
        "--rebuild", is_flag=True, help="Rebuild every PR's examples from the store, e.g. after changing filters."
    ),
    click.option("--since", help="Only comments created on or after this date (also where reading starts)."),
    click.option("--until", help="Only comments created on or before this date."),
    click.option("--authors", help="Comma-separated logins: learn only from these reviewers."),
    click.option("--deny-bots", help="Comma-separated logins to treat as bots (besides type Bot and [bot] logins)."),
    click.option(
        "--min-length",
        type=click.IntRange(0),
        default=DEFAULT_MIN_LENGTH,
        show_default=True,
        help="Comments with less text than this are trivial.",
    ),
    click.option(
        "--negatives-ratio",
        type=click.FloatRange(0),
        default=1.0,
        show_default=True,
        help="Uncommented hunks per commented hunk, from the same PRs.",
    ),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the negative sampling."),
)


def _filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What every forge's harvest takes: which comments to read and learn from."""
    for option in reversed(_FILTER_OPTIONS):
        fn = option(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def harvest() -> None:
    """Mine past review comments into the dataset store."""


@harvest.command("github")
@click.argument("repo", metavar="OWNER/REPO")
@click.option("--db", type=click.Path(dir_okay=False), help=DB_HELP)
@click.option("--api-url", help="API root: GitHub Enterprise (https://HOST/api/v3) or the simulator.")
@click.option(
    "--token",
    help="GitHub token (default $REVBOT_GITHUB_TOKEN, else $GITHUB_TOKEN; prefer the variable: a command "
    "line is visible to other users). GitHub App: REVBOT_GITHUB_APP_ID, REVBOT_GITHUB_APP_PRIVATE_KEY_FILE (or "
    "REVBOT_GITHUB_APP_PRIVATE_KEY, the PEM text), REVBOT_GITHUB_APP_INSTALLATION_ID.",
)
@click.option(
    "--anonymous",
    is_flag=True,
    help="Harvest without credentials: public repositories only, 60 requests an hour on github.com. "
    "Without this flag a harvest with no token and no GitHub App is refused.",
)
@_filter_options
@click.option(
    "--max-rate-wait",
    type=click.FloatRange(0),
    default=900,
    show_default=True,
    help="Longest wait (s) for a rate-limit reset before stopping with a message.",
)
@click.option(
    "--bot-login",
    help="Comma-separated logins revbot posts as (feedback on its comments is recorded). Default: "
    f"$REVBOT_BOT_LOGINS, else {','.join(sorted(DEFAULT_OWN_LOGINS))}.",
)
@summary_format_option("the summary")
def harvest_github_cmd(
    repo: str,
    db: str | None,
    api_url: str | None,
    token: str | None,
    anonymous: bool,
    full: bool,
    rebuild: bool,
    since: str | None,
    until: str | None,
    authors: str | None,
    deny_bots: str | None,
    min_length: int,
    negatives_ratio: float,
    seed: int,
    max_rate_wait: float,
    bot_login: str | None,
    as_json: bool,
) -> None:
    """Harvest OWNER/REPO's pull-request review comments into training examples.

    \b
    Incremental: a second run reads only comments changed since the first. Interrupted
    runs (Ctrl-C, a kill, a network failure) keep what was fetched and resume.
    """
    from adapters.github import GitHubClient

    def connect(settings: Any) -> Any:
        client = GitHubClient.from_settings(settings, token=token or None, api_url=api_url, max_rate_wait=max_rate_wait)
        if client.anonymous:
            if not anonymous:
                client.close()
                raise UsageError(NO_CREDENTIALS)
            warn(
                f"harvesting {repo} anonymously: public repositories only, and github.com allows 60 requests an "
                "hour without a token (set GITHUB_TOKEN for 5000)"
            )
        return client

    options = dict(full=full, rebuild=rebuild, since=since, until=until, authors=authors, deny_bots=deny_bots)
    options.update(min_length=min_length, negatives_ratio=negatives_ratio, seed=seed, bot_login=bot_login)
    _run(lambda: _harvest(connect, repo, db, as_json, **options))


@harvest.command("gitlab")
@click.argument("project", metavar="GROUP/PROJECT")
@click.option("--db", type=click.Path(dir_okay=False), help=DB_HELP)
@click.option(
    "--url",
    help="The GitLab instance's root, e.g. https://gitlab.example.com (default $REVBOT_GITLAB_URL, else "
    "$GITLAB_URL, else https://gitlab.com).",
)
@click.option(
    "--token",
    help="GitLab token with the api (or read_api) scope (default $REVBOT_GITLAB_TOKEN, else $GITLAB_TOKEN; "
    "prefer the variable: a command line is visible to other users).",
)
@_filter_options
@click.option(
    "--bot-login",
    help="Comma-separated usernames revbot posts as (feedback on its comments is recorded). Default: "
    f"$REVBOT_BOT_LOGINS, else {','.join(sorted(DEFAULT_OWN_LOGINS))}.",
)
@summary_format_option("the summary")
def harvest_gitlab_cmd(
    project: str,
    db: str | None,
    url: str | None,
    token: str | None,
    full: bool,
    rebuild: bool,
    since: str | None,
    until: str | None,
    authors: str | None,
    deny_bots: str | None,
    min_length: int,
    negatives_ratio: float,
    seed: int,
    bot_login: str | None,
    as_json: bool,
) -> None:
    """Harvest GROUP/PROJECT's merge-request review threads into training examples.

    \b
    DiffNote discussions (comments on diff lines) and their replies; each comment's hunk is
    rebuilt from the merge request's diff at the note's own commits. Incremental and resumable
    like `harvest github`; 429 answers wait for Retry-After.
    """
    from adapters.gitlab import GitLabClient

    def connect(settings: Any) -> Any:
        client = GitLabClient(token or settings.secret("gitlab_token"), url=url or settings.gitlab_url)
        if client.anonymous:
            client.close()
            raise UsageError(NO_GITLAB_CREDENTIALS)
        return client

    options = dict(full=full, rebuild=rebuild, since=since, until=until, authors=authors, deny_bots=deny_bots)
    options.update(min_length=min_length, negatives_ratio=negatives_ratio, seed=seed, bot_login=bot_login)
    _run(lambda: _harvest(connect, project, db, as_json, **options))


def _harvest(connect: Callable[[Any], Any], repo: str, db: str | None, as_json: bool, **flags: Any) -> None:
    """One harvest through the forge client ``connect(settings)`` builds; the summary printed."""
    from adapters.settings import Settings
    from harvest.mine import HarvestInterrupted, HarvestOptions, harvest_github

    # the store, the token and the bot's logins default to the settings model's
    settings = Settings.from_env()
    options = HarvestOptions(
        full=flags["full"],
        rebuild=flags["rebuild"],
        since=_when(flags["since"], "--since"),
        until=_when(flags["until"], "--until"),
        authors=_logins(flags["authors"]) or None,
        deny=_logins(flags["deny_bots"]),
        min_length=flags["min_length"],
        negatives_ratio=flags["negatives_ratio"],
        seed=flags["seed"],
        own_logins=_logins(flags["bot_login"]) or settings.bot_logins or DEFAULT_OWN_LOGINS,
        progress=not (quiet() or as_json) and sys.stderr.isatty(),
    )
    client = connect(settings)
    store = Store(db)
    try:
        summary = harvest_github(client, store, repo, options)
    except HarvestInterrupted as exc:
        click.echo(exc.summary.text(), err=True)
        raise
    except ForgeError as exc:
        raise type(exc)(
            f"{exc}\nEverything fetched before the failure is stored; run the same command again to resume.",
            exc.status,
        ) from exc
    finally:
        client.close()
    click.echo(json.dumps(summary.to_dict(), indent=2) if as_json else summary.text())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def dataset() -> None:
    """Import, export and inspect training examples."""


@dataset.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--input-format",
    "fmt",
    type=click.Choice(IMPORT_FORMATS),
    required=True,
    help="What the file holds.",
)
@click.option(
    "--field-map",
    help="For --input-format jsonl: KEY=FIELD pairs, keys hunk, comment, path, line, pr, time, repo, id, side, "
    "start_line (e.g. hunk=code,comment=comment,path=file_path,line=line_number).",
)
@click.option("--skip-bad", is_flag=True, help="Skip malformed records (counted) instead of stopping at the first.")
@click.option(
    "--keep-review-tool-comments",
    "keep_tool_comments",
    is_flag=True,
    help="Keep comments stamped by AI review tools (Gemini Code Assist badges, CodeRabbit markers, ...); "
    "by default they are dropped and counted.",
)
@click.option("--repo", help="Repository name for records that carry none.")
@click.option("--db", type=click.Path(dir_okay=False), help=DB_HELP)
@summary_format_option("the result")
def import_cmd(
    file: str,
    fmt: str,
    field_map: str | None,
    skip_bad: bool,
    keep_tool_comments: bool,
    repo: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """Import a dataset FILE (JSONL or a JSON array) into the store as training examples."""
    from bot.datasets import parse_field_map
    from harvest.datasets import import_dataset

    def go() -> None:
        fmap = parse_field_map(field_map)
        if fmap is not None and fmt != "jsonl":
            raise UsageError("--field-map applies to --input-format jsonl only")
        if not os.path.exists(file):
            raise UsageError(f"{file}: no such file")
        result = import_dataset(
            Store(db), file, fmt, field_map=fmap, skip_bad=skip_bad, repo=repo, keep_tool_comments=keep_tool_comments
        )
        click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.text())

    _run(go)


@dataset.command("export")
@click.option(
    "--format",
    "fmt",
    required=True,
    type=click.Choice(["alpaca", "sharegpt", "openai", "jsonl"]),
    help="Output format.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Output file ('-' for stdout).",
)
@click.option("--repo", help="Only this repository's examples.")
@click.option(
    "--no-meta", is_flag=True, help="Leave out the 'revbot' block (ids, provenance) for tools that refuse unknown keys."
)
@click.option("--db", type=click.Path(dir_okay=False), help=DB_HELP)
def export_cmd(fmt: str, output: str, repo: str | None, no_meta: bool, db: str | None) -> None:
    """Export the store's examples, oldest first, rendered by the prompt contract."""
    from harvest.datasets import export_examples

    def go() -> None:
        count = export_examples(Store(db).iter_examples(repo), output, fmt, meta=not no_meta)
        if output != "-":
            click.echo(f"wrote {count} example(s) as {fmt} to {output}")

    _run(go)


def _stats_table(repos: list[tuple[str, dict[str, Any]]]) -> str:
    """Per-repository counts as a fixed-width table, numbers right-aligned."""
    header = [
        "repository",
        "comments",
        "replies",
        "by bots",
        "PRs",
        "positive",
        "negative",
        "read up to",
        "PRs to rebuild",
    ]
    rows = [
        [
            name,
            str(r["comments"]),
            str(r["replies"]),
            str(r["bot_comments"]),
            str(r["prs"]),
            str(r["positive"]),
            str(r["negative"]),
            r["high_water"] or "–",
            str(r["pending_prs"]),
        ]
        for name, r in repos
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i in (0, 7) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataset.command("stats")
@click.option("--db", type=click.Path(dir_okay=False), help=DB_HELP)
@summary_format_option("the counts")
def stats_cmd(db: str | None, as_json: bool) -> None:
    """Counts of stored comments and of positive and negative examples, per repository."""

    def go() -> None:
        path = db or str(default_db_path())
        if not os.path.exists(path):
            raise UsageError(f"{path}: no such store (run `revbot harvest github` or `revbot dataset import` first)")
        stats = Store(path).stats()
        if as_json:
            click.echo(json.dumps(stats, indent=2))
            return
        click.echo(
            f"store {stats['path']} (schema {stats['schema_version']}): {stats['comments']} comments stored; "
            f"examples: {stats['positive']} positive, {stats['negative']} negative"
        )
        repos = sorted(
            stats["repos"].items(), key=lambda kv: -(kv[1]["comments"] + kv[1]["positive"] + kv[1]["negative"])
        )
        if repos:
            click.echo("")
            click.echo(_stats_table(repos[:20]))
        if len(repos) > 20:
            click.echo(f"... and {len(repos) - 20} more repositories (--format json lists all)")
        if stats["examples_by_source"]:
            click.echo("\nexamples by source: " + ", ".join(f"{k} {v}" for k, v in stats["examples_by_source"].items()))
        if stats["bot_feedback"]:
            click.echo(f"feedback rows on the bot's comments: {stats['bot_feedback']}")

    _run(go)
