"""The job table, on SQLite and on Redis: dedupe, supersede, leases, retries, counters."""
from __future__ import annotations

import threading
import time

from webhooks.jobs import (
    COMMENT, DONE, FAILED, QUEUED, REVIEW, RUNNING, SUPERSEDED, NewJob, SqliteJobStore, review_key,
)


def review(sha: str, pr: int = 1, repo: str = "acme/widgets") -> NewJob:
    return NewJob(REVIEW, review_key(repo, pr, sha), repo, pr, sha, {"head_sha": sha})


def test_a_delivery_id_is_accepted_once(job_store):
    first = job_store.accept("d-1", "pull_request", "opened", review("a"))
    again = job_store.accept("d-1", "pull_request", "opened", review("a"))
    assert first.created and first.job_id and not first.duplicate
    assert again.duplicate and again.job_id is None
    assert job_store.counts()[QUEUED] == 1


def test_two_events_for_one_push_make_one_job(job_store):
    opened = job_store.accept("d-1", "pull_request", "opened", review("a"))
    reopened = job_store.accept("d-2", "pull_request", "reopened", review("a"))
    assert not reopened.duplicate and not reopened.created
    assert reopened.job_id == opened.job_id
    assert len(job_store.find(repo="acme/widgets")) == 1


def test_a_new_head_supersedes_queued_and_running_jobs_of_the_same_pr(job_store):
    a = job_store.accept("d-1", "pull_request", "opened", review("a")).job_id
    other_pr = job_store.accept("d-2", "pull_request", "opened", review("x", pr=2)).job_id
    assert job_store.claim(a, "w1", 30) is not None
    b = job_store.accept("d-3", "pull_request", "synchronize", review("b"))
    assert b.created and b.superseded == [a]
    assert job_store.get(a).state == SUPERSEDED
    assert job_store.get(other_pr).state == QUEUED  # other PRs untouched
    # the worker running ``a`` finds out at its next heartbeat and cannot finish it
    assert not job_store.heartbeat(a, "w1", 30)
    assert not job_store.finish(a, "w1", DONE, {})
    assert job_store.get(a).state == SUPERSEDED


def test_only_one_worker_claims_a_job(job_store):
    job_id = job_store.accept(None, "pull_request", "opened", review("a")).job_id
    winners = []
    barrier = threading.Barrier(8)

    def grab(name: str) -> None:
        barrier.wait()
        if job_store.claim(job_id, name, 30) is not None:
            winners.append(name)

    threads = [threading.Thread(target=grab, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    job = job_store.get(job_id)
    assert job.state == RUNNING and job.owner == winners[0] and job.attempts == 1


def test_an_expired_lease_is_requeued_by_the_reaper(job_store):
    job_id = job_store.accept(None, "pull_request", "opened", review("a")).job_id
    assert job_store.claim(job_id, "dead-worker", 0.05)
    assert job_store.save_plan(job_id, "dead-worker", [{"body": "kept"}])
    assert job_store.reap(600, 5) == []  # lease still valid, message already sent
    time.sleep(0.1)
    assert job_store.reap(600, 5) == [job_id]
    job = job_store.get(job_id)
    assert job.state == QUEUED and job.owner is None
    assert job.plan == [{"body": "kept"}]  # a rerun posts the same review
    second = job_store.claim(job_id, "w2", 30)
    assert second.attempts == 2
    assert not job_store.heartbeat(job_id, "dead-worker", 30)


def test_release_backs_off_then_fails_after_max_attempts(job_store):
    job_id = job_store.accept(None, "pull_request", "opened", review("a")).job_id
    job_store.claim(job_id, "w", 30)
    assert job_store.release(job_id, "w", 0.2, "GitHub 500", max_attempts=2) == QUEUED
    assert job_store.claim(job_id, "w", 30) is None  # not due yet
    assert job_store.reap(600, 2) == []
    time.sleep(0.25)
    assert job_store.reap(600, 2) == [job_id]
    job_store.claim(job_id, "w", 30)
    assert job_store.release(job_id, "w", 0.0, "GitHub 500 again", max_attempts=2) == FAILED
    job = job_store.get(job_id)
    assert job.state == FAILED and job.result == {"error": "GitHub 500 again"}


def test_failed_and_superseded_jobs_can_be_revived_done_ones_cannot(job_store):
    a = job_store.accept("1", "pull_request", "opened", review("a")).job_id
    job_store.accept("2", "pull_request", "synchronize", review("b"))
    revived = job_store.accept("3", "pull_request", "synchronize", review("a"))  # pushed back to a
    assert revived.created and revived.job_id == a and job_store.get(a).state == QUEUED
    job_store.claim(a, "w", 30)
    job_store.finish(a, "w", DONE, {"reviews": [1]})
    again = job_store.accept("4", "pull_request", "reopened", review("a"))
    assert not again.created and job_store.get(a).state == DONE


def test_comment_jobs_do_not_supersede_reviews(job_store):
    a = job_store.accept("1", "pull_request", "opened", review("a")).job_id
    c = job_store.accept("2", "pull_request_review_comment", "created",
                         NewJob(COMMENT, "comment:2", "acme/widgets", 1, None, {"comment": {"id": 5}}))
    assert c.created and not c.superseded and job_store.get(a).state == QUEUED
    assert job_store.get(c.job_id).payload == {"comment": {"id": 5}}


def test_lost_messages_are_redispatched_after_a_while(job_store):
    job_id = job_store.accept(None, "pull_request", "opened", review("a")).job_id
    assert job_store.reap(600, 5) == []
    time.sleep(0.05)
    assert job_store.reap(0.01, 5) == [job_id]  # its message may be lost: send another
    assert job_store.reap(600, 5) == []


def test_counters_add_up_across_writers(job_store):
    job_store.add_counters([("revbot_x_total", 'a="1"', 1)])
    job_store.add_counters([("revbot_x_total", 'a="1"', 2.5), ("revbot_y_total", "", 1)])
    assert job_store.read_counters() == {("revbot_x_total", 'a="1"'): 3.5, ("revbot_y_total", ""): 1.0}


def test_worker_reports_expire(job_store):
    job_store.report_worker("w1", {"model_loaded": True, "model_version": "v2"})
    [w] = job_store.workers(max_age=30)
    assert w["owner"] == "w1" and w["model_version"] == "v2"
    time.sleep(0.05)
    assert job_store.workers(max_age=0.01) == []


def test_sqlite_store_survives_reopening(tmp_path):
    path = tmp_path / "q.db"
    first = SqliteJobStore(path)
    job_id = first.accept("d", "pull_request", "opened", review("a")).job_id
    first.close()
    second = SqliteJobStore(path)
    assert second.get(job_id).state == QUEUED
    assert second.accept("d", "pull_request", "opened", review("a")).duplicate
