"""Fixtures for harvest tests: a temporary store, GitHub simulators on loopback, clients for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "revbot.db")


@pytest.fixture
def sim_factory():
    from revbot.dev.github_sim import GitHubSimulator

    started = []

    def make(seed: dict | None = None, **kw):
        sim = GitHubSimulator(seed, **kw).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def client_for():
    """A GitHubClient for a simulator that never really sleeps, recording the waits asked for."""
    from adapters.github import GitHubClient

    made = []

    def make(sim, token: str = "t", **kw):
        waits: list[float] = []
        client = GitHubClient(token, api_url=sim.url, sleep=waits.append, backoff_factor=0.01, **kw)
        client.waits = waits
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
