"""Fixtures for the GitHub layer: a seeded simulator on loopback and clients that never really sleep."""

from __future__ import annotations

import pytest
from ghsim_data import TOKEN, Sleeps, make_seed

from adapters.github import GitHubClient
from revbot.dev.github_sim import GitHubSimulator


@pytest.fixture
def sim():
    with GitHubSimulator(make_seed()) as simulator:
        yield simulator


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(sim: GitHubSimulator, sleeps: Sleeps):
    with GitHubClient(TOKEN, api_url=sim.url, sleep=sleeps, min_write_interval=0, secondary_wait=5) as gh:
        yield gh
