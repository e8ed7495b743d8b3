"""Session-wide fixtures: the shared data folder and tiny models of real architectures, built once."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.needs import SHARED, lacking, missing_required

ROOT = Path(__file__).resolve().parent.parent

# Tests never reach a model hub: fail fast instead of hanging on a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
# Tiny models gain nothing from intra-op threads, and on 2 cores shared with the subprocesses some
# tests start (service, workers) extra threads only contend: one thread each keeps timings steady.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# The embedded model is converted once per test session into a cache of the session's own, so the
# suite exercises the real conversion and never touches the user's cache.
_CACHE = tempfile.mkdtemp(prefix="revbot-test-cache-")
os.environ["REVBOT_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    """What CI requires (REVBOT_REQUIRE_<NAME>=1, see tests/needs.py) is there before a test runs."""
    missing = missing_required()
    if missing:
        raise pytest.UsageError("\n".join(missing))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """How many tests ran per area (tests/<area>/), and how many were skipped: a part of the suite
    that did not run shows here even when everything else passed."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "") or ""
            if outcome == "error" and getattr(report, "when", "") == "teardown":
                continue
            parts = nodeid.split("/")
            area = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
            counts.setdefault(area, {}).setdefault(outcome, 0)
            counts[area][outcome] += 1
    if not counts:
        return
    terminalreporter.section("tests per area")
    for area in sorted(counts):
        ran = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts[area].items()))
        terminalreporter.write_line(f"{area:<10} {ran}")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        lacking("shared", f"shared data folder not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from revbot.dev.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), arch="llama", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    from revbot.dev.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen"), arch="qwen2", seed=0)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted from its packaged GGUF once per session (~20 s)."""
    from adapters.embedded import DEFAULT_BASE_MODEL, resolve

    return Path(resolve(DEFAULT_BASE_MODEL, quiet=True))
