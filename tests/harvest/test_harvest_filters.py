"""Harvest filters: each reason, their order, trivial bodies, suggestion blocks."""

from __future__ import annotations

import pytest

from adapters.store import StoredComment
from harvest.filters import (
    BOT,
    DOWNVOTED,
    NO_DIFF_HUNK,
    NOT_IN_AUTHORS,
    OUTSIDE_WINDOW,
    SELF_COMMENT,
    TRIVIAL,
    FilterConfig,
    is_trivial,
)


def _c(body: str = "Please rename this variable.", author: str = "bob", **kw) -> StoredComment:
    base = dict(
        repo="a/b",
        pr=1,
        id=1,
        path="x.py",
        diff_hunk="@@ -1 +1 @@\n-a\n+b",
        line=1,
        side="RIGHT",
        author=author,
        author_type="User",
        body=body,
        created_at="2024-03-01T00:00:00Z",
    )
    base.update(kw)
    return StoredComment(**base)


@pytest.mark.parametrize(
    "body",
    [
        "LGTM",
        "lgtm!",
        "+1",
        "Thanks!",
        "thank you :)",
        "👍",
        "🎉🎉",
        ":+1:",
        "Looks good to me.",
        "Nice catch, thanks",
        "",
        "   ",
        "ok",
        "typo",
    ],
)
def test_trivial_bodies(body):
    assert is_trivial(body, min_length=8)


@pytest.mark.parametrize(
    "body",
    [
        "Please rename this variable.",
        "Why not use a set here?",
        "LGTM, but the lock leaks on error.",
        "```suggestion\nx = 1\n```",
        "+1 to moving this into utils.py",
    ],
)
def test_substantive_bodies(body):
    assert not is_trivial(body, min_length=8)


def test_a_suggestion_alone_is_never_trivial_even_when_short():
    assert not is_trivial("```suggestion\n```", min_length=50)


def test_min_length_is_configurable():
    assert is_trivial("Rename.", min_length=8)
    assert not is_trivial("Rename.", min_length=3)


def test_each_reason():
    f = FilterConfig(since="2024-01-01T00:00:00Z", until="2024-12-31T00:00:00Z", deny=frozenset({"CI-User"}))
    assert f.verdict(_c()) is None
    assert f.verdict(_c(diff_hunk=None)) == NO_DIFF_HUNK
    assert f.verdict(_c(created_at="2023-06-01T00:00:00Z")) == OUTSIDE_WINDOW
    assert f.verdict(_c(created_at="2025-06-01T00:00:00Z")) == OUTSIDE_WINDOW
    assert f.verdict(_c(author="renovate[bot]")) == BOT
    assert f.verdict(_c(author="helper", author_type="Bot")) == BOT
    assert f.verdict(_c(author="ci-user")) == BOT  # deny list, case-insensitive
    assert f.verdict(_c(author="Alice"), pr_author="alice") == SELF_COMMENT
    assert f.verdict(_c(pr_author="bob")) == SELF_COMMENT  # the author stored with the comment
    assert f.verdict(_c(reactions={"+1": 1, "-1": 2})) == DOWNVOTED
    assert f.verdict(_c(reactions={"+1": 2, "-1": 2})) is None
    assert f.verdict(_c(body="LGTM")) == TRIVIAL


def test_first_reason_wins():
    f = FilterConfig()
    assert f.verdict(_c(author="x[bot]", body="LGTM", reactions={"-1": 3})) == BOT
    assert f.verdict(_c(body="LGTM", reactions={"-1": 3})) == DOWNVOTED


def test_allow_list_keeps_only_listed_authors_and_can_admit_a_bot_unless_downvoted():
    f = FilterConfig(authors=frozenset({"Bob", "revbot[bot]"}))
    assert f.verdict(_c(author="bob")) is None
    assert f.verdict(_c(author="carol")) == NOT_IN_AUTHORS
    assert f.verdict(_c(author="revbot[bot]", author_type="Bot")) is None
    assert f.verdict(_c(author="revbot[bot]", author_type="Bot", reactions={"+1": 0, "-1": 1})) == DOWNVOTED
