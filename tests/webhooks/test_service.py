"""The service end to end over real HTTP on loopback: signed deliveries -> queue -> worker ->
one review on the GitHub simulator, with the scripted backend (deterministic answers through the
real prompt contract, review pipeline and GitHub layer)."""

from __future__ import annotations

import json
import time

import pytest
import requests
from webhook_kit import (
    BOT_LOGIN,
    PATCH_A,
    PATCH_B2,
    PATCH_CONFIG,
    PATCH_NOTES,
    REPO,
    ScriptedBackend,
    Service,
    hook_payload,
    inline_anchors_are_valid,
    make_seed,
)

from revbot.dev.github_sim import GitHubSimulator


@pytest.fixture
def sim():
    with GitHubSimulator(make_seed()) as simulator:
        yield simulator


@pytest.fixture
def service(tmp_path, sim):
    svc = Service(tmp_path, sim)
    yield svc
    svc.close()


def opened(service) -> dict:
    return hook_payload("pull_request__opened.payload.json", service.pull(1))


def test_signed_opened_delivery_posts_one_review_on_valid_lines(service, sim):
    answer = service.deliver("pull_request", opened(service))
    assert answer.status_code == 202 and answer.json()["outcome"] == "queued"
    assert service.wait_idle()["done"] == 1
    [review] = service.reviews()
    assert review["state"] == "COMMENTED" and review["commit_id"] == service.pull(1)["head"]["sha"]
    assert "revbot review" in review["body"]
    comments = service.review_comments()
    # one comment per hunk: a.py (1 hunk), b.py (2 hunks); .revbot.yml is reviewed as a file too
    assert {c["path"] for c in comments} >= {"a.py", "b.py"}
    assert inline_anchors_are_valid(sim, comments)
    assert all("<!-- revbot:fp=" in c["body"] for c in comments)
    assert all("@\u200balice" in c["body"] and "@alice" not in c["body"] for c in comments)  # nobody pinged
    text = requests.get(service.url + "/metrics", timeout=5).text
    assert f"revbot_comments_posted_total {len(comments)}" in text
    assert 'revbot_webhook_deliveries_total{event="pull_request",outcome="queued"} 1' in text
    assert "revbot_review_latency_seconds_count 1" in text


def test_unsigned_and_wrongly_signed_deliveries_are_refused_and_nothing_is_queued(service):
    payload = opened(service)
    unsigned = service.deliver("pull_request", payload, secret=None)
    forged = service.deliver("pull_request", payload, secret="not-the-secret")
    malformed = service.deliver("pull_request", payload, signature="sha256=abc")
    for answer in (unsigned, forged, malformed):
        assert answer.status_code == 401
    assert service.store.counts() == {s: 0 for s in service.store.counts()}
    assert service.queue.size() == 0 and service.store.delivery_count() == 0
    time.sleep(0.3)
    assert service.reviews() == []


def test_the_same_delivery_twice_and_two_events_for_one_push_make_one_review(service):
    payload = opened(service)
    first = service.deliver("pull_request", payload, delivery="d-1")
    again = service.deliver("pull_request", payload, delivery="d-1")  # GitHub's redelivery: same id
    reopened = hook_payload("pull_request__reopened.payload.json", service.pull(1))
    other_event = service.deliver("pull_request", reopened, delivery="d-2")  # same head, new delivery
    assert first.status_code == 202
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert other_event.json()["outcome"] == "duplicate"
    service.wait_idle()
    assert len(service.reviews()) == 1


def test_synchronize_after_a_review_posts_only_new_comments(service, sim):
    service.deliver("pull_request", opened(service))
    service.wait_idle()
    before = service.review_comments()
    # push: b.py's second hunk changes, a.py stays the same
    pushed = sim.add_pull(
        REPO,
        number=1,
        files=[
            {"filename": "a.py", "status": "modified", "patch": PATCH_A},
            {"filename": "b.py", "status": "modified", "patch": PATCH_B2},
            {"filename": ".revbot.yml", "status": "modified", "patch": PATCH_CONFIG},
        ],
    )
    sync = hook_payload("pull_request__synchronize.payload.json", pushed["pull"])
    assert service.deliver("pull_request", sync).json()["outcome"] == "queued"
    service.wait_idle()
    reviews = service.reviews()
    assert len(reviews) == 2
    after = service.review_comments()
    new = [c for c in after if c["id"] not in {b["id"] for b in before}]
    assert [c["path"] for c in new] == ["b.py"] and "vv = compute()" in new[0]["body"]
    assert new[0]["commit_id"] == pushed["pull"]["head"]["sha"]
    # the same push delivered again finds its review: nothing more is posted
    service.deliver("pull_request", hook_payload("pull_request__reopened.payload.json", pushed["pull"]))
    service.wait_idle()
    assert len(service.reviews()) == 2


def test_a_newer_push_supersedes_a_queued_job(tmp_path, sim):
    svc = Service(tmp_path, sim, start_workers=False)
    try:
        first = svc.deliver("pull_request", hook_payload("pull_request__opened.payload.json", svc.pull(1)))
        pushed = sim.add_pull(REPO, number=1, files=[{"filename": "a.py", "status": "modified", "patch": PATCH_A}])
        second = svc.deliver("pull_request", hook_payload("pull_request__synchronize.payload.json", pushed["pull"]))
        assert second.json()["superseded"] == [first.json()["job"]]
        svc.pool.start()
        svc.wait_idle()
        [review] = svc.reviews()
        assert review["commit_id"] == pushed["pull"]["head"]["sha"]
        assert svc.store.get(first.json()["job"]).state == "superseded"
    finally:
        svc.close()


def test_a_push_while_a_review_is_generated_cancels_that_review(tmp_path, sim):
    pushed: dict = {}

    def push_during_generation():
        if not pushed:
            pushed.update(
                sim.add_pull(REPO, number=1, files=[{"filename": "a.py", "status": "modified", "patch": PATCH_A}])
            )
            svc.deliver("pull_request", hook_payload("pull_request__synchronize.payload.json", pushed["pull"]))

    svc = Service(tmp_path, sim, backend_factory=lambda v: ScriptedBackend("v1", on_generate=push_during_generation))
    try:
        first = svc.deliver("pull_request", hook_payload("pull_request__opened.payload.json", svc.pull(1))).json()
        svc.wait_idle()
        [review] = svc.reviews()  # only the newer head was reviewed
        assert review["commit_id"] == pushed["pull"]["head"]["sha"]
        assert svc.store.get(first["job"]).state == "superseded"
        assert [c["path"] for c in svc.review_comments()] == ["a.py"]
    finally:
        svc.close()


def test_server_errors_and_secondary_rate_limits_are_retried_and_the_review_posted(service, sim):
    sim.inject("error", status=500, method="GET", path=r"/pulls/1$", count=1)
    sim.inject("error", status=500, method="POST", path=r"/pulls/1/reviews$", count=1)
    sim.inject("secondary", method="POST", path=r"/pulls/1/reviews$", count=1)
    service.deliver("pull_request", opened(service))
    counts = service.wait_idle(30)
    assert counts["done"] == 1 and counts["failed"] == 0
    assert len(service.reviews()) == 1
    assert sim.stats()["faults_served"] == 3
    text = requests.get(service.url + "/metrics", timeout=5).text
    assert 'revbot_job_retries_total{kind="review"}' in text


def test_a_422_moves_the_comments_into_the_body_and_the_review_is_still_posted(service, sim):
    sim.inject("error", status=422, method="POST", path=r"/pulls/1/reviews$", count=1, message="Unprocessable Entity")
    service.deliver("pull_request", opened(service))
    service.wait_idle()
    [review] = service.reviews()
    assert service.review_comments() == []  # everything went into the body ...
    assert review["body"].count("<!-- revbot:fp=") >= 3  # ... each with its fingerprint
    assert "Comments not on a changed line" in review["body"]
    text = requests.get(service.url + "/metrics", timeout=5).text
    assert 'revbot_forge_api_errors_total{forge="github",status="422"} 1.0' in text


def test_revbot_yml_changed_inside_the_pr_is_ignored(service):
    # The PR's head sets `enabled: false`; the base branch's config (max_comments: 10) applies.
    service.deliver("pull_request", opened(service))
    service.wait_idle()
    assert len(service.reviews()) == 1


def test_revbot_yml_on_the_base_branch_is_obeyed(tmp_path):
    seed = make_seed()
    seed["repos"][0]["files"]["main"][".revbot.yml"] = "enabled: false\n"
    seed["repos"][0]["files"]["feature"][".revbot.yml"] = "enabled: true\n"
    with GitHubSimulator(seed) as sim:
        svc = Service(tmp_path, sim)
        try:
            svc.deliver("pull_request", hook_payload("pull_request__opened.payload.json", svc.pull(1)))
            assert svc.wait_idle()["skipped"] == 1
            assert svc.reviews() == []
        finally:
            svc.close()


def test_unanchored_comments_and_skipped_files_go_in_the_body(tmp_path):
    files = [
        {"filename": "NOTES.md", "status": "added", "patch": PATCH_NOTES},
        {"filename": "logo.png", "status": "added", "patch": None, "binary": True},
    ]
    with GitHubSimulator(make_seed(files)) as sim:
        svc = Service(tmp_path, sim)
        try:
            svc.deliver("pull_request", hook_payload("pull_request__opened.payload.json", svc.pull(1)))
            svc.wait_idle()
            [review] = svc.reviews()
            assert "changelog" in review["body"] and "logo.png" in review["body"]
            [inline] = svc.review_comments()
            assert inline["path"] == "NOTES.md" and inline["line"] == 1
        finally:
            svc.close()


def test_dry_run_posts_nothing(tmp_path, sim, caplog):
    svc = Service(tmp_path, sim, dry_run=True)
    try:
        with caplog.at_level("WARNING", logger="webhooks.poster"):
            svc.deliver("pull_request", hook_payload("pull_request__opened.payload.json", svc.pull(1)))
            assert svc.wait_idle()["done"] == 1
        assert svc.reviews() == []
        assert any("dry run" in r.getMessage() and '"comments"' in r.getMessage() for r in caplog.records)
    finally:
        svc.close()


def test_a_human_review_comment_lands_in_the_store_and_the_bots_own_does_not(service, sim):
    from adapters.store import Store

    human = sim.add_comments(REPO, 1, [{"path": "a.py", "line": 2, "side": "RIGHT", "body": "Why 2?", "user": "bob"}])[
        "webhooks"
    ][0]
    payload = hook_payload("pull_request_review_comment__created.payload.json")
    payload.update(comment=human["comment"], pull_request=dict(human["pull_request"]))
    assert service.deliver("pull_request_review_comment", payload).json()["outcome"] == "queued"
    service.wait_idle()
    store = Store(service.cfg.settings.db)
    stored = store.get_comment(human["comment"]["id"])
    assert stored is not None and stored.body == "Why 2?" and stored.author == "bob" and stored.pr == 1
    assert stored.source == "webhook"

    edited = dict(payload, action="edited", comment=dict(human["comment"], body="Why 2? Use a constant."))
    service.deliver("pull_request_review_comment", edited)
    service.wait_idle()
    assert store.get_comment(human["comment"]["id"]).body == "Why 2? Use a constant."

    own = dict(payload, comment=dict(human["comment"], id=424242, user={"login": BOT_LOGIN, "type": "User"}))
    assert service.deliver("pull_request_review_comment", own).json()["outcome"] == "own_comment"

    deleted = dict(payload, action="deleted")
    service.deliver("pull_request_review_comment", deleted)
    service.wait_idle()
    assert store.get_comment(human["comment"]["id"]) is None
    assert store.get_comment(424242) is None


def test_the_redis_queue_runs_the_same_service(tmp_path, sim, redis_url):
    import uuid

    svc = Service(tmp_path, sim, queue=redis_url, queue_name=f"t{uuid.uuid4().hex[:8]}")
    try:
        assert svc.queue.spec.kind == "redis"
        payload = opened(svc)
        assert svc.deliver("pull_request", payload, delivery="r-1").status_code == 202
        assert svc.deliver("pull_request", payload, delivery="r-1").json()["outcome"] == "duplicate"
        assert svc.wait_idle()["done"] == 1
        [review] = svc.reviews()
        assert inline_anchors_are_valid(sim, svc.review_comments())
        health = requests.get(svc.url + "/healthz", timeout=5).json()
        assert health["queue"] == {"kind": "redis", "reachable": True, "depth": 0, "jobs": health["queue"]["jobs"]}
        assert health["queue"]["jobs"]["done"] == 1
    finally:
        svc.close()


def test_github_app_auth_uses_the_installation_named_in_the_payload(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    (tmp_path / "app.pem").write_text(pem)
    seed = make_seed()
    seed["apps"] = [{"id": 42, "slug": "revbot", "installations": [7], "public_key": public}]
    with GitHubSimulator(seed) as sim:
        svc = Service(
            tmp_path, sim, github_token=None, github_app_id="42", github_app_private_key_file=tmp_path / "app.pem"
        )
        try:
            payload = hook_payload("pull_request__opened.payload.json", svc.pull(1))
            payload["installation"] = {"id": 7}
            svc.deliver("pull_request", payload)
            assert svc.wait_idle()["done"] == 1
            [review] = svc.reviews()
            assert review["user"]["login"] == "revbot[bot]"
            payload["installation"] = {"id": 999}  # an installation the App does not have
            payload["pull_request"]["head"]["sha"] = "f" * 40
            svc.deliver("pull_request", payload)
            counts = svc.wait_idle()
            assert counts["failed"] == 1 and len(svc.reviews()) == 1
        finally:
            svc.close()


def test_at_most_30_inline_comments_per_review_the_rest_in_the_body(tmp_path):
    files = [{"filename": f"pkg/m{k:02d}.py", "status": "modified", "patch": PATCH_A} for k in range(35)]
    seed = make_seed(files)
    seed["repos"][0]["files"]["main"][".revbot.yml"] = "max_comments: 50\n"
    with GitHubSimulator(seed) as sim:
        svc = Service(tmp_path, sim)
        try:
            svc.deliver("pull_request", hook_payload("pull_request__opened.payload.json", svc.pull(1)))
            svc.wait_idle()
            [review] = svc.reviews()
            assert len(svc.review_comments()) == 30
            assert review["body"].count("<!-- revbot:fp=") == 5
            text = requests.get(svc.url + "/metrics", timeout=5).text
            assert "revbot_comments_posted_total 30" in text and "revbot_comments_moved_to_body_total 5" in text
        finally:
            svc.close()


def test_a_push_that_changes_nothing_reviewed_posts_no_second_review(service, sim):
    service.deliver("pull_request", opened(service))
    service.wait_idle()
    same = sim.add_pull(
        REPO,
        number=1,
        files=[
            {"filename": "a.py", "status": "modified", "patch": PATCH_A},
            {
                "filename": "b.py",
                "status": "modified",
                "patch": "@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n@@ -20,3 +20,4 @@ def g():\n t\n u\n+v\n w",
            },
            {"filename": ".revbot.yml", "status": "modified", "patch": PATCH_CONFIG},
        ],
    )
    service.deliver("pull_request", hook_payload("pull_request__synchronize.payload.json", same["pull"]))
    service.wait_idle()
    assert len(service.reviews()) == 1
    [job] = [j for j in service.store.find(repo=REPO) if j.head_sha == same["pull"]["head"]["sha"]]
    assert job.state == "done" and job.result["nothing_new"] is True


@pytest.mark.parametrize("config, reviewed", [("max_comments: 10\n", False), ("skip_drafts: false\n", True)])
def test_drafts_follow_the_base_branch_config_and_ready_for_review_reviews_them(tmp_path, config, reviewed):
    seed = make_seed(draft=True)
    seed["repos"][0]["files"]["main"][".revbot.yml"] = config
    with GitHubSimulator(seed) as sim:
        svc = Service(tmp_path, sim)
        try:
            draft = svc.pull(1)
            assert draft["draft"] is True
            svc.deliver("pull_request", hook_payload("pull_request__opened.payload.json", draft))
            counts = svc.wait_idle()
            assert len(svc.reviews()) == (1 if reviewed else 0)
            assert counts["skipped"] == (0 if reviewed else 1)
            if not reviewed:  # the author marks it ready: the same head is reviewed now
                with sim._lock:  # the simulator has no admin call for "ready for review"
                    sim._state["repos"][REPO]["pulls"]["1"]["draft"] = False
                ready = hook_payload("pull_request__opened.payload.json", svc.pull(1), action="ready_for_review")
                svc.deliver("pull_request", ready)
                svc.wait_idle()
                assert len(svc.reviews()) == 1
        finally:
            svc.close()


def test_a_stale_job_queues_the_current_head_and_a_lagging_api_is_waited_for(service, sim):
    old = service.pull(1)
    pushed = sim.add_pull(REPO, number=1, files=[{"filename": "a.py", "status": "modified", "patch": PATCH_A}])
    # only the event of the old head arrives (the newer one is lost): the worker reviews the newer head
    service.deliver("pull_request", hook_payload("pull_request__opened.payload.json", old))
    service.wait_idle()
    [review] = service.reviews()
    assert review["commit_id"] == pushed["pull"]["head"]["sha"]
    # an event newer than what the API shows is retried, not treated as stale
    future = hook_payload("pull_request__synchronize.payload.json", pushed["pull"])
    future["pull_request"]["head"]["sha"] = "e" * 40
    future["pull_request"]["updated_at"] = "2999-01-01T00:00:00Z"
    job_id = service.deliver("pull_request", future).json()["job"]
    deadline = time.monotonic() + 10
    while service.store.get(job_id).attempts < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    job = service.store.get(job_id)
    assert job.attempts >= 2 and "older than the event" in job.result["error"]
    assert len(service.reviews()) == 1


def test_a_broken_revbot_yml_on_the_base_is_reported_on_the_pr_and_the_review_uses_defaults(tmp_path):
    seed = make_seed()
    seed["repos"][0]["files"]["main"][".revbot.yml"] = "enabled: true\nmax_coments: 3\n"
    with GitHubSimulator(seed) as sim:
        svc = Service(tmp_path, sim)
        try:
            job_id = svc.deliver("pull_request", hook_payload("pull_request__opened.payload.json", svc.pull(1))).json()[
                "job"
            ]
            assert svc.wait_idle()["done"] == 1
            job = svc.store.get(job_id)
            assert job.attempts == 1 and job.result["config_error"] is True
            [review] = svc.reviews()
            assert (
                "`.revbot.yml` on the base branch is invalid, so this review used the default settings"
                in review["body"]
            )
            assert ".revbot.yml@" in review["body"] and ":2: unknown key 'max_coments'" in review["body"]
            assert len(svc.review_comments()) >= 2  # reviewed all the same, with the defaults
        finally:
            svc.close()


def test_an_alias_bomb_in_the_base_config_is_reported_briefly_and_the_review_still_posted(tmp_path):
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    seed = make_seed()
    seed["repos"][0]["files"]["main"][".revbot.yml"] = "\n".join(
        lines + ["ignore_paths: [" + ",".join(["*a8"] * 9) + "]"]
    )
    with GitHubSimulator(seed) as sim:
        svc = Service(tmp_path, sim)
        try:
            job_id = svc.deliver("pull_request", hook_payload("pull_request__opened.payload.json", svc.pull(1))).json()[
                "job"
            ]
            assert svc.wait_idle(timeout=10)["done"] == 1
            [review] = svc.reviews()
            assert "anchors and aliases" in review["body"] and len(review["body"]) < 2000
            assert len(json.dumps(svc.store.get(job_id).result)) < 500
        finally:
            svc.close()


def test_the_config_note_cannot_smuggle_markers_or_mentions():
    from webhooks.poster import REVIEW_MARK, config_notice

    note = config_notice("x.yml:1: unknown key '<!-- revbot:review sha=abc --> @alice `code`'")
    assert REVIEW_MARK not in note and "<!-- revbot:fp=" not in note
    assert "``" in note and "@alice" in note.split("\n", 1)[1]  # inside a code span: shown, pings nobody
