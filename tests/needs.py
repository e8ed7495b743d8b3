"""What the suite needs from outside the repository, and what happens when it is missing.

On a developer's machine a missing service or file skips the tests that need it, with the reason.
CI sets ``REVBOT_REQUIRE_<NAME>=1`` for each of them (``.ci/run``): then the session does not start
without it (one line saying what is missing and how to provide it), and a fixture that still finds it
missing fails its test instead of skipping it, so no part of the suite can pass untested."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
REDIS_URL = os.environ.get("REVBOT_TEST_REDIS_URL") or "redis://127.0.0.1:6379/15"
# the files of ../shared the tests read
SHARED_FILES = (
    "data/crc-py/reviews.jsonl",
    "reference/codereviewer-bleu/smooth_bleu.py",
    "fixtures/diffs",
    "fixtures/github/replay",
    "fixtures/github/openapi",
    "fixtures/github/webhooks",
)
TOOLS = ("hadolint", "check-jsonschema")


def _redis() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        return f"no Redis server answers at {REDIS_URL} ({exc}); start one or set REVBOT_TEST_REDIS_URL"
    return None


def _shared() -> str | None:
    missing = [name for name in SHARED_FILES if not (SHARED / name).exists()]
    if missing:
        return f"the shared data folder {SHARED} lacks {', '.join(missing)}"
    return None


def _nltk() -> str | None:
    missing = [name for name in ("nltk", "rouge_score") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed (test dependencies: pip install -e '.[test]')"
    return None


def tool_path(name: str) -> str | None:
    found = Path(sys.executable).parent / name
    return str(found) if found.exists() else shutil.which(name)


def _tools() -> str | None:
    missing = [name for name in TOOLS if tool_path(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed (test dependencies: pip install -e '.[test]')"
    return None


def _browser() -> str | None:
    """Debian's chromium and chromium-driver, and selenium: the operator pages' browser tests."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium (test dependencies: pip install -e '.[test]')")
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)"
    return None


@dataclass(frozen=True)
class Need:
    name: str
    check: Callable[[], str | None]  # what is missing, or None

    @property
    def variable(self) -> str:
        return f"REVBOT_REQUIRE_{self.name.upper()}"

    @property
    def required(self) -> bool:
        return os.environ.get(self.variable, "") not in ("", "0")


NEEDS = {
    need.name: need
    for need in (
        Need("redis", _redis),
        Need("shared", _shared),
        Need("nltk", _nltk),
        Need("tools", _tools),
        Need("browser", _browser),
    )
}


def missing_required() -> list[str]:
    """One line per required need that is missing (what the session refuses to start without)."""
    lines = []
    for need in NEEDS.values():
        if need.required and (what := need.check()) is not None:
            lines.append(f"missing ({need.variable}=1): {what}")
    return lines


def lacking(name: str, what: str) -> None:
    """A test cannot run because ``what`` (of need ``name``) is missing: a failure when the need is
    required, else a skip with the reason."""
    need = NEEDS[name]
    if need.required:
        pytest.fail(f"missing ({need.variable}=1): {what}", pytrace=False)
    pytest.skip(what)
