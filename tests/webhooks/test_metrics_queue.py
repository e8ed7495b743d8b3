"""Metrics (prometheus_client, one process and several) and the queue door: where the queue lives,
and what a job payload may hold."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from webhooks.jobs import COMMENT, REVIEW, NewJob, QueueError, review_key
from webhooks.metrics import Metrics
from webhooks.queue import open_queue, parse_queue_url

ROOT = Path(__file__).resolve().parents[2]


def samples(text: bytes | str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value}, parsed by prometheus_client's own parser."""
    text = text.decode() if isinstance(text, bytes) else text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_render_counters_gauges_and_histograms():
    m = Metrics(gauges=lambda: [("revbot_jobs", {"state": "queued"}, 4), ("revbot_up", None, 1)])
    m.inc("revbot_webhook_deliveries_total", {"event": "pull_request", "outcome": "queued"})
    m.inc("revbot_webhook_deliveries_total", {"event": "pull_request", "outcome": "queued"})
    m.inc("revbot_comments_posted_total", value=3)
    m.observe("revbot_review_latency_seconds", 1.7)
    m.observe("revbot_review_latency_seconds", 42)
    text = m.render().decode()
    s = samples(text)
    assert s[("revbot_webhook_deliveries_total", (("event", "pull_request"), ("outcome", "queued")))] == 2
    assert s[("revbot_comments_posted_total", ())] == 3
    assert s[("revbot_jobs", (("state", "queued"),))] == 4 and s[("revbot_up", ())] == 1
    bucket = "revbot_review_latency_seconds_bucket"
    assert s[(bucket, (("le", "1.0"),))] == 0 and s[(bucket, (("le", "2.5"),))] == 1
    assert s[(bucket, (("le", "60.0"),))] == 2 and s[(bucket, (("le", "+Inf"),))] == 2
    assert s[("revbot_review_latency_seconds_count", ())] == 2
    assert s[("revbot_review_latency_seconds_sum", ())] == pytest.approx(43.7)
    assert "# TYPE revbot_review_latency_seconds histogram" in text
    assert "# TYPE revbot_webhook_deliveries_total counter" in text and "_created" not in text
    assert "revbot_comments_posted_total 3.0" in text  # the names dashboards already use


def test_each_metrics_object_counts_on_its_own_and_unknown_names_are_refused():
    a, b = Metrics(), Metrics()
    a.inc("revbot_model_reloads_total")
    assert samples(a.render())[("revbot_model_reloads_total", ())] == 1
    assert samples(b.render())[("revbot_model_reloads_total", ())] == 0
    with pytest.raises(ValueError, match="unknown metric 'revbot_nope_total'"):
        a.inc("revbot_nope_total")


def test_label_values_are_escaped():
    m = Metrics()
    m.inc("revbot_forge_api_errors_total", {"forge": "gitlab", "status": 'a"b\\c\nd'})
    key = ("revbot_forge_api_errors_total", (("forge", "gitlab"), ("status", 'a"b\\c\nd')))
    assert samples(m.render())[key] == 1


def read_folder(folder: Path) -> dict[tuple[str, tuple], float]:
    """What /metrics of a web process shows for a multiprocess folder."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    return samples(generate_latest(registry))


def _in_child(code: str, metrics_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_processes_sharing_a_metrics_folder_report_the_same_totals(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    code = (
        "from webhooks.metrics import Metrics\nm = Metrics()\n"
        "m.inc('revbot_comments_posted_total', value={n})\n"
        "m.inc('revbot_webhook_deliveries_total', {{'event': 'ping', 'outcome': 'pong'}})\n"
    )
    for n in (2, 5):  # a web process and a worker process, say
        assert _in_child(code.format(n=n), folder).wait(60) == 0
    s = read_folder(folder)
    assert s[("revbot_comments_posted_total", ())] == 7
    assert s[("revbot_webhook_deliveries_total", (("event", "ping"), ("outcome", "pong")))] == 2


def test_a_reload_is_counted_before_its_version_reaches_healthz(tmp_path):
    """The race issue 11 saw in CI: the worker process reported the new version while its reload
    count still sat in a buffer. The child below reloads, reports and then stays alive without
    doing anything more: the count must already be readable when the version is."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    queue_db = tmp_path / "q.db"
    code = f"""
import sys, time
from types import SimpleNamespace
from webhooks.metrics import Metrics
from webhooks.queue import open_queue
from webhooks.worker import Maintenance, ModelHolder
current = [SimpleNamespace(name="v1")]
registry = SimpleNamespace(current=lambda: current[0])
holder = ModelHolder(lambda version: object(), registry, metrics=Metrics())
holder.refresh(force=True)
current[0] = SimpleNamespace(name="v2")
assert holder.refresh(force=True)
Maintenance(open_queue({str(queue_db)!r}), owner="w", models=holder).report()
print("reported", flush=True)
time.sleep(60)
"""
    child = _in_child(code, folder)
    try:
        assert child.stdout.readline().strip() == "reported"
        with sqlite3.connect(queue_db) as db:
            [info] = [json.loads(row[0]) for row in db.execute("select info from workers")]
        reloads = read_folder(folder)[("revbot_model_reloads_total", ())]
        assert info["model_version"] == "v2" and reloads == 1
    finally:
        child.kill()
        child.wait(10)


def test_a_multiprocess_folder_set_too_late_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # this process imported prometheus_client long ago
    with pytest.raises(RuntimeError, match="set after prometheus_client was imported"):
        Metrics()


def test_parse_queue_url(tmp_path):
    assert parse_queue_url(None, tmp_path).path == tmp_path / "revbot-queue.db"
    assert parse_queue_url("q.db", tmp_path).path == tmp_path / "q.db"
    assert parse_queue_url("sqlite:////srv/q.db", tmp_path).path.as_posix() == "/srv/q.db"
    assert parse_queue_url("sqlite:///srv/q.db", tmp_path).path.as_posix() == "/srv/q.db"
    spec = parse_queue_url("redis://:hunter2@127.0.0.1:6379/3", tmp_path)
    assert spec.kind == "redis" and "hunter2" not in spec.describe()
    with pytest.raises(QueueError, match="REVBOT_QUEUE"):
        parse_queue_url("amqp://x", tmp_path)


def test_the_sqlite_queue_survives_a_restart(tmp_path):
    q = open_queue(tmp_path / "q.db")
    job = NewJob(REVIEW, review_key("acme/widgets", 1, "a"), "acme/widgets", 1, "a", {})
    accepted = q.submit("d1", "pull_request", "opened", job)
    assert q.size() == 1
    q.close()
    again = open_queue(tmp_path / "q.db")
    assert again.submit("d1", "pull_request", "opened", job).duplicate
    taken = again.take("w", 30, 5, wait=0)
    assert taken.id == accepted.job_id and again.size() == 0
    with sqlite3.connect(tmp_path / "q.db") as db:  # only revbot's own tables: no other library's
        tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    assert tables == {"deliveries", "jobs", "workers", "sqlite_sequence"}


SECRETS = ("ghp_" + "a1B2c3D4e5" * 3 + "f6G7h8", "AKIA" + "QWERTYUIOPASDFGH")


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_secrets_in_review_comments_never_reach_the_queue(tmp_path, request, backend):
    url = tmp_path / "q.db" if backend == "sqlite" else request.getfixturevalue("redis_url")
    q = open_queue(url, name=f"t{os.getpid()}scrub")
    try:
        comment = {
            "id": 7,
            "body": f"leaked: token={SECRETS[0]} and key {SECRETS[1]}",
            "diff_hunk": f"@@ -1 +1 @@\n+AWS_KEY = '{SECRETS[1]}'",
            "user": {"login": "bob"},
        }
        job = NewJob(COMMENT, "comment:d1", "acme/widgets", 1, None, {"action": "created", "comment": comment})
        job_id = q.submit("d1", "pull_request_review_comment", "created", job).job_id
        stored = q.store.get(job_id).payload["comment"]
        assert stored["id"] == 7 and stored["user"] == {"login": "bob"} and "leaked: token=" in stored["body"]
        if backend == "sqlite":  # the database file and its write-ahead log, as stored on disk
            raw = b"".join(path.read_bytes() for path in tmp_path.glob("q.db*"))
        else:
            raw = b" ".join(q.store.r.hgetall(q.store.prefix + f"job:{job_id}").values())
        assert b"leaked: token=" in raw  # the comment is there ...
        for secret in SECRETS:  # ... without its secrets
            assert secret.encode() not in raw and secret not in json.dumps(stored)
    finally:
        if backend == "redis":
            q.store.flush_all()
        q.close()


def test_redis_queue_round_trip(redis_url):
    q = open_queue(redis_url, name=f"t{os.getpid()}rt")
    try:
        q.ping()
        job = NewJob(REVIEW, review_key("acme/widgets", 1, "a"), "acme/widgets", 1, "a", {})
        job_id = q.submit(None, "pull_request", "opened", job).job_id
        assert q.size() == 1
        assert q.take("w", 30, 5, wait=1).id == job_id and q.size() == 0
    finally:
        q.store.flush_all()
        q.close()


def test_unreachable_redis_is_a_clear_error():
    with pytest.raises(QueueError, match="unreachable"):
        open_queue("redis://127.0.0.1:1/0")
