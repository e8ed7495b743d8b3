"""Fixtures of the end-to-end tests: the demo's sample project served by the GitHub simulator."""

from __future__ import annotations

import pytest
from e2e_kit import BOT, TOKEN


@pytest.fixture(scope="session")
def sample_project():
    from revbot.dev.demo_data.sample import build_sample_project

    return build_sample_project()


@pytest.fixture(scope="module")
def sample_sim(sample_project):
    """A simulator holding the sample project; only TOKEN (the bot's) is accepted."""
    from revbot.dev.demo_data.sample import to_seed
    from revbot.dev.github_sim import GitHubSimulator

    with GitHubSimulator(to_seed(sample_project, tokens=[{"token": TOKEN, "login": BOT, "type": "Bot"}])) as sim:
        yield sim
