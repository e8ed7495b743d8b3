"""Real processes: a worker SIGKILLed in the middle of a job, a crash between posting and
recording, and `serve` reviewing a pull request end to end with the tiny model."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
from webhook_kit import (
    ROOT,
    TOKEN,
    FakeModelServer,
    Service,
    hook_payload,
    inline_anchors_are_valid,
    make_seed,
    service_env,
    sign_body,
)

from revbot.dev.github_sim import GitHubSimulator
from webhooks.jobs import DONE, RUNNING
from webhooks.worker import JobContext, Worker, _Heartbeat


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"process exited with {proc.returncode} while waiting for {what}:\n"
                + (proc.stderr.read() if proc.stderr else "")
            )
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_worker_killed_mid_job_is_replaced_and_exactly_one_review_is_posted(tmp_path):
    # The worker process talks to a model server that holds its first answer: SIGKILL lands while
    # the review is being generated, with the job claimed and its lease held by the dead worker.
    model = FakeModelServer(delay=60, slow_requests=1)
    with GitHubSimulator(make_seed()) as sim:
        svc = Service(tmp_path, sim, start_workers=False)
        try:
            job_id = svc.deliver("pull_request", hook_payload("pull_request__opened.payload.json", svc.pull(1))).json()[
                "job"
            ]
            env = service_env(tmp_path, sim.url, REVBOT_WORKER_LEASE="1")
            cmd = [
                sys.executable,
                "-m",
                "webhooks.cli",
                "worker",
                "--backend",
                "openai",
                "--base-url",
                model.url,
                "--api-model",
                "scripted",
            ]
            first = subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            try:
                wait_for(lambda: model.requests >= 1, 60, "the worker to ask the model", first)
                assert svc.store.get(job_id).state == RUNNING
                first.send_signal(signal.SIGKILL)
                first.wait(10)
            finally:
                first.kill()
            assert svc.store.get(job_id).state == RUNNING  # orphaned: the dead worker's lease still holds it
            assert svc.reviews() == []
            second = subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            try:
                wait_for(lambda: svc.store.get(job_id).state == DONE, 60, "the job to be redone", second)
                time.sleep(0.5)  # a second review, if any, would be posted by now
            finally:
                second.send_signal(signal.SIGTERM)
                try:
                    second.wait(20)
                except subprocess.TimeoutExpired:
                    second.kill()
            assert second.returncode == 0  # SIGTERM is a clean stop
            job = svc.store.get(job_id)
            assert job.attempts == 2 and job.result["review_id"]
            [review] = svc.reviews()
            comments = svc.review_comments()
            assert comments and all("[remote]" in c["body"] for c in comments)
            assert inline_anchors_are_valid(sim, comments)
        finally:
            svc.close()
            model.close()


def test_a_crash_between_posting_and_recording_does_not_post_twice(tmp_path):
    with GitHubSimulator(make_seed()) as sim:
        svc = Service(tmp_path, sim, start_workers=False, worker_lease=0.3)
        try:
            job_id = svc.deliver("pull_request", hook_payload("pull_request__opened.payload.json", svc.pull(1))).json()[
                "job"
            ]
            doomed = Worker(svc.queue, svc.pool.workers[0].handlers, owner="doomed", lease_s=0.3)
            job = svc.store.take("doomed", 0.3, 5)
            assert job.id == job_id
            ctx = JobContext(doomed, job, _Heartbeat(svc.store, job_id, "doomed", 0.3, 0.1))
            doomed.handlers["review"](job, ctx)  # posts the review ... and "dies" before finish()
            assert len(svc.reviews()) == 1
            time.sleep(0.4)  # its lease runs out
            svc.pool.models.refresh(force=True)
            svc.pool.start()
            svc.wait_idle()
            job = svc.store.get(job_id)
            assert job.state == DONE and job.result["already_posted"] is True
            assert len(svc.reviews()) == 1
        finally:
            svc.close()


@pytest.mark.slow
def test_serve_reviews_a_pull_request_end_to_end_with_the_tiny_model(tmp_path, tiny_llama):
    import requests

    with GitHubSimulator(make_seed()) as sim:
        env = service_env(tmp_path, sim.url, REVBOT_MAX_NEW_TOKENS="24")
        cmd = [sys.executable, "-m", "webhooks.cli", "serve", "--port", "0", "--model", str(tiny_llama)]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            url = None
            deadline = time.monotonic() + 90
            while url is None and time.monotonic() < deadline:
                line = proc.stderr.readline()
                if not line and proc.poll() is not None:
                    raise AssertionError(f"serve exited with {proc.returncode}")
                m = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
                url = m.group(1) if m else None
            assert url, "serve did not report its address"
            from adapters.github import GitHubClient

            gh = GitHubClient(TOKEN, api_url=sim.url)
            payload = hook_payload("pull_request__opened.payload.json", gh.get_pull("acme/widgets", 1))
            body = __import__("json").dumps(payload).encode()
            answer = requests.post(
                url + "/webhook",
                data=body,
                timeout=10,
                headers={
                    "X-GitHub-Event": "pull_request",
                    "X-GitHub-Delivery": "e2e-1",
                    "Content-Type": "application/json",
                    "X-Hub-Signature-256": sign_body(body),
                },
            )
            assert answer.status_code == 202
            reviews = wait_for(lambda: gh.list_reviews("acme/widgets", 1), 90, "the review", proc)
            assert len(reviews) == 1 and "revbot review" in reviews[0]["body"]
            assert inline_anchors_are_valid(sim, gh.pull_review_comments("acme/widgets", 1))
            health = wait_for(lambda: requests.get(url + "/healthz", timeout=5).json(), 10, "healthz")
            assert health["queue"]["reachable"] is True and health["model"]["loaded"] is True
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        assert proc.returncode == 0


def test_serve_refuses_to_start_without_a_secret(tmp_path):
    env = service_env(tmp_path, "http://127.0.0.1:9")
    del env["REVBOT_WEBHOOK_SECRET"]
    done = subprocess.run(
        [sys.executable, "-m", "webhooks.cli", "serve", "--port", "0"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "REVBOT_WEBHOOK_SECRET is not set" in done.stderr and "Traceback" not in done.stderr
