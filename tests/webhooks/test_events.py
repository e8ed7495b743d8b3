"""Routing without HTTP: which deliveries become jobs, which are skipped or ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from webhooks.events import BadDelivery, Delivery, Outcome, Router, build_router, is_own_comment, parse_delivery
from webhooks.jobs import COMMENT, REVIEW

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "github" / "webhooks"


def payload(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, delivery, job):
        self.calls.append((delivery, job))
        return Outcome(202, "queued") if job else Outcome(200, "accepted")


@pytest.fixture
def submit():
    return Recorder()


def test_parse_delivery_reads_headers_case_insensitively():
    d = parse_delivery({"x-github-event": "ping", "X-Github-Delivery": "abc"}, b'{"zen": "hi"}')
    assert (d.event, d.delivery_id, d.payload) == ("ping", "abc", {"zen": "hi"})


@pytest.mark.parametrize(
    "headers, body, message",
    [
        ({}, b"{}", "X-GitHub-Event"),
        ({"X-GitHub-Event": "ping"}, b"{not json", "not valid JSON"),
        ({"X-GitHub-Event": "ping"}, b"\xff\xfe", "not valid JSON"),
        ({"X-GitHub-Event": "ping"}, b"[1, 2]", "JSON object"),
    ],
)
def test_parse_delivery_rejects_unusable_bodies(headers, body, message):
    with pytest.raises(BadDelivery, match=message):
        parse_delivery(headers, body)


def test_router_falls_back_to_any_action_then_ignores():
    router = Router()
    router.register("pull_request", "opened")(lambda d: Outcome(202, "opened"))
    router.register("issues")(lambda d: Outcome(200, "any"))
    assert router.dispatch(Delivery("pull_request", None, {"action": "opened"})).outcome == "opened"
    assert router.dispatch(Delivery("issues", None, {"action": "labeled"})).outcome == "any"
    ignored = router.dispatch(Delivery("pull_request", None, {"action": "labeled"}))
    assert (ignored.status, ignored.outcome) == (202, "ignored")


@pytest.mark.parametrize(
    "name",
    [
        "pull_request__opened.payload.json",
        "pull_request__reopened.payload.json",
        "pull_request__synchronize.payload.json",
    ],
)
def test_pull_request_events_become_review_jobs(submit, name):
    router = build_router(submit)
    p = payload(name)
    outcome = router.dispatch(Delivery("pull_request", "d1", p))
    assert outcome.outcome == "queued"
    [(_, job)] = submit.calls
    assert job.kind == REVIEW and job.repo == "Codertocat/Hello-World" and job.pr == 2
    assert job.head_sha == p["pull_request"]["head"]["sha"]
    assert job.payload["installation_id"] == 1 and job.payload["base_ref"] == "master"


def test_closed_pull_requests_are_skipped_drafts_left_to_the_worker(submit):
    router = build_router(submit)
    closed = router.dispatch(Delivery("pull_request", "d1", payload("pull_request__closed.payload.json")))
    assert closed.outcome == "ignored"  # "closed" is not a review action at all
    reopened_but_closed = payload("pull_request__reopened.payload.json")
    reopened_but_closed["pull_request"]["state"] = "closed"
    assert router.dispatch(Delivery("pull_request", "d2", reopened_but_closed)).outcome == "skipped"
    assert submit.calls == []
    draft = payload("pull_request__opened.payload.json")
    draft["pull_request"]["draft"] = True
    assert router.dispatch(Delivery("pull_request", "d3", draft)).outcome == "queued"  # .revbot.yml decides
    assert submit.calls[0][1].payload["draft"] is True


def test_a_pull_request_payload_without_head_sha_is_a_bad_delivery(submit):
    p = payload("pull_request__opened.payload.json")
    del p["pull_request"]["head"]
    with pytest.raises(BadDelivery, match="payload has no pull_request.head"):
        build_router(submit).dispatch(Delivery("pull_request", "d", p))


@pytest.mark.parametrize("action", ["created", "edited", "deleted"])
def test_human_review_comments_become_comment_jobs(submit, action):
    p = payload(f"pull_request_review_comment__{action}.payload.json")
    outcome = build_router(submit).dispatch(Delivery("pull_request_review_comment", "d9", p))
    assert outcome.outcome == "queued"
    [(_, job)] = submit.calls
    assert job.kind == COMMENT and job.key.startswith(
        f"comment:codertocat/hello-world#2:{p['comment']['id']}:{action}:"
    )
    assert job.pr == 2
    assert job.payload["action"] == action and job.payload["comment"]["id"] == p["comment"]["id"]


def test_the_bots_own_comments_are_not_recorded(submit):
    router = build_router(submit, own_logins=frozenset({"codertocat"}))
    p = payload("pull_request_review_comment__created.payload.json")
    assert router.dispatch(Delivery("pull_request_review_comment", "d1", p)).outcome == "own_comment"
    assert submit.calls[0][1] is None  # delivery remembered, no job


def test_is_own_comment():
    assert is_own_comment({"user": {"login": "revbot[bot]", "type": "Bot"}, "body": "x"}, frozenset())
    assert is_own_comment({"user": {"login": "me"}, "body": "x"}, frozenset({"me"}))
    assert is_own_comment({"user": {"login": "al"}, "body": "x\n<!-- revbot:fp=0123456789abcdef -->"}, frozenset())
    assert not is_own_comment({"user": {"login": "al", "type": "User"}, "body": "nit"}, frozenset({"me"}))


def test_ping_and_installation_are_answered(submit):
    router = build_router(submit)
    pong = router.dispatch(Delivery("ping", "d", payload("ping__payload.json")))
    assert (pong.status, pong.outcome) == (200, "pong")
    inst = router.dispatch(Delivery("installation", "d", payload("installation__created.payload.json")))
    assert (inst.status, inst.outcome) == (200, "accepted") and "957387" in inst.detail
    other = router.dispatch(Delivery("issue_comment", "d", payload("issue_comment__created.payload.json")))
    assert (other.status, other.outcome) == (202, "ignored")
