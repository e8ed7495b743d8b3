"""The forge port's two error kinds, as both adapters give them over real HTTP to the simulators:
an anchor the forge refuses (``InvalidPositionError``) and threads the credentials may not resolve
(``ThreadsUnavailable``), and the forge-neutral thread handling of the webhook worker on GitLab."""

from __future__ import annotations

import logging

import pytest
from gitlab_kit import PROJECT
from webhook_kit import PATCH_A, REPO, TOKEN, make_seed

from adapters.github import GitHubClient
from adapters.gitlab import GitLabClient
from bot.errors import InvalidPositionError, ThreadsUnavailable
from bot.formats import fingerprint_marker
from revbot.dev.github_sim import GitHubSimulator
from webhooks.threads import ADDRESSED_MARK, read_threads, settle


def test_github_refuses_an_anchor_with_the_ports_error_naming_the_comment():
    with GitHubSimulator(make_seed([{"filename": "a.py", "status": "modified", "patch": PATCH_A}])) as sim:
        gh = GitHubClient(TOKEN, api_url=sim.url, min_write_interval=0)
        head = gh.get_pull(REPO, 1)["head"]["sha"]
        with pytest.raises(InvalidPositionError) as refused:
            gh.create_review(
                REPO,
                1,
                commit_id=head,
                body="b",
                comments=[{"path": "a.py", "line": 3, "body": "ok"}, {"path": "a.py", "line": 77, "body": "outside"}],
            )
    assert refused.value.status == 422 and refused.value.failed_indexes == [1]


def test_gitlab_turns_a_refused_position_into_a_note_naming_file_and_line(glsim, caplog):
    glsim.refuse_positions = 1  # a push raced the post: GitLab answers 400 for the position
    with GitLabClient("t", url=glsim.url) as gl, caplog.at_level(logging.WARNING, logger="adapters.gitlab"):
        head = gl.get_pull(PROJECT, 1)["head"]["sha"]
        answer = gl.create_review(
            PROJECT,
            1,
            commit_id=head,
            body="summary",
            comments=[
                {"path": "a.py", "line": 5, "side": "RIGHT", "body": "first"},
                {"path": "c.py", "line": 1, "side": "RIGHT", "body": "second"},
            ],
        )
    assert (answer["positioned"], answer["fallback"]) == (1, 1)
    note = next(p for p in glsim.posted if "first" in p["body"])
    assert "position" not in note and "a.py" in note["body"] and "line 5" in note["body"]
    assert any("refused the position" in r.getMessage() for r in caplog.records)


def _bot_thread(gl: GitLabClient) -> str:
    """One thread of the bot's on a.py:5; returns the merge request's head."""
    head = gl.get_pull(PROJECT, 1)["head"]["sha"]
    body = "Rename this.\n\n" + fingerprint_marker("f" * 16)
    gl.create_review(
        PROJECT, 1, commit_id=head, body="s", comments=[{"path": "a.py", "line": 5, "side": "RIGHT", "body": body}]
    )
    return head


def test_a_gitlab_thread_the_bot_may_not_resolve_gets_an_addressed_reply(glsim):
    with GitLabClient("t", url=glsim.url) as gl:
        head = _bot_thread(gl)
        state = read_threads(gl, PROJECT, 1, gl.pull_review_comments(PROJECT, 1), frozenset({"revbot"}))
        assert state.thread_api and len(state.own_threads()) == 1
        glsim.cannot_resolve.add("revbot")
        with pytest.raises(ThreadsUnavailable) as refused:
            gl.resolve_review_thread(state.threads[0].node_id)
        assert refused.value.status == 403
        assert settle(gl, PROJECT, 1, head, state.own_threads(), state.thread_api) == {"resolved": 0, "replied": 1}
        [reply] = [p for p in glsim.posted if p.get("reply_to")]
        assert reply["body"].startswith(f"Addressed in {head[:12]}") and ADDRESSED_MARK in reply["body"]
        glsim.cannot_resolve.clear()
        assert settle(gl, PROJECT, 1, head, state.own_threads(), state.thread_api) == {"resolved": 1, "replied": 0}
        assert [t["isResolved"] for t in gl.review_threads(PROJECT, 1)] == [True]
