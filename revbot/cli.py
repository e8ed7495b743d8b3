"""The `revbot` command. Subcommands are imported only when run, so `revbot --help` stays fast
and a missing optional dependency of one command never breaks another."""

from __future__ import annotations

import importlib
import os
import sys

import click

from adapters.cli_options import add_global_flags, configure_logging_for, error_line, fail, show_usage_error

# command name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    "review": "revbot.review_cli:review",
    "harvest": "harvest.cli:harvest",
    "dataset": "harvest.cli:dataset",
    "train": "finetune.cli:train",
    "eval": "finetune.cli:eval_cmd",
    "score": "finetune.cli:score",
    "models": "finetune.cli:models",
    "export": "finetune.cli:export",
    "serve": "webhooks.cli:serve",
    "worker": "webhooks.cli:worker",
    "retrain": "revbot.retrain:retrain_cmd",
    "demo": "revbot.dev.demo:demo_cmd",
    "dev": "revbot.dev.cli:dev",
}

SHORT_HELP: dict[str, str] = {
    "review": "Review a diff locally and print comments.",
    "harvest": "Mine past review comments into the dataset store.",
    "dataset": "Import, export and inspect training examples.",
    "train": "Train a QLoRA adapter; writes a new model version.",
    "eval": "Evaluate a model version against baselines.",
    "score": "Score prediction vs reference files (BLEU-4, ROUGE-L).",
    "models": "List, promote and roll back model versions.",
    "export": "Merge an adapter into its base model for serving.",
    "serve": "Run the webhook service (web + worker).",
    "worker": "Run queue workers alone (scaled-out deployment).",
    "retrain": "Harvest new reviews, train, evaluate, promote if better.",
    "demo": "Run the whole loop offline on an embedded sample project.",
    "dev": "Developer tools: tiny test models, the GitHub simulator.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise click.ClickException(f"the '{name}' command could not be loaded: {exc}") from exc
        # -v/-q after the subcommand too, on every command (one definition, in adapters.cli_options)
        return add_global_flags(getattr(module, attr))

    def format_commands(self, ctx, formatter):
        rows = [(name, SHORT_HELP.get(name, "")) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="revbot", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """revbot: a self-hosted code reviewer that learns your team's review style.

    \b
    The loop:  harvest -> train -> eval -> serve -> retrain
    Try it offline first:  revbot demo
    The same names everywhere: --model a base model, --version a model version (vN, current,
    latest), --db the dataset store, --format an output format, --input-format an input one.
    """
    configure_logging_for(ctx)


add_global_flags(cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point. Every error is one ``revbot: error: ...`` line on stderr (a usage error after the
    usage line), scrubbed of secrets, never a traceback. Exit codes: a RevbotError's own (1, or 2 for
    bad usage), click's 2 for usage errors, 130 on Ctrl-C."""
    from bot.errors import RevbotError

    # Self-hosted means nothing phones home: the Hugging Face libraries send usage telemetry unless
    # told not to, and read this before they are imported.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        # standalone_mode=False: click leaves its errors to us, so they get the same prefix
        code = cli.main(args=argv, prog_name="revbot", standalone_mode=False)
    except RevbotError as exc:
        fail(exc)
    except click.UsageError as exc:
        show_usage_error(exc)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(error_line(exc.format_message()), err=True)
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    if isinstance(code, int) and code:  # ctx.exit(N) inside a command
        sys.exit(code)
