"""Fixtures of the webhook tests: job stores (SQLite, and Redis when a server answers) on a clock
the test moves, so leases and backoff never depend on how busy the machine is."""

from __future__ import annotations

import uuid

import pytest

from tests.needs import REDIS_URL, lacking
from webhooks.jobs import SqliteJobStore


class FakeClock:
    """``time.time`` that moves only when the test says so."""

    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        lacking(
            "redis", f"no Redis server answers at {REDIS_URL} ({exc}); set REVBOT_TEST_REDIS_URL (.ci/run starts one)"
        )
    return REDIS_URL


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "redis"])
def job_store(request, tmp_path, clock):
    if request.param == "sqlite":
        store = SqliteJobStore(tmp_path / "jobs.db", clock=clock)
        yield store
        store.close()
        return
    from webhooks.jobs_redis import RedisJobStore

    store = RedisJobStore(request.getfixturevalue("redis_url"), name=f"test{uuid.uuid4().hex[:10]}", clock=clock)
    yield store
    store.flush_all()
    store.close()
