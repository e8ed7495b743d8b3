"""What issue 14 needs from GitHub, on the simulator through revbot's client: the compare API
between two heads of a pull request (and 404 after a force-push), review comments that follow
their lines or become outdated after a push, review threads and resolving them over GraphQL
(with the ways GitHub refuses it), collaborator permissions, and reactions on conversation
comments."""

from __future__ import annotations

import pytest

from adapters.github import GitHubClient, GraphQLError
from bot.diff import parse_patch
from bot.errors import GitHubError
from revbot.dev.github_sim import GitHubSimulator
from revbot.dev.github_sim_heads import compare_patch, moved_line

REPO = "acme/shop"
TOKEN = "ghp_" + "Pu5hTh3ads" * 3 + "xyz"
PATCH = "@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n@@ -20,3 +20,4 @@ def g():\n t\n u\n+v\n w"
FIXED = "@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n@@ -20,3 +20,4 @@ def g():\n t\n u\n+v = compute()\n w"
SHIFTED = "@@ -1,3 +1,5 @@\n a\n+n1\n+n2\n-b\n+B\n c\n@@ -20,3 +22,4 @@ def g():\n t\n u\n+v\n w"


def seed() -> dict:
    return {
        "tokens": [
            TOKEN,
            {"token": "read-only", "login": "reader", "permission": "read"},
            {"token": "no-graphql", "login": "restricted", "graphql": False},
        ],
        "repos": [
            {
                "owner": "acme",
                "name": "shop",
                "collaborators": {"alice": "write", "bob": "read"},
                "pulls": [{"number": 1, "user": "alice", "files": [{"filename": "b.py", "patch": PATCH}]}],
            }
        ],
    }


@pytest.fixture
def sim():
    with GitHubSimulator(seed()) as simulator:
        yield simulator


def client(sim: GitHubSimulator, token: str = TOKEN) -> GitHubClient:
    return GitHubClient(token, api_url=sim.url, min_write_interval=0, max_retries=1, backoff_factor=0.01)


def push(sim: GitHubSimulator, patch: str, **kw) -> str:
    return sim.add_pull(REPO, number=1, files=[{"filename": "b.py", "patch": patch}], **kw)["pull"]["head"]["sha"]


def review(gh: GitHubClient, head: str, *lines: int) -> None:
    gh.create_review(
        REPO,
        1,
        commit_id=head,
        body="bot",
        comments=[{"path": "b.py", "line": n, "side": "RIGHT", "body": f"about line {n}"} for n in lines],
    )


# --------------------------------------------------------------------------- pure: two heads, one base


def test_compare_patch_holds_only_what_changed_between_the_heads():
    old, new = parse_patch(PATCH, "b.py"), parse_patch(FIXED, "b.py")
    assert compare_patch(old, new) == "@@ -20,4 +20,4 @@\n t\n u\n-v\n+v = compute()\n w"
    assert compare_patch(old, parse_patch(PATCH, "b.py")) == ""
    # a file the new head adds, and a change the new head takes back (the base again)
    assert (
        compare_patch(None, parse_patch("@@ -0,0 +1,2 @@\n+x\n+y", "n.py", status="added")) == "@@ -0,0 +1,2 @@\n+x\n+y"
    )
    assert compare_patch(old, None).startswith("@@ -1,3 +1,3 @@\n a\n-B\n+b\n c")


def test_moved_line_follows_unchanged_lines_and_drops_changed_ones():
    shifted = parse_patch(compare_patch(parse_patch(PATCH, "b.py"), parse_patch(SHIFTED, "b.py")), "b.py")
    assert [moved_line(shifted, n) for n in (1, 2, 3, 22)] == [1, 4, 5, 24]
    assert moved_line(shifted, 2, start_line=1) is None  # two lines were inserted inside the range
    fixed = parse_patch(compare_patch(parse_patch(PATCH, "b.py"), parse_patch(FIXED, "b.py")), "b.py")
    assert moved_line(fixed, 22) is None and moved_line(fixed, 21) == 21 and moved_line(fixed, 23) == 23
    assert moved_line(fixed, 23, start_line=21) is None
    assert moved_line(None, 7) == 7


# --------------------------------------------------------------------------- over HTTP


def test_compare_between_two_heads_and_after_a_force_push(sim):
    gh = client(sim)
    first = gh.get_pull(REPO, 1)
    second = push(sim, FIXED)
    answer = gh.compare(REPO, first["head"]["sha"], second)
    assert answer["status"] == "ahead" and answer["ahead_by"] == 1 and answer["behind_by"] == 0
    assert [(f["filename"], f["patch"]) for f in answer["files"]] == [
        ("b.py", "@@ -20,4 +20,4 @@\n t\n u\n-v\n+v = compute()\n w")
    ]
    assert gh.compare(REPO, second, first["head"]["sha"])["status"] == "behind"
    from_base = gh.compare(REPO, first["base"]["sha"], second)
    assert [f["patch"] for f in from_base["files"]] == [FIXED]
    same = push(sim, FIXED)  # a push that changes nothing in the diff (e.g. a rebased no-op)
    assert gh.compare(REPO, second, same)["files"] == []
    rewritten = push(sim, PATCH, force=True)
    with pytest.raises(GitHubError) as err:
        gh.compare(REPO, second, rewritten)
    assert err.value.status == 404 and "force-pushed away" in str(err.value)


def test_a_push_moves_comments_on_untouched_lines_and_outdates_the_others(sim):
    gh = client(sim)
    review(gh, gh.get_pull(REPO, 1)["head"]["sha"], 2, 22)
    head = push(sim, SHIFTED)  # two lines inserted at the top: both comments move down by two
    by_body = {c["body"]: c for c in gh.pull_review_comments(REPO, 1)}
    assert by_body["about line 2"]["line"] == 4 and by_body["about line 22"]["line"] == 24
    assert by_body["about line 22"]["original_line"] == 22 and by_body["about line 22"]["commit_id"] == head
    push(sim, "@@ -1,3 +1,5 @@\n a\n+n1\n+n2\n-b\n+B\n c\n@@ -20,3 +22,4 @@ def g():\n t\n u\n+v = 2\n w")
    by_body = {c["body"]: c for c in gh.pull_review_comments(REPO, 1)}
    assert by_body["about line 22"]["line"] is None and by_body["about line 22"]["position"] is None
    assert by_body["about line 2"]["line"] == 4
    threads = {t["comments"]["nodes"][0]["body"]: t for t in gh.review_threads(REPO, 1)}
    assert threads["about line 22"]["isOutdated"] and not threads["about line 2"]["isOutdated"]


def test_review_threads_and_resolving_one_over_graphql(sim):
    gh = client(sim)
    head = gh.get_pull(REPO, 1)["head"]["sha"]
    review(gh, head, 2)
    sim.add_comments(REPO, 1, [{"path": "b.py", "line": 22, "body": "human note", "user": "bob"}])
    bot_root = next(c for c in gh.pull_review_comments(REPO, 1) if c["body"] == "about line 2")
    gh.reply_to_review_comment(REPO, 1, bot_root["id"], "a reply")
    assert gh.viewer_login() == "revbot-sim"
    threads = gh.review_threads(REPO, 1)
    assert [[(c["author"]["login"], c["body"]) for c in t["comments"]["nodes"]] for t in threads] == [
        [("revbot-sim", "about line 2"), ("revbot-sim", "a reply")],
        [("bob", "human note")],
    ]
    assert not any(t["isResolved"] for t in threads)
    assert gh.resolve_review_thread(threads[0]["id"]) is True
    after = gh.review_threads(REPO, 1)
    assert after[0]["isResolved"] and after[0]["resolvedBy"] == {"login": "revbot-sim"}
    assert not after[1]["isResolved"]


def test_review_threads_are_paged(sim):
    sim.add_comments(REPO, 1, count=57)
    threads = client(sim).review_threads(REPO, 1)
    assert len(threads) == 57 and len({t["id"] for t in threads}) == 57


def test_graphql_refusals_read_as_github_gives_them(sim):
    gh = client(sim)
    review(gh, gh.get_pull(REPO, 1)["head"]["sha"], 2)
    thread = gh.review_threads(REPO, 1)[0]["id"]
    with pytest.raises(GraphQLError) as refused:
        client(sim, "read-only").resolve_review_thread(thread)
    assert refused.value.forbidden and "Resource not accessible" in str(refused.value)
    with pytest.raises(GitHubError) as blocked:
        client(sim, "no-graphql").resolve_review_thread(thread)
    assert blocked.value.status == 403 and not isinstance(blocked.value, GraphQLError)
    assert client(sim, "no-graphql").viewer_login() == "restricted"  # from GET /user
    with pytest.raises(GraphQLError, match="Cannot query field 'nope'") as bad:
        gh.graphql("{ viewer { nope } }")
    assert not bad.value.forbidden
    with pytest.raises(GitHubError) as missing:
        gh.resolve_review_thread("bm90LWEtdGhyZWFk")
    assert missing.value.status == 404
    assert not gh.review_threads(REPO, 1)[0]["isResolved"]


def test_collaborator_permissions(sim):
    gh = client(sim)
    sim.add_comments(REPO, 1, [{"path": "b.py", "line": 2, "body": "x", "user": "carol"}])  # a known non-member
    assert [gh.collaborator_permission(REPO, who) for who in ("alice", "bob", "acme", "carol", "nobody")] == [
        "write",
        "read",
        "admin",
        "read",
        "none",
    ]


def test_a_conversation_comment_its_webhook_and_a_reaction_to_it(sim):
    gh = client(sim)
    made = sim.add_issue_comment(REPO, 1, "/revbot review", user="alice")
    hook = made["webhook"]
    assert hook["action"] == "created" and hook["issue"]["number"] == 1 and "pull_request" in hook["issue"]
    assert hook["comment"]["user"]["login"] == "alice" and hook["comment"]["body"] == "/revbot review"
    first = gh.react_to_issue_comment(REPO, made["comment"]["id"], "eyes")
    again = gh.react_to_issue_comment(REPO, made["comment"]["id"], "eyes")
    assert first["id"] == again["id"] and first["content"] == "eyes"
    [listed] = [c for c in gh.issue_comments(REPO, 1) if c["id"] == made["comment"]["id"]]
    assert listed["reactions"]["eyes"] == 1 and listed["reactions"]["total_count"] == 1
    with pytest.raises(GitHubError) as read_only:
        client(sim, "read-only").react_to_issue_comment(REPO, made["comment"]["id"], "+1")
    assert read_only.value.status == 403


def test_a_thread_resolved_in_the_ui_sends_its_webhook(sim):
    gh = client(sim)
    review(gh, gh.get_pull(REPO, 1)["head"]["sha"], 2)
    root = gh.pull_review_comments(REPO, 1)[0]
    hook = sim.resolve_thread(REPO, root["id"], user="alice")["webhook"]
    assert hook["action"] == "resolved" and hook["sender"]["login"] == "alice"
    assert [c["id"] for c in hook["thread"]["comments"]] == [root["id"]]
    assert gh.review_threads(REPO, 1)[0]["resolvedBy"] == {"login": "alice"}


def test_review_comment_ids_past_32_bits_come_as_full_database_ids(sim):
    gh = client(sim)
    big = 2_210_000_313  # GitHub's review comment ids passed 2**31 - 1 long ago
    sim.add_comments(REPO, 1, [{"id": big, "path": "b.py", "line": 2, "body": "old id space", "user": "bob"}])
    [thread] = gh.review_threads(REPO, 1)
    assert thread["comments"]["nodes"][0]["fullDatabaseId"] == str(big)
    with pytest.raises(GraphQLError, match="non 32-bit signed integer"):
        gh.graphql(
            "query($o: String!, $n: String!) { repository(owner: $o, name: $n) { pullRequest(number: 1) { "
            "reviewThreads(first: 5) { nodes { comments(first: 1) { nodes { databaseId } } } } } } }",
            {"o": "acme", "n": "shop"},
        )
