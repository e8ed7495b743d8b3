"""Fixtures of the webhook tests: job stores (SQLite, and Redis when a server answers)."""
from __future__ import annotations

import os
import uuid

import pytest

from webhooks.jobs import SqliteJobStore

REDIS_URL = os.environ.get("REVBOT_TEST_REDIS_URL") or "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis server answers at {REDIS_URL} ({exc}); set REVBOT_TEST_REDIS_URL (.ci/run starts one)")
    return REDIS_URL


@pytest.fixture(params=["sqlite", "redis"])
def job_store(request, tmp_path):
    if request.param == "sqlite":
        store = SqliteJobStore(tmp_path / "jobs.db")
        yield store
        store.close()
        return
    from webhooks.jobs_redis import RedisJobStore

    store = RedisJobStore(request.getfixturevalue("redis_url"), name=f"test{uuid.uuid4().hex[:10]}")
    yield store
    store.flush_all()
    store.close()
