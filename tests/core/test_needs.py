"""What CI requires (REVBOT_REQUIRE_<NAME>=1) fails the run when it is missing, with one line saying
what; unrequired, a missing service skips only the tests that need it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import needs

ROOT = Path(__file__).resolve().parents[2]
CLOSED = "redis://127.0.0.1:1/3"  # nothing listens on port 1


def test_a_required_missing_need_is_one_line_and_an_unrequired_one_is_none(monkeypatch):
    monkeypatch.setattr(needs, "REDIS_URL", CLOSED)
    monkeypatch.delenv("REVBOT_REQUIRE_REDIS", raising=False)
    for name in ("SHARED", "NLTK", "TOOLS"):
        monkeypatch.delenv(f"REVBOT_REQUIRE_{name}", raising=False)
    assert needs.missing_required() == []
    monkeypatch.setenv("REVBOT_REQUIRE_REDIS", "1")
    (line,) = needs.missing_required()
    assert line.startswith("missing (REVBOT_REQUIRE_REDIS=1): no Redis server answers at " + CLOSED)
    monkeypatch.setattr(needs, "SHARED", Path("/nonexistent/shared"))
    monkeypatch.setenv("REVBOT_REQUIRE_SHARED", "1")
    lines = needs.missing_required()
    assert len(lines) == 2 and "lacks data/crc-py/reviews.jsonl" in lines[1]


def test_lacking_skips_unless_required(monkeypatch):
    monkeypatch.delenv("REVBOT_REQUIRE_REDIS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server"):
        needs.lacking("redis", "no server")
    monkeypatch.setenv("REVBOT_REQUIRE_REDIS", "1")
    with pytest.raises(pytest.fail.Exception, match=r"missing \(REVBOT_REQUIRE_REDIS=1\): no server"):
        needs.lacking("redis", "no server")


def test_the_session_does_not_start_without_a_required_redis(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVBOT_REQUIRE_")}
    env.update(REVBOT_REQUIRE_REDIS="1", REVBOT_TEST_REDIS_URL=CLOSED, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/core/test_needs.py", "-k", "lacking"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 4, done.stdout + done.stderr
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1, done.stdout + done.stderr
    assert errors[0].startswith(f"ERROR: missing (REVBOT_REQUIRE_REDIS=1): no Redis server answers at {CLOSED}")
    assert "passed" not in done.stdout
