"""What every `revbot` command shares: the global flags, the old option spellings kept for one release,
and how errors, warnings and info lines are printed.

* ``-v/--verbose`` and ``-q/--quiet`` are accepted before and after the subcommand
  (``add_global_flags``, applied by the shell to every command it loads). Quiet hides progress bars
  and info lines; warnings and errors still show.
* ``deprecated_alias`` keeps an old spelling (``--model-version``) working as a hidden option that
  prints one deprecation line and hands its value to the new option (``--version``).
* Every error is printed as ``revbot: error: ...`` (``fail``, ``show_usage_error``), every warning
  as ``revbot: warning: ...``; messages are scrubbed of secrets first.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

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
    """-q/--quiet (or a deprecated spelling of it) was given before or after the subcommand."""
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


# --------------------------------------------------------------------------- deprecated spellings


def deprecation_message(old: str, new: str) -> str:
    return f"{old} is deprecated, use {new} (the old spelling will be removed in the next release)"


def deprecated_alias(
    old: str, new: str, dest: str | Callable[[click.Context, Any], None], *, means: Any = None, **option: Any
) -> Callable[[F], F]:
    """A hidden option spelled the old way (``old``) for the option now spelled ``new``.

    Used, it prints one deprecation line on stderr and its value goes to the command's parameter
    ``dest`` (or, for a global flag, to the callable ``dest(ctx, value)``); ``means``, when given, is
    what an old flag stands for in the new option (``--json`` means ``--format json``). Giving both
    spellings is a usage error. ``option`` holds the click.option settings the value needs (type,
    is_flag). Apply it below ``@click.command`` like any option."""
    name = "deprecated_" + old.lstrip("-").replace("-", "_")

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            value = kwargs.pop(name, None)
            if value is None or value is False:
                return f(*args, **kwargs)
            ctx = click.get_current_context()
            if callable(dest):
                dest(ctx, value)
            else:
                if ctx.get_parameter_source(dest) is ParameterSource.COMMANDLINE:
                    raise click.UsageError(f"{old} is the old spelling of {new}: give {new} only", ctx=ctx)
                kwargs[dest] = value if means is None else means
            warn(deprecation_message(old, new))
            return f(*args, **kwargs)

        return click.option(old, name, hidden=True, default=None, **option)(wrapper)  # type: ignore[return-value]

    return decorate


QUANTIZE_CHOICES = ("4bit", "none")


def quantize_option(help: str) -> Callable[[F], F]:
    """``--quantize [4bit|none]``, the one spelling in every command that loads or trains a model: a
    bare ``--quantize`` means 4bit; left out, the device decides (4-bit on CUDA, full precision on a
    CPU, where it measured faster). ``--no-quantize`` (training's old flag) is kept as an old
    spelling of ``--quantize none``."""

    def decorate(f: F) -> F:
        f = deprecated_alias("--no-quantize", "--quantize none", lambda ctx, _v: None, is_flag=True)(f)
        f = _no_quantize_means_none(f)
        return click.option(
            "--quantize",
            type=click.Choice(QUANTIZE_CHOICES),
            is_flag=False,
            flag_value="4bit",
            default=None,
            metavar="[4bit|none]",
            help=help,
        )(f)

    return decorate


def _no_quantize_means_none(f: F) -> F:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        if ctx.params.get("deprecated_no_quantize"):
            if ctx.get_parameter_source("quantize") is ParameterSource.COMMANDLINE:
                raise click.UsageError("--no-quantize is the old spelling of --quantize none: give one", ctx=ctx)
            kwargs["quantize"] = "none"
        return f(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def summary_format_option(
    what: str, *, old_input: str | None = None, old_input_choices: Sequence[str] | None = None
) -> Callable[[F], F]:
    """``--format text|json`` for a command whose output is a summary (``what``): text for a person,
    JSON for a machine. The command receives ``as_json``; ``--json`` is kept as an old spelling of
    ``--format json``. (``--format`` is an output format in every command; inputs use ``--input-format``.)

    ``old_input`` names the parameter of a command where ``--format`` used to name the INPUT's
    format (now ``--input-format``): there a value other than text/json is still taken as the input
    format, for one release, with a deprecation line (``old_input_choices`` checks it)."""
    outputs = ("text", "json")

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            value = kwargs.pop("output_format")
            ctx = click.get_current_context()
            kwargs["as_json"] = value == "json"
            if value in outputs or old_input is None:
                return f(*args, **kwargs)
            if old_input_choices is not None and value not in old_input_choices:
                raise click.BadParameter(
                    f"{value!r} is not one of {', '.join(outputs)} (or, the old way, an input format: "
                    f"{', '.join(old_input_choices)})",
                    ctx=ctx,
                    param_hint="'--format'",
                )
            if ctx.get_parameter_source(old_input) is ParameterSource.COMMANDLINE:
                raise click.UsageError("--format FORMAT is the old spelling of --input-format: give one", ctx=ctx)
            warn(deprecation_message("--format", "--input-format") + " (for the file read; --format is now the output)")
            kwargs[old_input] = value
            return f(*args, **kwargs)

        # the old --json stands for --format json (the alias runs before the wrapper above)
        decorated = deprecated_alias("--json", "--format json", "output_format", means="json", is_flag=True)(wrapper)  # type: ignore[arg-type]
        choices = click.Choice(outputs) if old_input is None else click.STRING
        return click.option(
            "--format",
            "output_format",
            type=choices,
            default="text",
            show_default=True,
            metavar="[text|json]",
            help=f"Output: {what} as text, or as JSON for a machine.",
        )(decorated)  # type: ignore[return-value]

    return decorate
