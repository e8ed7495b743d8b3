"""The `revbot` command. Subcommands are imported only when run, so `revbot --help` stays fast
and a missing optional dependency of one command never breaks another."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

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
        return getattr(module, attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, SHORT_HELP.get(name, "")) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="revbot")
def cli(verbose: int) -> None:
    """revbot: a self-hosted code reviewer that learns your team's review style.

    \b
    The loop:  harvest -> train -> eval -> serve -> retrain
    Try it offline first:  revbot demo
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    level = getattr(logging, os.environ.get("REVBOT_LOG_LEVEL", "").upper(), level)
    from revbot.adapters.logs import configure_logging

    configure_logging(level)


def main(argv: list[str] | None = None) -> None:
    """Entry point. A RevbotError (bad input the user can fix) becomes ``revbot: error: ...`` and its
    exit code, never a traceback; the message is scrubbed of secrets first."""
    from bot.errors import RevbotError
    from bot.secrets import scrub_text

    # Self-hosted means nothing phones home: the Hugging Face libraries send usage telemetry unless
    # told not to, and read this before they are imported.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        cli.main(args=argv, prog_name="revbot")
    except RevbotError as exc:
        click.echo(f"revbot: error: {scrub_text(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
