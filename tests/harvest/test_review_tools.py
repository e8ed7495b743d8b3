"""Comments written by AI review tools are recognised by their stamps and kept out of training data,
on import (datasets carry no author) and on harvest (some teams run such tools under a user account)."""

from __future__ import annotations

import json

import pytest

from adapters.files import read_dataset
from adapters.store import StoredComment
from harvest.filters import BOT_TEXT, FilterConfig, review_tool_stamp

GEMINI = (
    "![medium](https://www.gstatic.com/codereviewagent/medium-priority.svg)\n\n"
    "For better readability, consider defining `0.5` as a named constant."
)
KORBIT = (
    "### Inefficient Imports <sub>![category Design](https://img.shields.io/badge/Design-0d9488)</sub>\n\n"
    "<details>\n  <summary>Tell me more</summary>\n\n###### What is the issue?\nAll locales are imported."
)
CODERABBIT = (
    "_⚠️ Potential issue_\n\n**Guard against None.**\n\n<!-- This is an auto-generated comment by CodeRabbit -->"
)
SOURCERY = "**suggestion (bug_risk):** This may raise when the list is empty."


@pytest.mark.parametrize(
    "body, tool",
    [
        (GEMINI, "gemini-code-assist"),
        (KORBIT, "korbit"),
        (CODERABBIT, "coderabbit"),
        (SOURCERY, "sourcery"),
        ("Nice refactor.\n\nReact with 👍 or 👎 to let us know if this comment was useful.", "feedback-footer"),
        ("Use a set here.\n<!-- revbot:fp=abc123 -->", "revbot"),
    ],
)
def test_each_tool_is_recognised_by_its_stamp(body, tool):
    assert review_tool_stamp(body) == tool


@pytest.mark.parametrize(
    "body",
    [
        "**question:** Should this be required? (a conventional comment, written by a person)",
        "Gemini suggested this earlier, but I think the CodeRabbit approach is cleaner.",
        "![screenshot](https://user-images.githubusercontent.com/1/2.png) this is what I see",
        "Why `medium` priority here? It should be high.",
        "```suggestion\nreturn x\n```",
        "",
    ],
)
def test_human_comments_are_not_mistaken_for_bots(body):
    assert review_tool_stamp(body) is None


def _crc_row(i: int, comment: str) -> dict:
    hunk = f"@@ -1,2 +1,2 @@\n import os\n-x = {i}\n+x = {i + 1}"
    return {
        "code": hunk,
        "comment": comment,
        "line_number": 2,
        "file_path": f"m{i}.py",
        "pr_number": i,
        "repo": "r",
        "owner": "o",
        "comment_id": 1000 + i,
        "comment_created_at": f"2025-01-0{i + 1}T00:00:00Z",
    }


def test_import_drops_bot_comments_and_counts_them(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [
        _crc_row(0, "Please add a test."),
        _crc_row(1, GEMINI),
        _crc_row(2, KORBIT),
        _crc_row(3, "Rename to count."),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = read_dataset(path, "crc")
    assert [e.comments[0].body for e in result.examples] == ["Please add a test.", "Rename to count."]
    assert all(not e.is_negative for e in result.examples)  # a bot's hunk is not turned into a silent example
    assert dict(result.tool_comments) == {"gemini-code-assist": 1, "korbit": 1}
    assert "AI review tool comments dropped 2" in result.text()
    assert {c.body for c in result.comments} == {"Please add a test.", "Rename to count."}
    kept = read_dataset(path, "crc", keep_tool_comments=True)
    assert len(kept.examples) == 4 and not kept.tool_comments


def test_harvest_filter_drops_bot_text_unless_the_author_is_allowed():
    comment = StoredComment(
        id=1,
        repo="o/r",
        pr=1,
        path="a.py",
        diff_hunk="@@ -1 +1 @@\n-a\n+b",
        body=GEMINI,
        author="alice",
        author_type="User",
        created_at="2025-01-01T00:00:00Z",
    )
    assert FilterConfig().verdict(comment, "bob") == BOT_TEXT
    assert FilterConfig(authors=frozenset({"alice"})).verdict(comment, "bob") is None  # an explicit choice wins
