"""``revbot dev …``: tools for developing and testing revbot, not for reviewing code.

``revbot dev init-model`` builds a tiny random model (tests and the quick demo only: it says nothing
useful); ``revbot dev github-sim`` runs the GitHub API simulator on loopback. The shell reaches this
module by name only, so no production module imports the development package."""

from __future__ import annotations

import click

from revbot.dev.github_sim import github_sim_command
from revbot.dev.tiny import init_model_command


@click.group("dev", context_settings={"help_option_names": ["-h", "--help"]})
def dev() -> None:
    """Development tools: a tiny random model and the GitHub simulator (tests and the demo only)."""


dev.add_command(init_model_command, "init-model")
dev.add_command(github_sim_command, "github-sim")
