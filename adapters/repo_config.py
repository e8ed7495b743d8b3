"""A repository's ``.revbot.yml`` read from disk (``revbot review``): the file's bytes go to
``bot.config.RepoConfig.from_yaml``, which parses and validates them; its errors name the file and
the line at fault."""

from __future__ import annotations

import os
from pathlib import Path

from bot.config import CONFIG_NAMES, RepoConfig
from bot.errors import UsageError


def load_repo_config(path: str | os.PathLike[str]) -> RepoConfig:
    """The configuration in the file at ``path``; a file that cannot be read is a UsageError."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read config file {p}: {exc.strerror or exc}") from exc
    return RepoConfig.from_yaml(text, source=str(p))


def find_repo_config(root: str | os.PathLike[str]) -> RepoConfig:
    """The ``.revbot.yml`` (or ``.revbot.yaml``) at a repository root, or the defaults when there is none."""
    for name in CONFIG_NAMES:
        candidate = Path(root) / name
        if candidate.is_file():
            return load_repo_config(candidate)
    return RepoConfig()
