"""GitHubClient (PyGithub underneath) against the simulator over real HTTP: reads, paging,
reviews and 422s, retries, rate limits, and errors that are clear and never carry the token."""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime

import pytest
from ghsim_data import PATCH_A, REPO, TOKEN, Sleeps

from adapters.github import GitHubClient, ReviewValidationError, _failed_indexes
from bot.errors import GitHubError, UsageError


def route_count(sim, template: str) -> int:
    return sim.stats()["by_route"].get(template, 0)


REPO_ROUTE = "GET /repos/{owner}/{repo}"


# ----------------------------------------------------------------- reads


def test_reads_return_plain_dicts(client):
    repo = client.get_repo(REPO)
    assert isinstance(repo, dict) and repo["full_name"] == REPO and repo["default_branch"] == "main"
    assert [p["number"] for p in client.iter_pulls(REPO)] == [2, 1]  # oldest first
    assert [p["number"] for p in client.iter_pulls(REPO, state="open")] == [1]
    pull = client.get_pull(REPO, 1)
    assert pull["head"]["ref"] == "feature-1" and pull["user"]["login"] == "alice"
    files = client.pull_files(REPO, 1)
    assert [f["filename"] for f in files][:2] == ["a.py", "b.py"] and files[0]["patch"] == PATCH_A
    diff = client.pull_diff(REPO, 1)
    assert diff.startswith("diff --git a/a.py b/a.py\n") and "+y = 3" in diff
    comments = client.pull_review_comments(REPO, 1)
    assert [(c["id"], c.get("in_reply_to_id")) for c in comments] == [(501, None), (502, 501)]
    assert [r["state"] for r in client.list_reviews(REPO, 1)][-1] == "APPROVED"
    assert [c["body"] for c in client.issue_comments(REPO, 1)] == ["Thanks!"]
    assert sorted(r["content"] for r in client.comment_reactions(REPO, 501)) == ["+1", "+1", "-1"]
    limit = client.rate_limit()
    assert set(limit) == {"remaining", "limit", "reset"} and limit["limit"] == 5000


def test_file_text_by_ref_and_missing_is_none(client):
    assert client.get_file_text(REPO, ".revbot.yml", "main") == "max_comments: 3\n"
    assert client.get_file_text(REPO, ".revbot.yml", "feature-1") == "max_comments: 99\n"
    assert client.get_file_text(REPO, ".revbot.yml") == "max_comments: 3\n"
    assert client.get_file_text(REPO, "no/such.yml", "main") is None


def test_repo_wide_comments_with_since(client, sim):
    sim.add_comments(
        REPO, 2, [{"path": "a.py", "line": 2, "body": "later", "user": "dave", "created_at": "2024-05-01T00:00:00Z"}]
    )
    all_ids = [c["id"] for c in client.iter_review_comments(REPO)]
    assert all_ids[:2] == [501, 502] and len(all_ids) == 3
    since = datetime(2024, 1, 2, 12, tzinfo=UTC)
    assert [c["id"] for c in client.iter_review_comments(REPO, since=since)] == all_ids[1:]
    assert [c["id"] for c in client.iter_review_comments(REPO, since="2024-04-01T00:00:00Z")] == all_ids[2:]
    newest_first = [c["id"] for c in client.iter_review_comments(REPO, sort="created", direction="desc")]
    assert newest_first == all_ids[::-1]


def test_pages_of_100(client, sim):
    sim.add_comments(REPO, 1, count=248)
    sim.reset_stats()
    before = client.request_count
    comments = list(client.iter_review_comments(REPO))
    assert len(comments) == 250 and len({c["id"] for c in comments}) == 250
    assert route_count(sim, "GET /repos/{owner}/{repo}/pulls/comments") == 3
    assert client.request_count - before == 3


def test_enterprise_api_url_with_prefix(sim, sleeps):
    with GitHubClient(TOKEN, api_url=sim.url + "/api/v3/", sleep=sleeps) as gh:
        sim.add_comments(REPO, 1, count=148)
        assert len(gh.pull_review_comments(REPO, 1)) == 150  # follows /api/v3 Link URLs
        assert gh.get_repo(REPO)["name"] == "widgets"


def test_credentials_come_from_the_settings_never_from_the_environment(sim, monkeypatch):
    from adapters.settings import Settings

    with GitHubClient.from_settings(Settings.from_env({"GITHUB_TOKEN": TOKEN}), api_url=sim.url) as gh:
        assert gh.get_repo(REPO)["id"] > 0 and not gh.anonymous
    with GitHubClient.from_settings(Settings.from_env({"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": sim.url})) as gh:
        assert gh.api_url == sim.url and gh.get_pull(REPO, 1)["number"] == 1
    with GitHubClient.from_settings(Settings.from_env({"GITHUB_TOKEN": "x"}), token=TOKEN, api_url=sim.url) as gh:
        assert gh.get_repo(REPO)["id"] > 0  # an explicit token wins over the settings'
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("REVBOT_GITHUB_API_URL", sim.url)
    with GitHubClient() as gh:  # the constructor reads nothing from the environment
        assert gh.anonymous and gh.api_url == "https://api.github.com"


# ----------------------------------------------------------------- reviews


def test_create_review_posts_once_with_all_comments(client, sim):
    head = client.get_pull(REPO, 1)["head"]["sha"]
    sim.reset_stats()
    review = client.create_review(
        REPO,
        1,
        commit_id=head,
        body="2 notes",
        comments=[
            {"path": "a.py", "line": 3, "side": "RIGHT", "body": "y?", "fingerprint": "not sent"},
            {"path": "b.py", "line": 22, "start_line": 20, "side": "RIGHT", "start_side": "RIGHT", "body": "range"},
        ],
    )
    assert review["state"] == "COMMENTED" and review["body"] == "2 notes"
    assert sim.stats()["by_route"] == {"POST /repos/{owner}/{repo}/pulls/{pull_number}/reviews": 1}
    mine = [c for c in client.pull_review_comments(REPO, 1) if c["pull_request_review_id"] == review["id"]]
    assert [(c["path"], c["line"], c["start_line"]) for c in mine] == [("a.py", 3, None), ("b.py", 22, 20)]


def test_create_review_422_names_the_failing_comments(client, sim):
    head = client.get_pull(REPO, 1)["head"]["sha"]
    before = len(client.pull_review_comments(REPO, 1))
    with pytest.raises(ReviewValidationError) as caught:
        client.create_review(
            REPO,
            1,
            commit_id=head,
            body="b",
            comments=[
                {"path": "a.py", "line": 3, "body": "ok"},
                {"path": "a.py", "line": 77, "body": "outside"},
                {"path": "zzz.py", "line": 1, "body": "unknown file"},
            ],
        )
    err = caught.value
    assert err.status == 422 and err.failed_indexes == [1, 2]
    assert len(err.errors) == 2 and "must be part of the diff" in str(err) and "a.py 77" in str(err)
    assert len(client.pull_review_comments(REPO, 1)) == before
    # dropping exactly those comments makes the review go through
    kept = client.create_review(REPO, 1, commit_id=head, body="b", comments=[{"path": "a.py", "line": 3, "body": "ok"}])
    assert kept["id"]


def test_failed_indexes_from_other_error_shapes():
    sent = [{"path": "a.py", "line": 1}, {"path": "b.py", "line": 9}]
    assert _failed_indexes([{"field": "comments[1].line", "message": "bad"}], sent) == [1]
    assert _failed_indexes([{"path": "b.py", "line": 9, "message": "could not be resolved"}], sent) == [1]
    assert _failed_indexes(["Line could not be resolved"], sent) is None  # GitHub's bare strings say nothing
    assert _failed_indexes([{"index": 5}], sent) is None


def test_issue_comment(client):
    made = client.create_issue_comment(REPO, 1, "Skipped 2 files: too large")
    assert made["body"] == "Skipped 2 files: too large"
    assert [c["body"] for c in client.issue_comments(REPO, 1)][-1] == made["body"]


# ----------------------------------------------------------------- retries and limits


def test_500_then_success_is_retried_with_backoff(client, sim, sleeps):
    sim.inject("error", count=2)
    sim.reset_stats()
    assert client.get_repo(REPO)["name"] == "widgets"
    assert route_count(sim, REPO_ROUTE) == 3 and sleeps == [1.0, 2.0]


def test_persistent_500_gives_a_clear_error_after_bounded_retries(sim, sleeps):
    with GitHubClient(TOKEN, api_url=sim.url, sleep=sleeps, max_retries=3) as gh:
        sim.inject("error", count=10, status=503)
        sim.reset_stats()
        with pytest.raises(GitHubError) as caught:
            gh.get_repo(REPO)
    assert caught.value.status == 503 and "after 3 retries" in str(caught.value)
    assert route_count(sim, REPO_ROUTE) == 4 and sleeps == [1.0, 2.0, 4.0]


def test_writes_are_not_resent_after_a_5xx(client, sim, sleeps):
    sim.inject("error", count=1, method="POST")
    sim.reset_stats()
    with pytest.raises(GitHubError, match="not retried"):
        client.create_issue_comment(REPO, 1, "once")
    assert sim.stats()["total"] == 1 and sleeps == []


def test_secondary_limit_with_retry_after_is_honoured(client, sim, sleeps):
    sim.inject("secondary", retry_after=42)
    assert client.get_pull(REPO, 1)["number"] == 1
    assert sleeps == [42.0]


def test_secondary_limit_without_retry_after_waits_the_configured_minimum(client, sim, sleeps):
    sim.inject("secondary")
    sim.inject("429")
    assert client.get_repo(REPO)["name"] == "widgets"
    assert sleeps == [5.0, 5.0]  # the client fixture shortens the 60 s default to 5 s


def test_429_with_retry_after(client, sim, sleeps):
    sim.inject("429", retry_after=7, method="POST")
    head = client.get_pull(REPO, 1)["head"]["sha"]
    review = client.create_review(REPO, 1, commit_id=head, body="after a wait", comments=[])
    assert review["body"] == "after a wait" and sleeps == [7.0]


def test_exhausted_primary_limit_sleeps_until_the_reset(client, sim, sleeps):
    sim.inject("primary", reset_in=30)
    assert client.get_repo(REPO)["name"] == "widgets"
    assert len(sleeps) == 1 and 28 <= sleeps[0] <= 32


def test_primary_reset_too_far_away_raises_instead_of_waiting(sim, sleeps):
    with GitHubClient(TOKEN, api_url=sim.url, sleep=sleeps, max_rate_wait=900) as gh:
        sim.inject("primary", reset_in=3600)
        sim.reset_stats()
        with pytest.raises(GitHubError) as caught:
            gh.get_repo(REPO)
    assert caught.value.status == 403 and "max_rate_wait (900 s)" in str(caught.value)
    assert sleeps == [] and route_count(sim, REPO_ROUTE) == 1


def test_retry_after_longer_than_the_cap_raises(sim, sleeps):
    with GitHubClient(TOKEN, api_url=sim.url, sleep=sleeps, max_rate_wait=10) as gh:
        sim.inject("secondary", retry_after=600)
        with pytest.raises(GitHubError, match="longer than max_rate_wait"):
            gh.get_repo(REPO)
    assert sleeps == []


def test_rate_limit_that_outlasts_the_retries_says_so(sim, sleeps):
    with GitHubClient(TOKEN, api_url=sim.url, sleep=sleeps, max_retries=2) as gh:
        sim.inject("secondary", count=5)
        with pytest.raises(GitHubError, match="rate limit exceeded") as caught:
            gh.get_repo(REPO)
    assert caught.value.status == 403 and len(sleeps) == 2


def test_dropped_connection_is_retried_for_reads(client, sim, sleeps):
    sim.inject("disconnect")
    assert client.get_repo(REPO)["name"] == "widgets"
    assert sleeps == [1.0]


def test_a_write_whose_answer_was_lost_is_not_sent_again(client, sim, sleeps):
    client.get_repo(REPO)  # a warm keep-alive connection, as in a long-running worker
    sim.inject("disconnect", method="POST")
    sim.reset_stats()
    with pytest.raises(GitHubError, match="cannot reach .* re-sent only when it surely never arrived"):
        client.create_issue_comment(REPO, 1, "maybe posted")
    assert sim.stats()["total"] == 1 and sleeps == []


def test_request_count_includes_retries(client, sim):
    start = client.request_count
    sim.inject("error", count=1)
    client.get_repo(REPO)
    client.get_pull(REPO, 1)
    assert client.request_count - start == 3


# ----------------------------------------------------------------- errors


def test_bad_token_is_401_and_never_echoed(sim, sleeps, caplog):
    secret = "ghp_" + "Z" * 36
    caplog.set_level(logging.DEBUG)
    with GitHubClient(secret, api_url=sim.url, sleep=sleeps) as gh:
        with pytest.raises(GitHubError) as caught:
            gh.get_repo(REPO)
        text = f"{caught.value} {caught.value!r} {caught.value.args} {gh!r}"
    assert caught.value.status == 401 and "Bad credentials" in str(caught.value)
    assert secret not in text and secret not in caplog.text
    assert secret not in repr(gh.__dict__.get("_auth"))
    assert sleeps == []  # a 401 is not retried


def test_unknown_repo_is_a_clear_404(client):
    with pytest.raises(GitHubError) as caught:
        client.get_repo("acme/nothing")
    assert caught.value.status == 404
    assert str(caught.value).startswith("repository acme/nothing not found or not visible to this token")
    with pytest.raises(GitHubError, match=r"pull request acme/widgets#99 not found"):
        client.get_pull(REPO, 99)


def test_no_permission_is_a_403(sim, sleeps):
    with GitHubClient("read-only-token", api_url=sim.url, sleep=sleeps, min_write_interval=0) as gh:
        assert gh.get_repo(REPO)
        with pytest.raises(GitHubError, match="no permission for commenting on acme/widgets#1") as caught:
            gh.create_issue_comment(REPO, 1, "x")
    assert caught.value.status == 403 and sleeps == []


def test_network_down_is_a_clear_error_after_retries(sleeps):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with GitHubClient(TOKEN, api_url=f"http://127.0.0.1:{port}", sleep=sleeps, max_retries=3) as gh:
        with pytest.raises(GitHubError) as caught:
            gh.get_repo(REPO)
    message = str(caught.value)
    assert message.startswith(f"cannot reach http://127.0.0.1:{port}: ") and "after 3 retries" in message
    assert "refused" in message.lower() and TOKEN not in message
    assert sleeps == [1.0, 2.0, 4.0]


def test_bad_inputs_are_usage_errors():
    with pytest.raises(UsageError, match="OWNER/REPO"):
        GitHubClient("t", api_url="http://127.0.0.1:9").get_repo("not-a-repo")
    with pytest.raises(UsageError, match="http:// or https://"):
        GitHubClient("t", api_url="127.0.0.1:9")
    with pytest.raises(UsageError, match="empty"):
        GitHubClient("  ", api_url="http://127.0.0.1:9")


def test_repr_has_no_token(client):
    assert TOKEN not in repr(client) and "token" in repr(client)
    assert Sleeps  # the helper is shared with the other test modules


# ----------------------------------------------------------------- broken answers (issue 11, item 5)


@pytest.mark.parametrize("fault", ["truncated", "cutoff"])
def test_a_read_whose_answer_arrives_broken_is_asked_again(client, sim, sleeps, fault):
    sim.inject(fault, method="GET", path=r"/repos/acme/widgets$", count=2)
    sim.reset_stats()
    start = client.request_count
    assert client.get_repo(REPO)["name"] == "widgets"
    assert route_count(sim, REPO_ROUTE) == 3 and sleeps == [1.0, 2.0]
    assert client.request_count - start == 3


def test_answers_that_stay_broken_are_a_clear_error(sim, sleeps):
    with GitHubClient(TOKEN, api_url=sim.url, sleep=sleeps, max_retries=2) as gh:
        sim.inject("truncated", count=10)
        sim.reset_stats()
        with pytest.raises(GitHubError) as caught:
            gh.get_repo(REPO)
    assert "arrived broken 3 times in a row" in str(caught.value) and "JSON body is incomplete" in str(caught.value)
    assert route_count(sim, REPO_ROUTE) == 3
    assert isinstance(caught.value.__cause__, ValueError)  # the broken body's parse error, kept as the cause


@pytest.mark.parametrize("fault", ["truncated", "cutoff"])
def test_a_write_whose_answer_arrives_broken_is_not_sent_again(client, sim, sleeps, fault):
    sim.inject(fault, method="POST")
    sim.reset_stats()
    with pytest.raises(GitHubError, match="not re-sent: GitHub may have applied the write"):
        client.create_issue_comment(REPO, 1, "posted once")
    assert sim.stats()["total"] == 1 and sleeps == []
    assert [c["body"] for c in client.issue_comments(REPO, 1)].count("posted once") == 1  # it was applied


def test_rate_limiting_comes_from_the_last_answer(client, sim):
    client.get_repo(REPO)
    sim.reset_stats()
    remaining, limit = client.rate_limiting
    assert limit == 5000 and 0 <= remaining < 5000
    assert sim.stats()["total"] == 0  # read from the headers already seen, no request


def test_rate_limiting_of_a_fresh_client_asks_once(sim, sleeps):
    with GitHubClient(TOKEN, api_url=sim.url, sleep=sleeps) as gh:
        sim.reset_stats()
        assert gh.rate_limiting[1] == 5000
        assert sim.stats()["by_route"] == {"GET /rate_limit": 1}
