"""Feedback on the bot's own comments: rows -> evidence with its source (``bot.feedback``), and
evidence -> training examples (``harvest.feedback``, what `revbot retrain` trains on)."""

from __future__ import annotations

import json

import pytest

from adapters.store import BotPost, Evidence, Feedback, Store, StoredComment
from bot.examples import Example, ExampleComment
from bot.feedback import acceptance_by_version, classify_reply, derive_evidence, habit_key, refresh_evidence, verdicts
from harvest.feedback import apply_feedback, clean_body

REPO = "acme/shop"
HUNK = "@@ -1,2 +1,3 @@\n import os\n+x = 'a %s' % y\n y = 2"
OTHER = "@@ -10,2 +10,3 @@\n a\n+print(x)\n b"


@pytest.mark.parametrize(
    "text, polarity",
    [
        ("Won't fix: this is intentional.", -1),
        ("wontfix", -1),
        ("False positive, the value is never None.", -1),
        ("Thanks, but this is by design.", -1),
        ("I disagree", -1),
        ("no", -1),
        ("Not needed here.", -1),
        ("Good catch, fixed!", 1),
        ("Done.", 1),
        ("thanks", 1),
        ("Addressed in the next commit", 1),
        ("Which line do you mean?", 0),
        ("Let's talk about it tomorrow", 0),
    ],
)
def test_replies_are_read_as_acceptance_or_rejection(text, polarity):
    assert classify_reply(text) == polarity


def test_habit_keys_ignore_markers_mentions_case_and_trailing_dots():
    assert habit_key("Prefer f-strings.\n\n<!-- revbot:fp=0123456789abcdef -->") == "prefer f-strings"
    assert habit_key("PREFER   f-strings!") == habit_key("prefer f-strings")
    assert habit_key("cc @\u200balice") == "cc @alice"
    assert clean_body("Prefer f-strings.\n\n<!-- revbot:fp=0123456789abcdef -->") == "Prefer f-strings."


def _store(tmp_path) -> Store:
    store = Store(tmp_path / "revbot.db")
    store.record_posts(
        [
            BotPost(
                REPO,
                1,
                "f" * 16,
                "a.py",
                2,
                "RIGHT",
                "Prefer f-strings.\n\n<!-- revbot:fp=ffffffffffffffff -->",
                HUNK,
                "h1",
                "v1",
                comment_id=11,
            ),
            BotPost(REPO, 1, "e" * 16, "b.py", 11, "RIGHT", "Use the logger.", OTHER, "h1", "v1", comment_id=12),
            BotPost(REPO, 2, "d" * 16, "a.py", 2, "RIGHT", "Prefer f-strings.", HUNK, "h2", "v2", comment_id=21),
        ]
    )
    # a comment the service never recorded posting: harvest stored it (its version is unknown)
    store.upsert_comments(
        [
            StoredComment(
                REPO,
                3,
                31,
                path="c.py",
                diff_hunk=OTHER,
                line=11,
                side="RIGHT",
                original_line=11,
                author="revbot[bot]",
                body="Rename x.",
            )
        ]
    )
    store.record_feedback(
        [
            Feedback(REPO, 1, 11, "reactions", "", json.dumps({"-1": 2, "+1": 1})),
            Feedback(REPO, 1, 11, "reply", "dev", "Won't fix, the team prefers %-formatting here.", 900),
            Feedback(
                REPO,
                1,
                12,
                "resolved",
                "revbot[bot]",
                json.dumps({"resolved": True, "by": "revbot[bot]", "changed": True}),
            ),
            Feedback(REPO, 2, 21, "resolved", "maria", json.dumps({"resolved": True, "by": "maria", "changed": False})),
            Feedback(REPO, 3, 31, "reaction", "maria", "heart"),
            Feedback(REPO, 3, 31, "reply", "sam", "Which x?", 901),  # says nothing either way
        ]
    )
    return store


def test_evidence_carries_its_source_the_comment_and_the_version(tmp_path):
    store = _store(tmp_path)
    rows = {(e.comment_id, e.source): e for e in derive_evidence(store)}
    assert {k: (e.polarity, e.weight) for k, e in rows.items()} == {
        (11, "reaction:+1"): (1, 1),
        (11, "reaction:-1"): (-1, 2),
        (11, "reply:wont-fix"): (-1, 2),
        (12, "resolved:changed"): (1, 1),
        (21, "resolved:unchanged"): (-1, 1),
        (31, "reaction:+1"): (1, 1),
    }
    assert rows[(11, "reply:wont-fix")].hunk == HUNK and rows[(11, "reply:wont-fix")].model_version == "v1"
    assert rows[(31, "reaction:+1")].model_version is None and rows[(31, "reaction:+1")].hunk == OTHER
    assert refresh_evidence(store) == 6 and len(list(store.iter_evidence())) == 6
    assert refresh_evidence(store, REPO, 3) == 1 and len(list(store.iter_evidence())) == 6  # one PR replaced
    assert verdicts(store.iter_evidence()) == {(REPO, 11): -1, (REPO, 12): 1, (REPO, 21): -1, (REPO, 31): 1}
    assert acceptance_by_version(store.iter_evidence()) == {
        "unknown": {"judged": 1, "accepted": 1, "rejected": 0, "acceptance_rate": 1.0},
        "v1": {"judged": 2, "accepted": 1, "rejected": 1, "acceptance_rate": 0.5},
        "v2": {"judged": 1, "accepted": 0, "rejected": 1, "acceptance_rate": 0.0},
    }


def test_rejected_comments_become_negatives_and_a_rejected_habit_leaves_the_data(tmp_path):
    store = _store(tmp_path)
    refresh_evidence(store)
    human = [
        Example(
            "h1",
            REPO,
            7,
            "x.py",
            "@@ -1,1 +1,2 @@\n a\n+b = '%d' % n",
            [ExampleComment(2, "RIGHT", "Prefer f-strings.")],
        ),
        Example(
            "h2",
            REPO,
            8,
            "y.py",
            "@@ -1,1 +1,3 @@\n a\n+b = '%d' % n\n+print(b)",
            [ExampleComment(2, "RIGHT", "prefer f-strings"), ExampleComment(3, "RIGHT", "Use the logger.")],
        ),
        Example("h3", REPO, 1, "b.py", OTHER, [ExampleComment(11, "RIGHT", "Use the module logger.")]),
    ]
    use = apply_feedback(human, store.iter_evidence())
    by_id = {e.id: e for e in use.examples}
    assert use.habits == ["prefer f-strings"]  # v1's and v2's f-string comments were rejected (-1 each, net -2)
    assert by_id["h1"].is_negative and by_id["h1"].meta["feedback_removed"] == 1
    assert [c.body for c in by_id["h2"].comments] == ["Use the logger."]
    added = [e for e in use.examples if e.source == "feedback"]
    assert sorted((e.pr, e.path, e.is_negative) for e in added) == [
        (1, "a.py", True),
        (2, "a.py", True),
        (3, "c.py", False),
    ]
    accepted = next(e for e in added if not e.is_negative)
    assert accepted.comments == [ExampleComment(11, "RIGHT", "Rename x.")] and accepted.hunk == OTHER
    # comment 12 was accepted, but people already commented on that hunk (h3): their words win
    assert not any(e.meta.get("comment_id") == 12 for e in added)
    assert (use.negatives_added, use.positives_added, use.comments_removed, use.turned_negative) == (2, 1, 2, 1)
    again = apply_feedback(human, store.iter_evidence())
    assert [e.id for e in again.examples] == [e.id for e in use.examples]  # stable ids: a rebuild is the same


def test_evidence_without_a_usable_hunk_is_skipped_not_fatal():
    broken = Evidence(
        REPO, 5, 51, "reaction:-1", -1, 3, path="z.py", line=1, side="RIGHT", body="Hm.", hunk="not a hunk"
    )
    use = apply_feedback([], [broken])
    assert use.examples == [] and use.skipped == 1
