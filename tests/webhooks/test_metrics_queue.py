"""Metrics text and the huey transport (JSON messages, both storages, restart survival)."""
from __future__ import annotations

import re

import pytest

from webhooks.jobs import QueueError, SqliteJobStore
from webhooks.metrics import Metrics
from webhooks.queue import JsonSerializer, open_queue, parse_queue_url


def parse_prometheus(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_render_counters_gauges_and_histograms():
    m = Metrics(flush_interval=3600)
    m.inc("revbot_webhook_deliveries_total", {"event": "pull_request", "outcome": "queued"})
    m.inc("revbot_webhook_deliveries_total", {"event": "pull_request", "outcome": "queued"})
    m.inc("revbot_comments_posted_total", value=3)
    m.observe("revbot_review_latency_seconds", 1.7)
    m.observe("revbot_review_latency_seconds", 42)
    text = m.render(lambda: [("revbot_jobs", {"state": "queued"}, 4)])
    s = parse_prometheus(text)
    assert s['revbot_webhook_deliveries_total{event="pull_request",outcome="queued"}'] == 2
    assert s["revbot_comments_posted_total"] == 3
    assert s['revbot_jobs{state="queued"}'] == 4
    assert s['revbot_review_latency_seconds_bucket{le="1"}'] == 0
    assert s['revbot_review_latency_seconds_bucket{le="2.5"}'] == 1
    assert s['revbot_review_latency_seconds_bucket{le="60"}'] == 2
    assert s['revbot_review_latency_seconds_bucket{le="+Inf"}'] == 2
    assert s["revbot_review_latency_seconds_count"] == 2 and s["revbot_review_latency_seconds_sum"] == 43.7
    assert "# TYPE revbot_review_latency_seconds histogram" in text
    assert "# TYPE revbot_webhook_deliveries_total counter" in text
    # buckets of one histogram are listed in increasing order
    bounds = re.findall(r'revbot_review_latency_seconds_bucket\{le="([^"]+)"\}', text)
    assert bounds[-1] == "+Inf" and [float(b) for b in bounds[:-1]] == sorted(float(b) for b in bounds[:-1])


def test_label_values_are_escaped():
    m = Metrics()
    m.inc("revbot_github_api_errors_total", {"status": 'a"b\\c\nd'})
    assert 'status="a\\"b\\\\c\\nd"' in m.render()


def test_processes_sharing_a_store_report_the_same_totals(tmp_path):
    store_a, store_b = SqliteJobStore(tmp_path / "q.db"), SqliteJobStore(tmp_path / "q.db")
    web, worker = Metrics(store_a, flush_interval=3600), Metrics(store_b, flush_interval=3600)
    web.inc("revbot_webhook_deliveries_total", {"event": "ping", "outcome": "pong"})
    worker.inc("revbot_comments_posted_total", value=5)
    worker.flush()
    for m in (web, worker):
        s = parse_prometheus(m.render())
        assert s["revbot_comments_posted_total"] == 5
    assert parse_prometheus(worker.render())['revbot_webhook_deliveries_total{event="ping",outcome="pong"}'] == 1


def test_parse_queue_url(tmp_path):
    assert parse_queue_url(None, tmp_path).path == tmp_path / "revbot-queue.db"
    assert parse_queue_url("q.db", tmp_path).path == tmp_path / "q.db"
    assert parse_queue_url("sqlite:////srv/q.db", tmp_path).path.as_posix() == "/srv/q.db"
    assert parse_queue_url("sqlite:///srv/q.db", tmp_path).path.as_posix() == "/srv/q.db"
    spec = parse_queue_url("redis://:hunter2@127.0.0.1:6379/3", tmp_path)
    assert spec.kind == "redis" and "hunter2" not in spec.describe()
    with pytest.raises(QueueError, match="REVBOT_QUEUE"):
        parse_queue_url("amqp://x", tmp_path)


def test_sqlite_queue_survives_a_restart_and_carries_json(tmp_path):
    q = open_queue(tmp_path / "q.db")
    q.push(7)
    q.push(8)
    raw = q.huey.storage.enqueued_items()
    assert all(bytes(item).startswith(b"{") for item in raw)  # JSON, never pickle
    q.close()
    again = open_queue(tmp_path / "q.db")
    assert again.size() == 2
    assert [again.pop(0.1), again.pop(0.1), again.pop(0.05)] == [7, 8, None]


def test_json_serializer_refuses_task_chains():
    from huey.registry import Message

    with pytest.raises(ValueError):
        JsonSerializer().serialize(Message("id", "x", None, 0, 0, None, (1,), {}, Message("2", "y"), None))


def test_redis_queue(redis_url):
    q = open_queue(redis_url)
    q.huey.storage.flush_queue()
    q.store.ping()
    q.push(11)
    assert q.size() == 1 and q.pop(1) == 11
    q.close()


def test_unreachable_redis_is_a_clear_error():
    with pytest.raises(QueueError, match="unreachable"):
        open_queue("redis://127.0.0.1:1/0")


def test_a_job_and_its_message_are_committed_together(tmp_path):
    import time

    from webhooks.jobs import REVIEW, NewJob, review_key

    q = open_queue(tmp_path / "q.db")
    job = NewJob(REVIEW, review_key("acme/widgets", 1, "a"), "acme/widgets", 1, "a", {})
    accepted = q.submit("d1", "pull_request", "opened", job)
    assert q.size() == 1 and q.pop(0.1) == accepted.job_id
    assert q.submit("d1", "pull_request", "opened", job).duplicate and q.size() == 0
    # a worker takes the message and dies: the reaper writes a new message with the requeued job
    assert q.store.claim(accepted.job_id, "dead", 0.01)
    time.sleep(0.05)
    assert q.reap(600, 5) == [accepted.job_id]
    assert q.pop(0.1) == accepted.job_id
