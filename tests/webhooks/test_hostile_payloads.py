"""Signed deliveries that are still hostile (a leaked secret, a captured and replayed delivery):
each is answered 400 with a short reason over real HTTP, never 500, and leaves nothing queued;
a replayed review-comment delivery never queues a second job or rolls a stored comment back."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from webhook_kit import Service, hook_payload


@pytest.fixture
def web(tmp_path):
    svc = Service(
        tmp_path, SimpleNamespace(url="http://127.0.0.1:9"), start_workers=False, webhook_max_body=1024 * 1024
    )
    yield svc
    svc.close()


def nothing_recorded(svc) -> bool:
    return svc.queue.size() == 0 and svc.store.delivery_count() == 0 and not any(svc.store.counts().values())


def refused(svc, event: str, payload, **headers) -> str:
    answer = svc.deliver(event, payload, **headers)
    assert answer.status_code == 400, (answer.status_code, answer.text[:300])
    assert len(answer.content) < 400
    assert nothing_recorded(svc)
    return answer.json()["error"]


def opened(**changes) -> dict:
    payload = hook_payload("pull_request__opened.payload.json")
    for dotted, value in changes.items():
        node = payload
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return payload


def comment_payload(**changes) -> dict:
    payload = hook_payload("pull_request_review_comment__created.payload.json")
    for dotted, value in changes.items():
        node = payload
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return payload


def test_two_hundred_thousand_levels_of_json_are_400_not_a_recursion_error(web):
    body = b'{"zen": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    assert "nested more than 32 levels deep" in refused(web, "pull_request", body)


def test_nesting_under_the_recursion_limit_is_refused_too(web):
    payload = opened()
    deep: list = []
    for _ in range(500):
        deep = [deep]
    payload["pull_request"]["labels"] = deep  # a field the service never reads
    assert "nested more than 32 levels deep" in refused(web, "pull_request", payload)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"pull_request__number": 2**63}, "pull_request.number must be from 1 to 9007199254740991"),
        ({"pull_request__number": True}, "pull_request.number must be a whole number"),
        ({"pull_request__number": "1"}, "pull_request.number must be a whole number"),
        ({"pull_request__number": 1.0}, "pull_request.number must be a whole number"),
        ({"pull_request__number": 0}, "pull_request.number must be from 1"),
        ({"repository__full_name": 123}, "repository.full_name must be a string"),
        ({"repository__full_name": "../../etc/passwd"}, "repository.full_name must look like owner/name"),
        ({"repository__full_name": "acme/widgets/extra"}, "must look like owner/name"),
        ({"repository": "acme/widgets"}, "repository must be a JSON object"),
        ({"pull_request__user": "x"}, "pull_request.user must be a JSON object"),
        ({"pull_request__user": {"login": ["x"]}}, "pull_request.user.login must be a string"),
        ({"pull_request__head__sha": "not-a-sha"}, "pull_request.head.sha must be a commit sha"),
        ({"pull_request__head__sha": 12}, "pull_request.head.sha must be a string"),
        ({"pull_request__base__sha": "HEAD~1"}, "pull_request.base.sha must be a commit sha"),
        ({"pull_request__draft": "yes"}, "pull_request.draft must be true or false"),
        ({"pull_request__updated_at": "yesterday"}, "pull_request.updated_at must be an ISO 8601 time"),
        ({"installation": {"id": True}}, "installation.id must be a whole number"),
        ({"action": ["opened"]}, "action must be a string"),
    ],
)
def test_bad_pull_request_fields_are_400_with_the_field_named(web, changes, words):
    assert words in refused(web, "pull_request", opened(**changes))


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"comment__id": True}, "comment.id must be a whole number"),
        ({"comment__id": 2**64}, "comment.id must be from 1"),
        ({"comment__user": "x"}, "comment.user must be a JSON object"),
        ({"comment__body": {"text": "hi"}}, "comment.body must be a string"),
        ({"comment__line": -3}, "comment.line must be from"),
        ({"comment__updated_at": 1700000000}, "comment.updated_at must be a string"),
        ({"comment": None}, "comment must be a JSON object"),
        ({"pull_request__number": 2**63}, "pull_request.number must be from 1"),
        ({"pull_request__user": "x"}, "pull_request.user must be a JSON object"),
        ({"repository__full_name": 123}, "repository.full_name must be a string"),
    ],
)
def test_bad_review_comment_fields_are_400(web, changes, words):
    assert words in refused(web, "pull_request_review_comment", comment_payload(**changes))


def test_other_handled_events_validate_what_they_read(web):
    assert "zen must be a string" in refused(web, "ping", {"zen": [[["x"]]]})
    assert "installation.id must be" in refused(web, "installation", {"action": "created", "installation": {"id": -1}})


def test_bad_headers_are_400(web):
    assert "X-GitHub-Event" in refused(web, "pull request; drop", opened())
    assert "X-GitHub-Delivery" in refused(web, "pull_request", opened(), delivery="has spaces in it")


def test_valid_deliveries_still_pass_and_only_validated_fields_reach_the_job(web):
    payload = comment_payload()
    payload["comment"]["extra_blob"] = {"a": [1, 2, 3]}
    answer = web.deliver("pull_request_review_comment", payload)
    assert answer.status_code == 202 and answer.json()["outcome"] == "queued"
    [job] = web.store.find(kind="comment")
    assert job.payload["comment"]["id"] == payload["comment"]["id"] and "extra_blob" not in job.payload["comment"]
    assert job.payload["comment"]["body"] == payload["comment"]["body"]
    secret = "ghp_" + "Q7x9" * 9
    leaked = comment_payload(comment__body=f"use token {secret} here", comment__updated_at="2020-01-01T00:00:00Z")
    assert web.deliver("pull_request_review_comment", leaked).status_code == 202
    stored = [j for j in web.store.find(kind="comment") if j.id != job.id]
    assert secret not in json.dumps(stored[0].payload) and "<REDACTED>" in stored[0].payload["comment"]["body"]
    assert web.deliver("pull_request", opened()).status_code == 202


# --------------------------------------------------------------------------- replay


def test_a_replayed_review_comment_under_new_delivery_ids_queues_one_job(web):
    captured = json.dumps(comment_payload()).encode()
    first = web.deliver("pull_request_review_comment", captured)
    assert first.status_code == 202 and first.json()["outcome"] == "queued"
    for _ in range(5):
        again = web.deliver("pull_request_review_comment", captured)  # a fresh delivery id each time
        assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert web.store.counts()["queued"] == 1 and web.queue.size() == 1
    edited = comment_payload(action="edited", comment__body="A real edit", comment__updated_at="2019-05-15T16:00:00Z")
    assert web.deliver("pull_request_review_comment", edited).json()["outcome"] == "queued"
    deleted = comment_payload(action="deleted", comment__body="A real edit", comment__updated_at="2019-05-15T16:00:00Z")
    assert web.deliver("pull_request_review_comment", deleted).json()["outcome"] == "queued"
    assert web.store.counts()["queued"] == 3


def _comment_job(payload: dict, job_id: int):
    from webhooks.jobs import COMMENT, QUEUED, Job

    return Job(
        job_id,
        COMMENT,
        f"k{job_id}",
        "acme/widgets",
        1,
        None,
        QUEUED,
        {"action": payload["action"], "comment": payload["comment"], "pr_author": "alice"},
    )


def test_an_older_edit_or_a_late_event_never_rolls_a_stored_comment_back(tmp_path):
    from adapters.store import Store
    from webhooks.recorder import CommentRecorder

    store = Store(tmp_path / "revbot.db")
    record = CommentRecorder(store)

    def event(action: str, body: str, updated_at: str):
        payload = comment_payload(action=action, comment__body=body, comment__updated_at=updated_at)
        return _comment_job(payload, 1)

    cid = comment_payload()["comment"]["id"]
    record(event("created", "first", "2024-01-01T00:00:00Z"))
    record(event("edited", "second", "2024-01-02T00:00:00Z"))
    older = record(event("edited", "first edit, replayed", "2024-01-01T12:00:00Z"))
    assert store.get_comment(cid).body == "second"
    assert (older.info["inserted"], older.info["updated"]) == (0, 0)
    record(event("edited", "third", "2024-01-03T00:00:00Z"))
    assert store.get_comment(cid).body == "third"

    record(event("deleted", "third", "2024-01-03T00:00:00Z"))
    assert store.get_comment(cid) is None
    record(event("edited", "third", "2024-01-03T00:00:00Z"))  # replayed after the delete
    record(event("created", "first", "2024-01-01T00:00:00Z"))
    assert store.get_comment(cid) is None

    late = comment_payload()["comment"]
    late["id"] = cid + 1
    record(_comment_job(dict(comment_payload(action="deleted"), comment=late), 1))  # deleted before created
    record(_comment_job(dict(comment_payload(action="created"), comment=late), 2))
    assert store.get_comment(cid + 1) is None
