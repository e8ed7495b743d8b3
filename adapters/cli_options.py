"""What every `revbot` command shares: the global flags, the options that mean one thing everywhere
(``--quantize``, a summary's ``--format``, ``--actor``), and how errors, warnings and info lines are printed.

* ``-v/--verbose`` and ``-q/--quiet`` are accepted before and after the subcommand
  (``add_global_flags``, applied by the shell to every command it loads). Quiet hides progress bars
  and info lines; warnings and errors still show.
* Every error is printed as ``revbot: error: ...`` (``fail``, ``show_usage_error``), every warning
  as ``revbot: warning: ...``; messages are scrubbed of secrets first.
"""

from __future__ import annotations

import functools
import getpass
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click

from bot.errors import RevbotError
from bot.secrets import scrub_text

PROG = "revbot"
_FLAGS_KEY = "revbot.flags"
_GLOBAL_FLAG_NAMES = ("verbose", "quiet")

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- messages


def error_line(message: str) -> str:
    return f"{PROG}: error: {scrub_text(message)}"


def fail(exc: RevbotError) -> NoReturn:
    """Print a RevbotError as ``revbot: error: ...`` and exit with its code. The error line never
    carries a traceback; at -vv (debug logging) the error's traceback and the chain of causes under
    it are logged first, scrubbed like every log record, for whoever needs to see what went wrong."""
    log.debug("%s: %s", type(exc).__name__, exc, exc_info=exc)
    click.echo(error_line(str(exc)), err=True)
    sys.exit(exc.exit_code)


def warn(message: str) -> None:
    click.echo(f"{PROG}: warning: {scrub_text(message)}", err=True)


def info(message: str) -> None:
    """An info line on stderr (what was written where, which default was taken); -q hides it."""
    if not quiet():
        click.echo(message, err=True)


def show_usage_error(exc: click.UsageError) -> None:
    """A click usage error with the usage line and the help hint, and the one error prefix."""
    ctx = exc.ctx
    if ctx is not None:
        click.echo(ctx.get_usage(), err=True)
        if ctx.command.get_help_option(ctx) is not None:
            option = ctx.help_option_names[0]
            click.echo(f"Try '{ctx.command_path} {option}' for help.", err=True)
        click.echo("", err=True)
    click.echo(error_line(exc.format_message()), err=True)


# --------------------------------------------------------------------------- global flags


@dataclass
class Flags:
    verbose: int = 0
    quiet: bool = False
    bad_log_level_told: bool = False  # a bad REVBOT_LOG_LEVEL is warned about once per command line


def _flags(ctx: click.Context) -> Flags:
    # ctx.meta is one dict shared by a context and every context nested in it
    flags = ctx.meta.get(_FLAGS_KEY)
    if flags is None:
        flags = ctx.meta[_FLAGS_KEY] = Flags()
    return flags


def current_flags() -> Flags:
    ctx = click.get_current_context(silent=True)
    return _flags(ctx) if ctx is not None else Flags()


def quiet() -> bool:
    """-q/--quiet was given before or after the subcommand."""
    return current_flags().quiet


def set_quiet(ctx: click.Context, value: Any = True) -> None:
    if value:
        _flags(ctx).quiet = True


def _flag_level(verbose: int) -> int:
    return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)


def log_level(verbose: int, env: Mapping[str, str] | None = None) -> int:
    """-v: info, -vv: debug; REVBOT_LOG_LEVEL, when set, wins. The variable is read through the
    settings model (``env``: a mapping instead of ``os.environ``), so a value it refuses is its
    UsageError, naming the variable and the levels it takes."""
    from adapters.settings import Settings

    settings = Settings.from_env(env, only=("log_level",))
    if "log_level" not in settings.model_fields_set:
        return _flag_level(verbose)
    return int(logging.getLevelNamesMapping()[settings.log_level])


def configure_logging_for(ctx: click.Context) -> None:
    """Set the log level from -v and REVBOT_LOG_LEVEL. A bad REVBOT_LOG_LEVEL is one warning line
    (the settings model's message) and the flags decide: it must not stop ``--help`` or a command
    that reads no other setting; one that reads its settings refuses the value with the same message."""
    from adapters.logs import configure_logging

    flags = _flags(ctx)
    try:
        level = log_level(flags.verbose)
    except RevbotError as exc:
        level = _flag_level(flags.verbose)
        if not flags.bad_log_level_told:
            flags.bad_log_level_told = True
            warn(f"{exc}; logging at {logging.getLevelName(level)} instead")
    configure_logging(level)


def _on_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value:
        _flags(ctx).verbose += value
        configure_logging_for(ctx)


def _on_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    set_quiet(ctx, value)


def _global_params() -> list[click.Option]:
    return [
        click.Option(
            ["-v", "--verbose"],
            count=True,
            expose_value=False,
            callback=_on_verbose,
            help="More log output (-vv for debug); before or after the command.",
        ),
        click.Option(
            ["-q", "--quiet"],
            is_flag=True,
            expose_value=False,
            callback=_on_quiet,
            help="No progress bars or info lines (warnings and errors still show); before or after the command.",
        ),
    ]


def add_global_flags(command: click.Command) -> click.Command:
    """Give ``command`` (and every command under it, for a group) -v/--verbose and -q/--quiet.
    Idempotent: the shell calls it each time it loads a command."""
    names = {p.name for p in command.params}
    if not names & set(_GLOBAL_FLAG_NAMES):
        command.params.extend(_global_params())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_global_flags(sub)
    return command


# --------------------------------------------------------------------------- shared options


QUANTIZE_CHOICES = ("4bit", "none")


def quantize_option(help: str) -> Callable[[F], F]:
    """``--quantize [4bit|none]``, the one spelling in every command that loads or trains a model: a
    bare ``--quantize`` means 4bit; left out, the device decides (4-bit on CUDA, full precision on a
    CPU, where it measured faster)."""
    return click.option(
        "--quantize",
        type=click.Choice(QUANTIZE_CHOICES),
        is_flag=False,
        flag_value="4bit",
        default=None,
        metavar="[4bit|none]",
        help=help,
    )


def summary_format_option(what: str) -> Callable[[F], F]:
    """``--format text|json`` for a command whose output is a summary (``what``): text for a person,
    JSON for a machine. The command receives ``as_json``. (``--format`` is an output format in every
    command; inputs use ``--input-format``.)"""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs["as_json"] = kwargs.pop("output_format") == "json"
            return f(*args, **kwargs)

        return click.option(
            "--format",
            "output_format",
            type=click.Choice(("text", "json")),
            default="text",
            show_default=True,
            metavar="[text|json]",
            help=f"Output: {what} as text, or as JSON for a machine.",
        )(wrapper)  # type: ignore[return-value]

    return decorate


def os_user() -> str:
    """The operating-system user running this process (``getpass.getuser``), or "unknown" when it
    cannot be told (no login variable and no password-database entry for the uid)."""
    try:
        return getpass.getuser() or "unknown"
    except (OSError, KeyError, ImportError):  # OSError from 3.13 on; KeyError/ImportError before
        return "unknown"


def _actor(ctx: click.Context, param: click.Parameter, value: str) -> str:
    name = " ".join(value.split())
    if not name:
        raise click.BadParameter("names no one; give a person or a system, e.g. --actor alice")
    return name


def actor_option(f: F) -> F:
    """``--actor NAME``: who promotes or rolls back a model version, recorded with it in the
    registry's events log (``models/events.jsonl``); default the operating-system user (``os_user``)."""
    return click.option(
        "--actor",
        metavar="NAME",
        default=os_user,
        callback=_actor,
        help="Who is doing this, recorded in the models' events log (models/events.jsonl) when a version is "
        "promoted or rolled back. Default: the operating-system user.",
    )(f)
