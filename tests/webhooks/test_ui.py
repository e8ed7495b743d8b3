"""The operator pages without a browser: off without a token, the token's settings, the session
cookie's flags, the webhook left alone, re-queue rules, and the review records the worker writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from webhook_kit import REPO, Service, hook_payload, make_seed

from adapters.settings import Settings
from adapters.store import Store
from bot.errors import UsageError
from revbot.dev.github_sim import GitHubSimulator
from webhooks.app import create_app
from webhooks.jobs import DONE, FAILED, QUEUED, REVIEW, NewJob, review_key
from webhooks.queue import open_queue
from webhooks.ui import actions
from webhooks.ui.security import LoginLimiter

TOKEN = "a-token-of-twenty-chars"


def app_for(tmp_path: Path, **extra):
    cfg = {
        "webhook_secret": "s3cret",
        "home": tmp_path,
        "db": tmp_path / "revbot.db",
        "models_dir": tmp_path / "models",
    }
    cfg["queue"] = str(tmp_path / "queue.db")
    return create_app({**cfg, **extra})


def logged_in(client, **headers):
    page = client.get("/ui/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return client.post("/ui/login", data={"csrf_token": csrf, "name": "ann", "token": TOKEN}, headers=headers)


def test_the_pages_are_off_without_a_token_and_the_webhook_never_gets_a_cookie(tmp_path):
    off = app_for(tmp_path).test_client()
    assert off.get("/ui/").status_code == 404 and off.get("/ui/login").status_code == 404
    on = app_for(tmp_path, ui_token=TOKEN).test_client()
    assert on.get("/ui/").status_code == 302  # to the login form
    answer = on.post("/webhook", data=b"{}", headers={"X-GitHub-Event": "ping"})
    assert answer.status_code == 401 and "Set-Cookie" not in answer.headers  # unsigned: refused as before


def test_the_token_comes_from_the_variable_or_a_file_and_is_never_shown(tmp_path):
    assert Settings.from_env({"REVBOT_UI_TOKEN": TOKEN}).ui_token_text() == TOKEN
    holder = tmp_path / "ui-token"
    holder.write_text(TOKEN + "\n")
    assert Settings.from_env({"REVBOT_UI_TOKEN_FILE": str(holder)}).ui_token_text() == TOKEN
    with pytest.raises(UsageError, match="REVBOT_UI_TOKEN is shorter than 16") as short:
        Settings.from_env({"REVBOT_UI_TOKEN": "tiny-token"})
    assert "tiny-token" not in str(short.value)
    holder.write_text("tiny-token")
    with pytest.raises(UsageError, match="shorter than 16") as short_file:
        Settings.from_env({"REVBOT_UI_TOKEN_FILE": str(holder)}).ui_token_text()
    assert "tiny-token" not in str(short_file.value)
    with pytest.raises(UsageError, match="cannot be read"):
        Settings.from_env({"REVBOT_UI_TOKEN_FILE": str(tmp_path / "missing")}).ui_token_text()


def test_the_session_cookie_is_strict_httponly_and_secure_behind_https(tmp_path):
    client = app_for(tmp_path, ui_token=TOKEN).test_client()
    plain = logged_in(client).headers["Set-Cookie"]
    assert "HttpOnly" in plain and "SameSite=Strict" in plain and "Path=/ui" in plain and "Secure" not in plain
    proxied = logged_in(app_for(tmp_path, ui_token=TOKEN).test_client(), **{"X-Forwarded-Proto": "https"})
    assert "Secure" in proxied.headers["Set-Cookie"]
    assert client.get("/ui/").status_code == 200
    page = client.get("/ui/login?next=//evil.example/ui/")
    assert 'value="/ui/"' in page.text  # an outside "next" is replaced by the overview


def test_the_login_limit_counts_failures_per_address_and_in_total():
    now = [0.0]
    limiter = LoginLimiter(per_client=2, total=3, window_s=60, clock=lambda: now[0])
    limiter.failed("a")
    assert limiter.retry_after("a") == 0
    limiter.failed("a")
    assert limiter.retry_after("a") > 0 and limiter.retry_after("b") == 0
    limiter.failed("b")
    assert limiter.retry_after("c") > 0  # three failures in all: everyone waits
    now[0] = 61.0
    assert limiter.retry_after("a") == limiter.retry_after("c") == 0


def test_requeue_revives_only_a_failed_job_no_newer_push_replaced(tmp_path):
    queue = open_queue(str(tmp_path / "queue.db"), tmp_path)
    store = Store(tmp_path / "revbot.db")

    def failed(sha: str) -> int:
        accepted = queue.submit(None, "pull_request", "opened", NewJob(REVIEW, review_key(REPO, 1, sha), REPO, 1, sha))
        job = queue.take("w", 60.0, 5, wait=0.0)
        queue.store.finish(job.id, "w", FAILED, {"error": "boom"})
        return accepted.job_id

    first = failed("a" * 40)
    assert actions.requeue(queue, store, "ann", first).ok and queue.store.get(first).state == QUEUED
    assert not actions.requeue(queue, store, "ann", first).ok  # queued now, not failed
    job = queue.take("w", 60.0, 5, wait=0.0)
    queue.store.finish(job.id, "w", FAILED, {"error": "boom"})
    second = failed("b" * 40)
    refused = actions.requeue(queue, store, "ann", first)
    assert not refused.ok and "newer review" in refused.message and queue.store.get(first).state == FAILED
    assert actions.requeue(queue, store, "ann", second).ok
    logged = [(a["action"], a["target"], a["outcome"]) for a in store.recent_actions()]
    assert logged[0] == ("requeue", f"job {second}", "done") and ("requeue", f"job {first}", "refused") in logged


def test_the_worker_records_each_review_it_posts(tmp_path):
    with GitHubSimulator(make_seed()) as sim:
        service = Service(tmp_path, sim)
        try:
            pull = service.pull(1)
            answer = service.deliver("pull_request", hook_payload("pull_request__opened.payload.json", pull))
            assert answer.status_code == 202 and service.wait_idle()[DONE] == 1
            comments = service.review_comments()
        finally:
            service.close()
    [record] = Store(tmp_path / "revbot.db").recent_reviews()
    assert (record.repo, record.pr, record.head_sha) == (REPO, 1, pull["head"]["sha"])
    assert record.comments == len(comments) > 0
    assert record.model_version is None  # no version promoted: the configured model (what the plan says)
    assert record.seconds is not None and record.seconds > 0 and record.review_id is not None


def test_empty_stores_show_what_to_do(tmp_path):
    client = app_for(tmp_path, ui_token=TOKEN).test_client()
    logged_in(client)
    acceptance = client.get("/ui/acceptance")
    assert acceptance.status_code == 200 and "No feedback yet" in acceptance.text and "<svg" not in acceptance.text
    assert "No model versions yet" in client.get("/ui/versions").text
    assert "No reviews recorded yet" in client.get("/ui/reviews").text
    overview = client.get("/ui/").text
    assert "No version is current yet" in overview and "Nothing harvested yet" in overview
    assert client.get("/ui/versions/v1/eval/").status_code == 404
    assert client.get("/ui/versions/v1/eval/..%2frevbot.json").status_code == 404
