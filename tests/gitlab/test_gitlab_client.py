"""The GitLab adapter over real HTTP to the simulator: the forge port's shapes, pagination,
429 + Retry-After, positioned discussions (new_line / old_line / both / line_range), the
fallback note for a refused position, threads, award emoji, access levels."""

from __future__ import annotations

import hashlib
import inspect

import pytest
from gitlab_kit import PROJECT

from adapters.github import GitHubClient
from adapters.gitlab import GitLabClient, line_code
from bot.errors import ForgeError, GitLabError, UsageError
from bot.forge import Forge


def test_both_adapters_offer_every_method_of_the_forge_port_with_its_parameters():
    methods = [name for name, member in vars(Forge).items() if not name.startswith("_") and callable(member)]
    assert len(methods) >= 18
    for name in methods:
        wanted = list(inspect.signature(getattr(Forge, name)).parameters)
        for adapter in (GitHubClient, GitLabClient):
            have = list(inspect.signature(getattr(adapter, name)).parameters)
            assert have[: len(wanted)] == wanted, f"{adapter.__name__}.{name}{have} != {wanted}"
    github = GitHubClient("t", api_url="http://127.0.0.1:9")
    gitlab = GitLabClient("t", url="http://127.0.0.1:9")
    for prop in ("api_url", "request_count", "rate_limiting"):  # looked up, not evaluated (no request)
        assert prop in dir(github) and prop in dir(gitlab)
    assert gitlab.api_url == "http://127.0.0.1:9/api/v4"


def test_a_merge_request_reads_as_a_pull_and_its_diff_parses(gl: GitLabClient, glsim):
    pr = gl.get_pull(PROJECT, 1)
    assert pr["number"] == 1 and pr["state"] == "open" and pr["user"]["login"] == "dev"
    assert pr["head"]["sha"] == glsim.projects[PROJECT]["mrs"][1]["versions"][-1]["head"]
    assert pr["base"]["ref"] == "main" and len(pr["base"]["sha"]) == 40
    files = {f["filename"]: f for f in gl.pull_files(PROJECT, 1)}
    assert files["c.py"]["status"] == "added" and files["a.py"]["patch"].startswith("@@ -2,7 +2,7 @@")
    from bot.diff import parse_diff

    diff = parse_diff(gl.pull_diff(PROJECT, 1))
    assert diff.is_commentable("a.py", 5, "RIGHT") and diff.is_commentable("a.py", 15, "LEFT")
    assert diff.file("c.py").status == "added"
    assert [p["number"] for p in gl.iter_pulls(PROJECT)] == [1]


def test_pages_are_followed_and_rate_limit_headers_kept(gl: GitLabClient, glsim):
    for i in range(5):
        glsim.add_note(PROJECT, 1, f"note {i}", author="rep")
    assert len(gl.issue_comments(PROJECT, 1)) == 5  # per_page=2: three pages
    pages = [p for m, p in glsim.requests if "/notes" in p]
    assert len(pages) == 3 and "page=3" in pages[-1]
    remaining, limit = gl.rate_limiting
    assert limit == 2000 and remaining < limit


def test_a_429_is_waited_out_for_its_retry_after_then_retried(gl: GitLabClient, glsim):
    glsim.inject_429(1, retry_after=1)
    before = gl.request_count
    assert gl.get_pull(PROJECT, 1)["number"] == 1
    assert gl.request_count - before == 2


def test_errors_name_the_merge_request_and_carry_the_status(gl: GitLabClient):
    with pytest.raises(ForgeError) as missing:
        gl.get_pull(PROJECT, 99)
    assert missing.value.status == 404 and f"{PROJECT}!99" in str(missing.value)
    with pytest.raises(UsageError):
        gl.get_pull("no-slash", 1)


def test_a_wrong_token_is_a_401_that_never_shows_the_token(glsim):
    with GitLabClient("secret-xyz", url=glsim.url) as bad, pytest.raises(GitLabError) as err:
        bad.get_pull(PROJECT, 1)
    assert err.value.status == 401 and "secret-xyz" not in str(err.value) and "secret-xyz" not in repr(bad)


def test_a_review_is_one_discussion_per_comment_anchored_like_gitlab_wants(gl: GitLabClient, glsim):
    head = gl.get_pull(PROJECT, 1)["head"]["sha"]
    answer = gl.create_review(
        PROJECT,
        1,
        commit_id=head,
        body="summary <!-- revbot:review sha=x -->",
        comments=[
            {"path": "a.py", "line": 5, "side": "RIGHT", "body": "added line"},
            {"path": "a.py", "line": 15, "side": "LEFT", "body": "removed line"},
            {"path": "a.py", "line": 3, "side": "RIGHT", "start_line": 2, "body": "context range"},
            {"path": "a.py", "line": 19, "side": "RIGHT", "body": "not in the diff"},
        ],
    )
    assert answer["positioned"] == 3 and answer["fallback"] == 1
    posted = glsim.posted
    assert posted[0]["position"]["new_line"] == 5 and posted[0]["position"]["old_line"] is None
    assert posted[1]["position"]["old_line"] == 15 and posted[1]["position"]["new_line"] is None
    ranged = posted[2]["position"]
    assert (ranged["old_line"], ranged["new_line"]) == (3, 3)
    sha = hashlib.sha1(b"a.py").hexdigest()
    assert ranged["line_range"]["start"] == {"line_code": f"{sha}_2_2", "type": "old", "old_line": 2, "new_line": 2}
    refs = glsim.projects[PROJECT]["mrs"][1]["versions"][-1]
    assert ranged["head_sha"] == refs["head"] and ranged["base_sha"] == refs["base"]
    # refused by GitLab (400): a plain note that names the file and the line, then the summary last
    assert "a.py" in posted[3]["body"] and "line 19" in posted[3]["body"] and "not in the diff" in posted[3]["body"]
    assert posted[-1]["body"].startswith("summary") and answer["id"] is not None


def test_a_review_of_an_old_head_is_refused(gl: GitLabClient, glsim):
    old = gl.get_pull(PROJECT, 1)["head"]["sha"]
    glsim.push(PROJECT, 1, {"b.py": "x = 2\n"})
    with pytest.raises(GitLabError) as err:
        gl.create_review(PROJECT, 1, commit_id=old, body="late", comments=[])
    assert err.value.status == 409 and not glsim.posted


def test_note_creation_is_paced_to_the_per_minute_limit(glsim):
    waits: list[float] = []
    now = [0.0]
    with GitLabClient("t", url=glsim.url, notes_per_minute=2, sleep=waits.append, clock=lambda: now[0]) as gl:
        for _ in range(3):
            gl.create_issue_comment(PROJECT, 1, "hi")
            now[0] += 1.0
    assert waits == [58.0]


def test_line_codes_follow_gitlabs_rule_on_the_recorded_diffnote():
    # webhooks/note/merge_request_diffnote.go-scm.json: README.md, new file, first line -> _0_1
    assert line_code("README.md", 0, 1) == "8ec9a00bfd09b3190ac6b22251dbb1aa95a0579d_0_1"


def test_threads_turn_outdated_when_a_push_changes_their_line_and_resolve(gl: GitLabClient, glsim):
    glsim.add_note(PROJECT, 1, "five?", author="rep", file="a.py", line=5)
    glsim.add_note(PROJECT, 1, "six", author="rep", file="a.py", line=12)
    assert [t["isOutdated"] for t in gl.review_threads(PROJECT, 1)] == [False, False]
    glsim.push(
        PROJECT,
        1,
        {"a.py": glsim.commits[gl.get_pull(PROJECT, 1)["head"]["sha"]]["files"]["a.py"].replace("line five", "line 5")},
    )
    threads = gl.review_threads(PROJECT, 1)
    assert [t["isOutdated"] for t in threads] == [True, False]
    assert gl.resolve_review_thread(threads[0]["id"]) is True
    assert [t["isResolved"] for t in gl.review_threads(PROJECT, 1)] == [True, False]


def test_replies_reactions_and_who_may_command(gl: GitLabClient, glsim):
    root = glsim.add_note(PROJECT, 1, "rename", author="rep", file="a.py", line=5)
    reply = gl.reply_to_review_comment(PROJECT, 1, root["id"], "done")
    assert reply["in_reply_to_id"] == root["id"]
    glsim.award(PROJECT, 1, root["id"], "thumbsup", user="dev")
    assert gl.comment_reactions(PROJECT, root["id"], number=1) == [
        {"content": "+1", "user": {"login": "dev", "type": "User"}}
    ]
    gl.react_to_issue_comment(PROJECT, root["id"], "eyes", number=1)
    assert [a["name"] for a in glsim.projects[PROJECT]["mrs"][1]["notes"][root["id"]]["awards"]] == ["thumbsup", "eyes"]
    perms = {u: gl.collaborator_permission(PROJECT, u) for u in ("lead", "dev", "rep", "nobody")}
    assert perms == {"lead": "admin", "dev": "write", "rep": "read", "nobody": "none"}
    assert gl.viewer_login() == "revbot"


def test_harvested_comments_carry_the_hunk_at_their_own_shas_and_replies(gl: GitLabClient, glsim):
    root = glsim.add_note(PROJECT, 1, "rename this", author="rep", file="a.py", line=5)
    glsim.add_note(PROJECT, 1, "ok", author="dev", reply_to=root["discussion"])
    glsim.award(PROJECT, 1, root["id"], "thumbsdown", user="dev")
    glsim.push(PROJECT, 1, {"b.py": "x = 3\n"})  # a later version: the hunk comes from the note's own
    got = list(gl.iter_review_comments(PROJECT))
    assert [c["in_reply_to_id"] for c in got] == [None, root["id"]]
    first = got[0]
    assert first["path"] == "a.py" and first["side"] == "RIGHT" and first["original_line"] == 5
    assert first["line"] is None  # written on an older version
    assert first["diff_hunk"].startswith("@@ -2,4 +2,4 @@") and first["diff_hunk"].endswith("+line five")
    assert first["reactions"] == {"-1": 1} and first["pr"] == 1
    assert first["user"]["login"] == "rep"
