"""The job table, on SQLite and on Redis: dedupe, supersede, leases, retries, pruning. Leases and
backoff run on the ``clock`` fixture, so "still valid" and "not due yet" never depend on how fast
the machine is."""

from __future__ import annotations

import threading
import time

import pytest

from webhooks.jobs import (
    COMMENT,
    DONE,
    FAILED,
    QUEUED,
    REVIEW,
    RUNNING,
    SKIPPED,
    SUPERSEDED,
    NewJob,
    SqliteJobStore,
    review_key,
)


def review(sha: str, pr: int = 1, repo: str = "acme/widgets") -> NewJob:
    return NewJob(REVIEW, review_key(repo, pr, sha), repo, pr, sha, {"head_sha": sha})


def test_a_delivery_id_is_accepted_once(job_store):
    first = job_store.accept("d-1", "pull_request", "opened", review("a"))
    again = job_store.accept("d-1", "pull_request", "opened", review("a"))
    assert first.created and first.job_id and not first.duplicate
    assert again.duplicate and again.job_id is None
    assert job_store.counts()[QUEUED] == 1 and job_store.waiting() == 1


def test_two_events_for_one_push_make_one_job(job_store):
    opened = job_store.accept("d-1", "pull_request", "opened", review("a"))
    reopened = job_store.accept("d-2", "pull_request", "reopened", review("a"))
    assert not reopened.duplicate and not reopened.created
    assert reopened.job_id == opened.job_id
    assert len(job_store.find(repo="acme/widgets")) == 1


def test_jobs_are_taken_oldest_first_with_a_lease(job_store, clock):
    a = job_store.accept(None, "pull_request", "opened", review("a", pr=1)).job_id
    b = job_store.accept(None, "pull_request", "opened", review("b", pr=2)).job_id
    first = job_store.take("w1", 30, 5)
    second = job_store.take("w2", 30, 5)
    assert (first.id, second.id) == (a, b)
    assert first.state == RUNNING and first.owner == "w1" and first.attempts == 1
    assert first.lease_until == pytest.approx(clock.now + 30)
    assert job_store.take("w3", 30, 5) is None and job_store.waiting() == 0


def test_a_new_head_supersedes_queued_and_running_jobs_of_the_same_pr(job_store):
    a = job_store.accept("d-1", "pull_request", "opened", review("a")).job_id
    other_pr = job_store.accept("d-2", "pull_request", "opened", review("x", pr=2)).job_id
    assert job_store.take("w1", 30, 5).id == a
    b = job_store.accept("d-3", "pull_request", "synchronize", review("b"))
    assert b.created and b.superseded == [a]
    assert job_store.get(a).state == SUPERSEDED
    assert job_store.get(other_pr).state == QUEUED  # other PRs untouched
    # the worker running ``a`` finds out at its next heartbeat and cannot finish it
    assert not job_store.heartbeat(a, "w1", 30)
    assert not job_store.finish(a, "w1", DONE, {})
    assert job_store.get(a).state == SUPERSEDED


def test_only_one_worker_takes_a_job(job_store):
    job_id = job_store.accept(None, "pull_request", "opened", review("a")).job_id
    winners = []
    barrier = threading.Barrier(8)

    def grab(name: str) -> None:
        barrier.wait()
        if job_store.take(name, 30, 5) is not None:
            winners.append(name)

    threads = [threading.Thread(target=grab, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    job = job_store.get(job_id)
    assert job.state == RUNNING and job.owner == winners[0] and job.attempts == 1


def test_a_dead_workers_job_is_taken_over_once_its_lease_runs_out(job_store, clock):
    job_id = job_store.accept(None, "pull_request", "opened", review("a")).job_id
    assert job_store.take("dead-worker", 0.05, 5).id == job_id
    assert job_store.save_plan(job_id, "dead-worker", [{"body": "kept"}])
    # the clock has not moved: the lease holds, however long this machine took to get here
    assert job_store.take("w2", 0.05, 5) is None
    clock.advance(1)
    second = job_store.take("w2", 0.05, 5, wait=10)  # Redis also waits for the message to idle 50 ms
    assert second is not None and second.id == job_id
    assert second.owner == "w2" and second.attempts == 2
    assert second.plan == [{"body": "kept"}]  # a rerun posts the same review
    assert not job_store.heartbeat(job_id, "dead-worker", 30)
    assert not job_store.finish(job_id, "dead-worker", DONE, {})
    assert job_store.finish(job_id, "w2", DONE, {"review_id": 1})
    assert job_store.get(job_id).state == DONE


def test_heartbeats_keep_the_lease(job_store, clock):
    job_id = job_store.accept(None, "pull_request", "opened", review("a")).job_id
    job_store.take("w1", 30, 5)
    for _ in range(3):
        clock.advance(20)
        assert job_store.heartbeat(job_id, "w1", 30)
    assert job_store.take("w2", 30, 5) is None  # 60 s after it was taken, still w1's
    assert job_store.get(job_id).owner == "w1"


def test_a_worker_dying_on_the_last_attempt_fails_the_job(job_store, clock):
    job_id = job_store.accept(None, "pull_request", "opened", review("a")).job_id
    job_store.take("dead", 30, max_attempts=1)
    assert job_store.maintain(max_attempts=1) == []  # lease still valid
    clock.advance(31)
    assert job_store.maintain(max_attempts=1) == [job_id]
    job = job_store.get(job_id)
    assert job.state == FAILED and "lost its lease" in job.result["error"]
    assert job_store.take("w2", 30, 1) is None


def test_release_backs_off_then_fails_after_max_attempts(job_store, clock):
    job_id = job_store.accept(None, "pull_request", "opened", review("a")).job_id
    job_store.take("w", 30, 2)
    assert job_store.release(job_id, "w", 0.2, "GitHub 500", max_attempts=2) == QUEUED
    assert job_store.get(job_id).not_before == pytest.approx(clock.now + 0.2)
    job_store.maintain(2)
    assert job_store.take("w", 30, 2) is None  # not due: the clock has not moved
    clock.advance(0.3)
    job_store.maintain(2)  # Redis: the due retry gets its message back
    again = job_store.take("w", 30, 2)
    assert again is not None and again.id == job_id and again.attempts == 2
    assert job_store.release(job_id, "w", 0.0, "GitHub 500 again", max_attempts=2) == FAILED
    job = job_store.get(job_id)
    assert job.state == FAILED and job.result == {"error": "GitHub 500 again"}
    assert job_store.release(job_id, "w", 0.0, "not mine any more", max_attempts=2) == ""


def test_failed_and_superseded_jobs_can_be_revived_done_ones_cannot(job_store):
    a = job_store.accept("1", "pull_request", "opened", review("a")).job_id
    job_store.accept("2", "pull_request", "synchronize", review("b"))
    revived = job_store.accept("3", "pull_request", "synchronize", review("a"))  # pushed back to a
    assert revived.created and revived.job_id == a and job_store.get(a).state == QUEUED
    taken = [job_store.take("w", 30, 5), job_store.take("w", 30, 5)]
    assert [j.id for j in taken if j is not None] == [a]  # b was superseded by the revival
    job_store.finish(a, "w", DONE, {"reviews": [1]})
    again = job_store.accept("4", "pull_request", "reopened", review("a"))
    assert not again.created and job_store.get(a).state == DONE


def test_comment_jobs_do_not_supersede_reviews(job_store):
    a = job_store.accept("1", "pull_request", "opened", review("a")).job_id
    c = job_store.accept(
        "2",
        "pull_request_review_comment",
        "created",
        NewJob(COMMENT, "comment:2", "acme/widgets", 1, None, {"comment": {"id": 5}}),
    )
    assert c.created and not c.superseded and job_store.get(a).state == QUEUED
    assert job_store.get(c.job_id).payload == {"comment": {"id": 5}}


def test_finished_jobs_and_deliveries_are_pruned_after_the_retention(job_store, clock):
    old = job_store.accept("d-old", "pull_request", "opened", review("a", pr=1)).job_id
    job_store.take("w", 30, 5)
    job_store.finish(old, "w", SKIPPED, {})
    running = job_store.accept("d-run", "pull_request", "opened", review("b", pr=2)).job_id
    job_store.take("w", 30, 5)
    clock.advance(8 * 86400)
    fresh = job_store.accept("d-new", "pull_request", "opened", review("c", pr=3)).job_id
    removed = job_store.prune(before=clock.now - 7 * 86400)
    assert removed["jobs"] == 1
    assert job_store.get(old) is None and [j.id for j in job_store.find()] == [running, fresh]
    assert job_store.counts()[SKIPPED] == 0 and job_store.counts()[RUNNING] == 1
    # a pruned key is a new job if it ever comes back (GitHub keeps deliveries for 3 days)
    assert job_store.accept(None, "pull_request", "opened", review("a", pr=1)).created


def test_sqlite_prunes_old_delivery_ids(tmp_path, clock):
    store = SqliteJobStore(tmp_path / "q.db", clock=clock)
    store.accept("d-old", "ping", None)
    clock.advance(8 * 86400)
    store.accept("d-new", "ping", None)
    assert store.prune(before=clock.now - 7 * 86400) == {"jobs": 0, "deliveries": 1}
    assert store.delivery_count() == 1
    assert not store.accept("d-old", "ping", None).duplicate  # forgotten: a redelivery this old is new


def test_redis_delivery_ids_expire_after_the_retention(redis_url):
    import uuid

    from webhooks.jobs_redis import RedisJobStore

    store = RedisJobStore(redis_url, name=f"t{uuid.uuid4().hex[:8]}", retention_s=3 * 86400)
    try:
        store.accept("d-1", "ping", None)
        ttl = store.r.ttl(store.prefix + "delivery:d-1")
        assert 3 * 86400 - 60 < ttl <= 3 * 86400
    finally:
        store.flush_all()
        store.close()


def test_redis_a_message_read_by_a_worker_that_died_before_claiming_is_taken_over(redis_url):
    """The gap issue 11 found: a worker killed between reading a job's message and leasing the job.
    The message stays pending in the consumer group and the next worker takes it over after one
    lease (here 50 ms), not after the old 600 s redispatch."""
    import uuid

    from webhooks.jobs_redis import GROUP, RedisJobStore

    store = RedisJobStore(redis_url, name=f"t{uuid.uuid4().hex[:8]}")
    try:
        job_id = store.accept(None, "pull_request", "opened", review("a")).job_id
        read = store.r.xreadgroup(GROUP, "dead", {store.stream: ">"}, count=1)  # ... and then SIGKILL
        assert int(read[0][1][0][1][b"job"]) == job_id
        assert store.get(job_id).state == QUEUED
        started = time.monotonic()
        job = store.take("w2", 0.05, 5, wait=10)
        assert job is not None and job.id == job_id and job.owner == "w2"
        assert time.monotonic() - started < 10
        assert store.finish(job_id, "w2", DONE, {})
        assert store.r.xpending(store.stream, GROUP)["pending"] == 0  # acknowledged with the job
    finally:
        store.flush_all()
        store.close()


def test_worker_reports_expire(job_store, clock):
    job_store.report_worker("w1", {"model_loaded": True, "model_version": "v2"})
    [w] = job_store.workers(max_age=30)
    assert w["owner"] == "w1" and w["model_version"] == "v2"
    clock.advance(31)
    assert job_store.workers(max_age=30) == []


def test_sqlite_store_survives_reopening(tmp_path):
    path = tmp_path / "q.db"
    first = SqliteJobStore(path)
    job_id = first.accept("d", "pull_request", "opened", review("a")).job_id
    first.close()
    second = SqliteJobStore(path)
    assert second.get(job_id).state == QUEUED
    assert second.accept("d", "pull_request", "opened", review("a")).duplicate
    assert second.take("w", 30, 5).id == job_id
