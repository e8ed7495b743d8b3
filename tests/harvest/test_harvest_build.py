"""Example building from stored comments and PR patches (no network)."""

from __future__ import annotations

import json

from harvest_kit import hunk_patch

from adapters.store import CachedFile, StoredComment
from bot.diff import parse_hunk
from bot.prompt import parse_output
from harvest.build import BuildConfig, build_pr, split_threads
from harvest.filters import FilterConfig

FILES = [CachedFile("src/app.py", "modified", hunk_patch(3)), CachedFile("logo.png", "modified", None)]


def _c(
    cid: int, line: int | None, body: str = "Please rename this variable.", side: str = "RIGHT", **kw
) -> StoredComment:
    """A comment on src/app.py whose diff_hunk is what GitHub would send: the hunk cut at ``line``."""
    hunk = parse_hunk(hunk_patch(3).split("\n@@")[0])
    cut = (
        next((k for k, ln in enumerate(hunk.lines) if ln.new_no == line), len(hunk.lines) - 1)
        if line and line < 40
        else 2
    )
    base = dict(
        repo="acme/widgets",
        pr=5,
        id=cid,
        path="src/app.py",
        diff_hunk=hunk.sub_hunk(0, cut + 1).text(),
        line=line,
        side=side,
        original_line=line,
        author="bob",
        author_type="User",
        body=body,
        created_at=f"2024-01-01T00:00:{cid % 60:02d}Z",
        commit_id="head",
    )
    base.update(kw)
    return StoredComment(**base)


def test_comments_on_one_hunk_make_one_full_hunk_example():
    comments = [_c(1, 2, "First note here."), _c(2, 3, "Second note here.")]
    out = build_pr("acme/widgets", 5, comments, FILES, pr_author="alice", config=BuildConfig(negatives_ratio=0))
    assert out.positives == 1 and out.negatives == 0
    ex = out.examples[0]
    assert ex.hunk == hunk_patch(3).split("\n@@")[0]  # the full hunk, not the cut diff_hunk
    assert [(c.line, c.side, c.body) for c in ex.comments] == [
        (2, "RIGHT", "First note here."),
        (3, "RIGHT", "Second note here."),
    ]
    assert ex.meta["from"] == "pr_hunk" and ex.meta["comment_ids"] == [1, 2]
    assert out.counts["from_pr_hunk"] == 2
    parsed = parse_output(ex.answer(), ex.parsed_hunk())  # what the model learns parses back onto the hunk
    assert not parsed.invalid_anchors
    assert [(c.line, c.body) for c in parsed.comments] == [(2, "First note here."), (3, "Second note here.")]


def test_an_outdated_comment_falls_back_to_its_own_diff_hunk():
    outdated = _c(
        1, None, "This was wrong.", original_line=3, diff_hunk="@@ -1,4 +1,5 @@ def f0():\n a0 = 1\n-b0 = 2\n+b0 = 3"
    )
    out = build_pr("acme/widgets", 5, [outdated], FILES, config=BuildConfig(negatives_ratio=0))
    ex = out.examples[0]
    assert ex.meta["from"] == "diff_hunk"
    assert ex.hunk.startswith("@@ -1,2 +1,2 @@ def f0():")  # header recounted for the lines it holds
    assert [(c.line, c.side) for c in ex.comments] == [(2, "RIGHT")]  # the diff_hunk's last line


def test_a_comment_whose_line_text_disagrees_with_the_pr_diff_uses_its_diff_hunk():
    # the octokit example: diff_hunk "@@ -1 +1 @@" yet line 2; do not trust the line blindly
    odd = _c(1, 2, "Odd data.", diff_hunk="@@ -1 +1 @@\n-# Hello-World")
    out = build_pr("acme/widgets", 5, [odd], FILES, config=BuildConfig(negatives_ratio=0))
    assert out.examples[0].meta["from"] == "diff_hunk"
    assert [(c.line, c.side) for c in out.examples[0].comments] == [(1, "LEFT")]


def test_ranges_keep_their_start_line_when_it_is_in_the_hunk():
    ranged = _c(1, 3, "Both lines.", start_line=2, start_side="RIGHT")
    out = build_pr("acme/widgets", 5, [ranged], FILES, config=BuildConfig(negatives_ratio=0))
    c = out.examples[0].comments[0]
    assert (c.start_line, c.line) == (2, 3)
    assert out.examples[0].answer().startswith("R2-3: Both lines.")


def test_suggestion_blocks_are_kept_intact():
    body = "Simpler:\n```suggestion\nb0 = 3  # keep\n```"
    out = build_pr("acme/widgets", 5, [_c(1, 2, body)], FILES, config=BuildConfig(negatives_ratio=0))
    assert out.examples[0].comments[0].body == body
    assert parse_output(out.examples[0].answer(), out.examples[0].parsed_hunk()).comments[0].body == body


def test_replies_attach_to_their_root_and_are_not_targets():
    root = _c(1, 2, "Please rename this variable.")
    reply = _c(2, 2, "Done, renamed it everywhere.", in_reply_to_id=1, author="alice")
    reply2 = _c(3, 2, "Thanks!", in_reply_to_id=2)  # a reply to a reply still belongs to the root
    orphan = _c(4, 2, "Reply to a deleted comment.", in_reply_to_id=999)
    roots, replies, orphans = split_threads([root, reply, reply2, orphan])
    assert [r.id for r in roots] == [1] and [r.id for r in replies[1]] == [2, 3] and [o.id for o in orphans] == [4]
    out = build_pr(
        "acme/widgets",
        5,
        [root, reply, reply2, orphan],
        FILES,
        pr_author="alice",
        config=BuildConfig(negatives_ratio=0),
    )
    assert out.positives == 1
    assert [c.body for c in out.examples[0].comments] == ["Please rename this variable."]
    assert out.examples[0].meta["replies"] == 2
    assert out.counts["replies"] == 2 and out.counts["orphan_replies"] == 1 and out.counts["kept"] == 1


def test_negatives_come_from_uncommented_hunks_deterministically():
    comments = [_c(1, 2, "Please rename this variable.")]
    cfg = BuildConfig(negatives_ratio=1.0, seed=3)
    first = build_pr("acme/widgets", 5, comments, FILES, config=cfg)
    again = build_pr("acme/widgets", 5, comments, FILES, config=cfg)
    assert [e.id for e in first.examples] == [e.id for e in again.examples]
    negatives = [e for e in first.examples if e.is_negative]
    assert len(negatives) == 1 and first.counts["negative_candidates"] == 2
    assert negatives[0].hunk.startswith(("@@ -41,", "@@ -81,"))  # never the commented hunk
    two = build_pr("acme/widgets", 5, comments, FILES, config=BuildConfig(negatives_ratio=5.0))
    assert two.negatives == 2  # capped by what is available
    none = build_pr("acme/widgets", 5, comments, FILES, config=BuildConfig(negatives_ratio=0))
    assert none.negatives == 0


def test_a_hunk_with_a_dropped_comment_is_not_a_negative():
    kept = _c(1, 2, "Please rename this variable.")
    trivial_elsewhere = _c(2, 42, "LGTM")  # hunk 2 has a comment, even if it teaches nothing
    out = build_pr("acme/widgets", 5, [kept, trivial_elsewhere], FILES, config=BuildConfig(negatives_ratio=5.0))
    assert out.counts["negative_candidates"] == 1
    assert [e.hunk[:8] for e in out.examples if e.is_negative] == ["@@ -81,4"]
    assert out.counts["dropped:trivial"] == 1


def test_fractional_ratio_is_right_on_average():
    total = 0
    for pr in range(200):
        out = build_pr("acme/widgets", pr, [_c(1, 2)], FILES, config=BuildConfig(negatives_ratio=0.5))
        total += out.negatives
    assert 70 <= total <= 130


def test_long_hunks_are_split_and_the_comment_goes_with_its_piece():
    big = "@@ -1,300 +1,300 @@\n" + "\n".join(f" line {k}" for k in range(1, 301))
    files = [CachedFile("big.py", "modified", big)]
    c = _c(1, 250, "Handle the empty case here.", path="big.py", diff_hunk="@@ -1,300 +1,300 @@\n line 1\n line 2")
    c.diff_hunk = "@@ -1,300 +1,300 @@\n" + "\n".join(f" line {k}" for k in range(1, 251))
    out = build_pr("acme/widgets", 5, [c], files, config=BuildConfig(negatives_ratio=1.0, max_hunk_lines=100))
    pos = [e for e in out.examples if not e.is_negative][0]
    assert pos.parsed_hunk().is_commentable(250, "RIGHT") and len(pos.parsed_hunk().lines) == 100
    assert out.negatives == 1


def test_filters_apply_and_are_counted():
    comments = [
        _c(1, 2),
        _c(2, 3, author="dependabot[bot]"),
        _c(3, 42, author="alice"),
        _c(4, 43, "LGTM"),
        _c(5, 82, reactions={"+1": 0, "-1": 2}),
        _c(6, 83, diff_hunk=None, path="src/app.py"),
    ]
    out = build_pr(
        "acme/widgets",
        5,
        comments,
        FILES,
        pr_author="alice",
        filters=FilterConfig(),
        config=BuildConfig(negatives_ratio=0),
    )
    assert out.counts["kept"] == 1
    assert {k: v for k, v in out.counts.items() if k.startswith("dropped:")} == {
        "dropped:bot": 1,
        "dropped:self_comment": 1,
        "dropped:trivial": 1,
        "dropped:downvoted": 1,
        "dropped:no_diff_hunk": 1,
    }
    assert out.verdicts == {1: None, 2: "bot", 3: "self_comment", 4: "trivial", 5: "downvoted", 6: "no_diff_hunk"}


def test_without_files_every_kept_comment_uses_its_diff_hunk():
    out = build_pr("acme/widgets", 5, [_c(1, 2), _c(2, 3)], None, config=BuildConfig(negatives_ratio=1.0))
    assert out.positives == 2 and out.negatives == 0
    assert all(e.meta["from"] == "diff_hunk" for e in out.examples)


def test_feedback_on_the_bots_own_comments_is_collected_and_a_downvoted_bot_is_no_positive():
    own = _c(
        1,
        2,
        "Consider a context manager.\n<!-- revbot:fp=abc -->",
        author="revbot[bot]",
        author_type="Bot",
        reactions={"+1": 1, "-1": 3},
    )
    reply = _c(2, 2, "Not needed here, this is a test helper.", in_reply_to_id=1, author="alice")
    out = build_pr(
        "acme/widgets",
        5,
        [own, reply],
        FILES,
        filters=FilterConfig(authors=frozenset({"revbot[bot]"})),
        config=BuildConfig(negatives_ratio=0),
    )
    assert out.positives == 0 and out.verdicts[1] == "downvoted"
    kinds = {f.kind: f for f in out.feedback}
    assert json.loads(kinds["reactions"].content) == {"+1": 1, "-1": 3}
    assert kinds["reply"].author == "alice" and kinds["reply"].ref_id == 2
