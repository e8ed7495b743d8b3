"""`revbot serve` as deployed (gunicorn web processes + the queue-worker process), attacked the way
issue 11 did: half-sent requests, and SIGKILL of the worker process mid-burst and right after the
review POST. Reviews must stay exactly-once."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest
import requests
from webhook_kit import (
    PATCH_A,
    PATCH_B,
    REPO,
    FakeModelServer,
    child_pids,
    hook_payload,
    make_seed,
    service_env,
    sign_body,
    start_serve,
    stop_serve,
)

from revbot.dev.github_sim import GitHubSimulator
from webhooks.jobs import DONE, FINAL
from webhooks.queue import open_queue

MODEL = ["--backend", "openai", "--api-model", "scripted"]


def deliver(url: str, event: str, payload: dict, delivery: str | None = None) -> requests.Response:
    body = json.dumps(payload).encode()
    return requests.post(
        url + "/webhook",
        data=body,
        timeout=30,
        headers={
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "Content-Type": "application/json",
            "X-Hub-Signature-256": sign_body(body),
        },
    )


def wait_for(predicate, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    log = "".join(getattr(proc, "log_lines", [])[-60:])
    raise AssertionError(f"timed out waiting for {what}" + (f"; the service logged:\n{log}" if log else ""))


@pytest.fixture(params=["sqlite", "redis"])
def queue_url(request, tmp_path):
    """Where the service's queue lives: a SQLite file, or a Redis database emptied before and after."""
    if request.param == "sqlite":
        yield str(tmp_path / "queue.db")
        return
    url = request.getfixturevalue("redis_url")
    _empty(url)
    yield url
    _empty(url)


def _empty(url: str) -> None:
    queue = open_queue(url)
    try:
        queue.store.flush_all()
    finally:
        queue.close()


def job_counts(url: str) -> dict[str, int]:
    queue = open_queue(url)
    try:
        return queue.store.counts()
    finally:
        queue.close()


def get_job(url: str, job_id: int):
    queue = open_queue(url)
    try:
        return queue.store.get(job_id)
    finally:
        queue.close()


def worker_pid(url: str, exclude: int | None = None) -> int | None:
    """The pid the queue-worker process reports (it reports every 2 s)."""
    queue = open_queue(url)
    try:
        pids = [w["pid"] for w in queue.store.workers(max_age=5) if w.get("pid") != exclude]
    finally:
        queue.close()
    return pids[-1] if pids else None


def test_half_sent_requests_are_cut_off_and_do_not_hold_threads(tmp_path):
    proc, url = start_serve(
        ["--workers", "0", "--web-workers", "1", "--web-threads", "16", "--read-timeout", "0.3"],
        service_env(tmp_path, "http://127.0.0.1:9"),
    )
    port = int(url.rsplit(":", 1)[1])
    stalled: list[socket.socket] = []
    try:
        assert requests.get(url + "/healthz", timeout=10).status_code in (200, 503)
        [web] = child_pids(proc.pid)
        for _ in range(150):  # headers begun, never finished
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            s.sendall(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\nX-GitHub-Ev")
            stalled.append(s)
        time.sleep(1.0)
        threads = len(list(Path(f"/proc/{web}/task").iterdir()))
        assert threads <= 16 + 6, f"the web process runs {threads} threads"  # the pool, not one per client
        started = time.monotonic()
        for s in stalled:  # the server hangs up on each of them after its read timeout
            try:
                assert s.recv(1024) == b""
            except ConnectionResetError:
                pass
        assert time.monotonic() - started < 40  # 150 x (0.3 s read + 0.3 s linger) / 16 threads: ~6 s
        assert requests.get(url + "/healthz", timeout=10).json()["status"] in ("ok", "degraded")
    finally:
        for s in stalled:
            s.close()
        assert stop_serve(proc) == 0


def test_the_worker_process_killed_mid_burst_is_restarted_and_every_pr_gets_one_review(tmp_path, queue_url):
    model = FakeModelServer(delay=0.3, slow_requests=10**6)
    with GitHubSimulator(make_seed(files=[{"filename": "a.py", "status": "modified", "patch": PATCH_A}])) as sim:
        pulls = [
            sim.add_pull(
                REPO,
                files=[{"filename": "b.py", "status": "modified", "patch": PATCH_B}],
                title=f"PR {n}",
                user="carol",
                head=f"feature-{n}",
            )["pull"]
            for n in range(2, 9)
        ]
        env = service_env(tmp_path, sim.url, REVBOT_WORKER_LEASE="3", REVBOT_QUEUE=queue_url)
        proc, url = start_serve([*MODEL, "--base-url", model.url, "--workers", "2"], env)
        try:
            first = wait_for(lambda: worker_pid(queue_url), 60, "the worker process to report", proc)
            gh_pull = requests.get(
                f"{sim.url}/repos/{REPO}/pulls/1",
                headers={"Authorization": "token " + env["REVBOT_GITHUB_TOKEN"]},
                timeout=10,
            ).json()
            deliveries = []
            for pull in [gh_pull, *pulls]:
                opened = hook_payload("pull_request__opened.payload.json", pull)
                delivery = str(uuid.uuid4())
                deliveries += [
                    ("pull_request", opened, delivery),
                    ("pull_request", opened, delivery),
                    ("pull_request", hook_payload("pull_request__reopened.payload.json", pull), None),
                ]
            answers = []
            for i, (event, payload, delivery) in enumerate(deliveries):
                answers.append(deliver(url, event, payload, delivery).status_code)
                if i == len(deliveries) // 3:
                    os.kill(first, signal.SIGKILL)  # SIGKILL the queue-worker process mid-burst
            assert all(status in (200, 202) for status in answers) and answers.count(202) == len(pulls) + 1
            second = wait_for(lambda: worker_pid(queue_url, exclude=first), 60, "gunicorn to restart the worker", proc)
            assert second != first
            counts = wait_for(
                lambda: (c := job_counts(queue_url)) and c["queued"] + c["running"] == 0 and c,
                120,
                "every job to finish",
                proc,
            )
            assert counts[DONE] == len(pulls) + 1 and sum(counts[s] for s in FINAL) == counts[DONE]
            token = {"Authorization": "token " + env["REVBOT_GITHUB_TOKEN"]}
            for number in [1, *(p["number"] for p in pulls)]:
                reviews = requests.get(
                    f"{sim.url}/repos/{REPO}/pulls/{number}/reviews", headers=token, timeout=10
                ).json()
                assert len(reviews) == 1, f"PR #{number} has {len(reviews)} reviews"
        finally:
            code = stop_serve(proc)
            model.close()
        assert code == 0


def test_the_worker_process_killed_right_after_the_review_post_does_not_post_twice(tmp_path, queue_url):
    model = FakeModelServer()
    with GitHubSimulator(make_seed()) as sim:
        # GitHub applies the review, then its answer is held back: the worker dies waiting for it
        sim.inject("slow", method="POST", path=r"/pulls/1/reviews$", delay=30)
        env = service_env(tmp_path, sim.url, REVBOT_WORKER_LEASE="3", REVBOT_QUEUE=queue_url)
        proc, url = start_serve([*MODEL, "--base-url", model.url], env)
        try:
            first = wait_for(lambda: worker_pid(queue_url), 60, "the worker process to report", proc)
            token = {"Authorization": "token " + env["REVBOT_GITHUB_TOKEN"]}
            pull = requests.get(f"{sim.url}/repos/{REPO}/pulls/1", headers=token, timeout=10).json()
            answer = deliver(url, "pull_request", hook_payload("pull_request__opened.payload.json", pull))
            assert answer.status_code == 202
            route = "POST /repos/{owner}/{repo}/pulls/{pull_number}/reviews"
            wait_for(lambda: sim.stats()["by_route"].get(route), 60, "the review POST", proc)
            wait_for(
                lambda: requests.get(f"{sim.url}/repos/{REPO}/pulls/1/reviews", headers=token, timeout=10).json(),
                10,
                "GitHub to hold the review",
            )
            os.kill(first, signal.SIGKILL)
            counts = wait_for(lambda: (c := job_counts(queue_url))[DONE] == 1 and c, 90, "the job to be redone", proc)
            assert counts["failed"] == 0
            job = get_job(queue_url, answer.json()["job"])
            assert job.attempts == 2 and job.result["already_posted"] is True
            reviews = requests.get(f"{sim.url}/repos/{REPO}/pulls/1/reviews", headers=token, timeout=10).json()
            assert len(reviews) == 1 and sim.stats()["by_route"][route] == 1  # found, not posted again
        finally:
            code = stop_serve(proc)
            model.close()
        assert code == 0
