"""Issue 14, items 1 and 2, over real HTTP: a push to a reviewed pull request is reviewed only
where it changed things (the compare API between the two heads), the review body says which range,
the bot's threads on lines the push fixed are resolved (GraphQL) or answered "addressed in <sha>"
(no GraphQL rights), humans' threads are never touched, nothing is posted twice, and a force-push
that drops the last reviewed head falls back to the whole diff."""

from __future__ import annotations

import re

import pytest
from webhook_kit import (
    PATCH_A,
    PATCH_B,
    PATCH_B2,
    PATCH_CONFIG,
    REPO,
    TOKEN,
    ScriptedBackend,
    Service,
    hook_payload,
    make_seed,
)

from bot.prompt import PromptInput
from revbot.dev.github_sim import GitHubSimulator

FILES = [
    {"filename": "a.py", "status": "modified", "patch": PATCH_A},
    {"filename": "b.py", "status": "modified", "patch": PATCH_B},
    {"filename": ".revbot.yml", "status": "modified", "patch": PATCH_CONFIG},
]
PUSHED = [dict(FILES[0]), {"filename": "b.py", "status": "modified", "patch": PATCH_B2}, dict(FILES[2])]


class RecordingBackend(ScriptedBackend):
    """The scripted model, remembering the hunk headers it was shown."""

    def __init__(self, seen: list[list[str]]):
        super().__init__("v1")
        self.seen = seen

    def generate(self, inputs: list[PromptInput], *, max_new_tokens: int = 256):
        self.seen.append([i.user.split("\n")[0].removeprefix("File: ") + " " + _header(i.user) for i in inputs])
        return super().generate(inputs, max_new_tokens=max_new_tokens)


def _header(user: str) -> str:
    m = re.search(r"@@ [^@]+ @@", user)
    return m.group(0) if m else "?"


def start(tmp_path, seed: dict) -> tuple[GitHubSimulator, Service, list[list[str]]]:
    sim = GitHubSimulator(seed).start()
    seen: list[list[str]] = []
    return sim, Service(tmp_path, sim, backend_factory=lambda v: RecordingBackend(seen)), seen


def deliver(svc: Service, name: str, pull: dict) -> None:
    answer = svc.deliver("pull_request", hook_payload(name, pull))
    assert answer.status_code in (200, 202), answer.text
    svc.wait_idle()


def threads(svc: Service) -> dict[str, dict]:
    """Each thread by its first comment's first line."""
    return {t["comments"]["nodes"][0]["body"].split("\n")[0]: t for t in svc.github().review_threads(REPO, 1)}


@pytest.fixture
def env(tmp_path):
    sim, svc, seen = start(tmp_path, make_seed(FILES))
    yield sim, svc, seen
    svc.close()
    sim.stop()


def test_a_push_is_reviewed_only_where_it_changed_and_fixed_threads_are_resolved(env):
    sim, svc, seen = env
    deliver(svc, "pull_request__opened.payload.json", svc.pull(1))
    first_head = svc.pull(1)["head"]["sha"]
    assert sorted(h for call in seen for h in call) == [
        ".revbot.yml @@ -1,1 +1,1 @@",
        "a.py @@ -1,4 +1,5 @@",
        "b.py @@ -1,3 +1,3 @@",
        "b.py @@ -20,3 +20,4 @@",
    ]
    [first] = svc.reviews()
    assert "**Reviewed range:** the whole pull request" in first["body"]
    before = svc.review_comments()
    # a person's own thread on the line the push will change, quoting a revbot fingerprint
    sim.add_comments(
        REPO, 1, [{"path": "b.py", "line": 22, "user": "alice", "body": "Why v? <!-- revbot:fp=0123456789abcdef -->"}]
    )

    seen.clear()
    pushed = sim.add_pull(REPO, number=1, files=PUSHED)["pull"]
    deliver(svc, "pull_request__synchronize.payload.json", pushed)
    # only b.py's second hunk changed between the heads: the model saw that hunk and nothing else
    assert seen == [["b.py @@ -20,3 +20,4 @@"]]
    second = next(r for r in svc.reviews() if r["commit_id"] == pushed["head"]["sha"])
    assert (
        f"only the changes since the last review, `{first_head[:12]}`...`{pushed['head']['sha'][:12]}`"
        in second["body"]
    )
    assert "1 of the pull request's 4 hunks in `b.py`" in second["body"]
    assert f"<!-- revbot:range from={first_head} to={pushed['head']['sha']} -->" in second["body"]
    assert "**Fixed by this push:** 1 earlier revbot comment on lines it changed is no longer raised" in second["body"]

    after = svc.review_comments()
    new = [c for c in after if c["id"] not in {b["id"] for b in before} and c["user"]["login"] != "alice"]
    assert [(c["path"], c["line"]) for c in new] == [("b.py", 22)] and "vv = compute()" in new[0]["body"]
    fps = [m for c in after for m in re.findall(r"revbot:fp=([0-9a-f]+)", c["body"]) if c["user"]["login"] != "alice"]
    assert len(fps) == len(set(fps)) == 5  # four from the first review, one new: nothing twice

    state = threads(svc)
    old_b22 = next(k for k in state if "Please double-check `v`" in k)
    assert state[old_b22]["isResolved"] and state[old_b22]["resolvedBy"]["login"] == "revbot-sim"
    assert not state["Why v? <!-- revbot:fp=0123456789abcdef -->"]["isResolved"]  # a person's: untouched
    still = [k for k, t in state.items() if k != old_b22 and t["isResolved"]]
    assert still == []  # a.py, b.py's first hunk and .revbot.yml did not change: their threads stay open
    [job] = [j for j in svc.store.find(repo=REPO) if j.head_sha == pushed["head"]["sha"]]
    assert job.result["incremental"] is True and job.result["hunks_in_scope"] == 1 and job.result["resolved"] == 1

    # the same push again (a redelivery under a new id, a reopened event): nothing more
    deliver(svc, "pull_request__reopened.payload.json", pushed)
    assert len([r for r in svc.reviews() if "revbot:review" in r["body"]]) == 2
    assert len(svc.review_comments()) == len(after)


def test_a_push_that_changes_only_an_unreviewed_line_reviews_nothing_and_posts_nothing(env):
    sim, svc, seen = env
    deliver(svc, "pull_request__opened.payload.json", svc.pull(1))
    seen.clear()
    same = sim.add_pull(REPO, number=1, files=[dict(f) for f in FILES])["pull"]  # a new commit, same diff
    deliver(svc, "pull_request__synchronize.payload.json", same)
    assert seen == [] and len(svc.reviews()) == 1
    [job] = [j for j in svc.store.find(repo=REPO) if j.head_sha == same["head"]["sha"]]
    assert job.result["nothing_new"] and job.result["incremental"] and job.result["hunks_in_scope"] == 0


def test_after_a_force_push_the_whole_diff_is_reviewed_and_the_body_says_why(env):
    sim, svc, seen = env
    deliver(svc, "pull_request__opened.payload.json", svc.pull(1))
    first_head = svc.pull(1)["head"]["sha"]
    seen.clear()
    rewritten = sim.add_pull(REPO, number=1, files=PUSHED, force=True)["pull"]
    deliver(svc, "pull_request__synchronize.payload.json", rewritten)
    assert sorted(h for call in seen for h in call) == [
        ".revbot.yml @@ -1,1 +1,1 @@",
        "a.py @@ -1,4 +1,5 @@",
        "b.py @@ -1,3 +1,3 @@",
        "b.py @@ -20,3 +20,4 @@",
    ]
    second = next(r for r in svc.reviews() if r["commit_id"] == rewritten["head"]["sha"])
    assert (
        f"**Reviewed range:** the whole pull request (`{rewritten['base']['sha'][:12]}`..."
        f"`{rewritten['head']['sha'][:12]}`): the last reviewed head `{first_head[:12]}` is no longer in the "
        "branch (force-push)."
    ) in second["body"]
    # still only what is new is posted: the unchanged hunks' comments are not repeated
    fps = [m for c in svc.review_comments() for m in re.findall(r"revbot:fp=([0-9a-f]+)", c["body"])]
    assert len(fps) == len(set(fps)) == 5


def test_without_graphql_rights_a_fixed_thread_gets_one_addressed_reply(tmp_path):
    seed = make_seed(FILES)
    seed["tokens"] = [{"token": TOKEN, "graphql": False}]
    sim, svc, seen = start(tmp_path, seed)
    try:
        deliver(svc, "pull_request__opened.payload.json", svc.pull(1))
        root = next(c for c in svc.review_comments() if c["path"] == "b.py" and c["line"] == 22)
        pushed = sim.add_pull(REPO, number=1, files=PUSHED)["pull"]
        deliver(svc, "pull_request__synchronize.payload.json", pushed)
        replies = [c for c in svc.review_comments() if c.get("in_reply_to_id") == root["id"]]
        assert len(replies) == 1
        assert replies[0]["body"].startswith(f"Addressed in {pushed['head']['sha'][:12]}: this push changed")
        second = next(r for r in svc.reviews() if r["commit_id"] == pushed["head"]["sha"] and "revbot" in r["body"])
        assert 'each got an "addressed" reply' in second["body"]
        # another push elsewhere: the thread is not answered twice
        again = sim.add_pull(
            REPO,
            number=1,
            files=[
                {"filename": "a.py", "status": "modified", "patch": PATCH_A.replace("+y = 3", "+y = 4")},
                *PUSHED[1:],
            ],
        )["pull"]
        deliver(svc, "pull_request__synchronize.payload.json", again)
        assert len([c for c in svc.review_comments() if c.get("in_reply_to_id") == root["id"]]) == 1
    finally:
        svc.close()
        sim.stop()


def test_when_resolving_is_forbidden_the_fixed_thread_is_answered_instead(tmp_path):
    """GraphQL readable, the resolveReviewThread mutation FORBIDDEN (as for credentials that may
    comment but not resolve): the thread gets the reply and stays open."""
    seed = make_seed(FILES)
    seed["tokens"] = [{"token": TOKEN, "graphql": "read"}]
    sim, svc, seen = start(tmp_path, seed)
    try:
        deliver(svc, "pull_request__opened.payload.json", svc.pull(1))
        root = next(c for c in svc.review_comments() if c["path"] == "b.py" and c["line"] == 22)
        pushed = sim.add_pull(REPO, number=1, files=PUSHED)["pull"]
        deliver(svc, "pull_request__synchronize.payload.json", pushed)
        assert not any(t["isResolved"] for t in svc.github().review_threads(REPO, 1))
        [reply] = [c for c in svc.review_comments() if c.get("in_reply_to_id") == root["id"]]
        assert reply["body"].startswith(f"Addressed in {pushed['head']['sha'][:12]}")
        [job] = [j for j in svc.store.find(repo=REPO) if j.head_sha == pushed["head"]["sha"]]
        assert job.state == "done" and job.result["resolved"] == 0 and job.result["replied"] == 1
    finally:
        svc.close()
        sim.stop()
