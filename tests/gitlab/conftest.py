"""Fixtures for the GitLab adapter: the recorded material and a simulator on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from gitlab_kit import BASE, CHANGED, PROJECT

from adapters.gitlab import GitLabClient
from revbot.dev.gitlab_sim import GitLabSimulator


@pytest.fixture
def gitlab_fixtures(shared_dir: Path) -> Path:
    folder = shared_dir / "fixtures" / "gitlab"
    if not folder.is_dir():
        pytest.skip(f"no GitLab fixtures at {folder}")
    return folder


@pytest.fixture
def glsim():
    with GitLabSimulator() as sim:
        sim.add_project(PROJECT, files={"a.py": BASE, "b.py": "x = 1\n"}, members={"dev": 30, "rep": 20, "lead": 40})
        sim.add_merge_request(PROJECT, {"a.py": CHANGED, "c.py": "print(1)\n"}, author="dev", title="Rename")
        yield sim


@pytest.fixture
def gl(glsim: GitLabSimulator):
    with GitLabClient("t", url=glsim.url, per_page=2) as client:
        yield client
