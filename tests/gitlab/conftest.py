"""Fixtures for the GitLab adapter: the recorded material and a simulator on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.gitlab import GitLabClient
from revbot.dev.gitlab_sim import GitLabSimulator

PROJECT = "acme/tools/widgets"  # a subgroup: GitLab paths are not OWNER/NAME
BASE = "".join(f"line {i}\n" for i in range(1, 21))
CHANGED = BASE.replace("line 5\n", "line five\n").replace("line 15\n", "")


def load(path: Path):
    """A fixture file without its provenance keys (``_source``, ``_about``...)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if not k.startswith("_")}
    return data


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
