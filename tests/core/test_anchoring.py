"""Anchors chosen by the model's probabilities, silence calibrated on validation, degenerate answers cut."""

from __future__ import annotations

import pytest

from bot.anchoring import (
    MIN_CALIBRATION_HUNKS,
    AnchorScores,
    answer_hunks,
    calibrate,
    labels,
    pr_curve,
    score_hunks,
)
from bot.diff import parse_diff, parse_hunk
from bot.prompt import NO_COMMENT, PromptInput, degenerate_at, render_input
from bot.review import ReviewOptions, review_diff

HUNK = parse_hunk("@@ -10,2 +10,3 @@\n a = 1\n-b = 2\n+b = 3\n+c = b * 2")


class ScoringBackend:
    """A backend with fixed answer-start probabilities (label text -> probability) and fixed bodies."""

    prompt_format_version = 3
    max_context = 100_000
    threshold: float | None = None

    def __init__(self, probs: dict[str, float], body: str = " Explain why.", threshold: float | None = None):
        self.probs, self.body, self.threshold = probs, body, threshold
        self.prefixes: list[str] = []

    def score_answers(self, inputs: list[PromptInput], candidates: list[list[str]]) -> list[list[float]]:
        return [[self.probs.get(c, 0.0) for c in cands] for cands in candidates]

    def generate(self, inputs: list[PromptInput], *, max_new_tokens: int = 256) -> list[str]:
        self.prefixes += [i.answer_prefix for i in inputs]
        return [self.body for _ in inputs]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def describe(self) -> dict[str, object]:
        return {"kind": "scoring"}


def test_every_label_the_prompt_shows_is_a_candidate_once():
    assert [label for label, _, _ in labels(HUNK)] == ["R10", "L11", "R11", "R12"]


def test_confidence_is_the_mass_on_commenting_times_the_share_on_the_line():
    backend = ScoringBackend({NO_COMMENT: 0.2, "R11:": 0.6, "R12:": 0.2})
    (scores,) = score_hunks(backend, [render_input("a.py", HUNK)], [HUNK])
    assert scores.silence == pytest.approx(0.2) and scores.comment_mass == pytest.approx(0.8)
    assert scores.confidence[(11, "RIGHT")] == pytest.approx(0.6)
    assert scores.choose(None) == [(11, "RIGHT")]  # the model's own choice: comment, on the best line
    assert scores.choose(0.5) == [(11, "RIGHT")]
    assert scores.choose(0.1) == [(11, "RIGHT"), (12, "RIGHT")]  # more than one label clears it
    assert scores.choose(0.1, max_per_hunk=1) == [(11, "RIGHT")]
    assert scores.choose(0.7) == []  # nothing clears it: silence
    quiet = AnchorScores(0.9, {(11, "RIGHT"): 0.1}, {(11, "RIGHT"): "R11"})
    assert quiet.choose(None) == []  # silence outweighs commenting


def test_bodies_are_written_after_the_chosen_label_so_no_anchor_can_leave_the_hunk():
    backend = ScoringBackend({NO_COMMENT: 0.1, "R12:": 0.9}, body=" Name `c`.\nR99: stray")
    (answer,) = answer_hunks(backend, [render_input("a.py", HUNK)], [HUNK], threshold=0.5, max_new_tokens=16)
    assert backend.prefixes == ["R12:"]
    assert [(c.line, c.side, c.body) for c in answer.comments] == [(12, "RIGHT", "Name `c`.")]
    assert answer.confidences == [pytest.approx(0.9)]
    empty = ScoringBackend({"R12:": 1.0}, body="")
    (answer,) = answer_hunks(empty, [render_input("a.py", HUNK)], [HUNK], threshold=0.5, max_new_tokens=16)
    assert answer.comments == [] and answer.empty_bodies == 1  # an empty body is silence, not a comment


def test_review_applies_the_calibrated_threshold_raised_by_the_repository():
    diff = parse_diff("--- a/a.py\n+++ b/a.py\n" + HUNK.text() + "\n")
    backend = ScoringBackend({NO_COMMENT: 0.4, "R12:": 0.6}, threshold=0.5)
    review = review_diff(diff, backend)
    assert [(c.line, c.body) for c in review.comments] == [(12, "Explain why.")]
    assert review_diff(diff, backend, ReviewOptions(min_confidence=0.7)).comments == []  # raised by .revbot.yml
    assert review_diff(diff, backend, ReviewOptions(min_confidence=0.1)).comments  # never lowered below 0.5
    backend.threshold = 0.65
    assert review_diff(diff, backend).comments == []


RIGHT, WRONG = (11, "RIGHT"), (12, "RIGHT")


def _hunk(p_right: float, p_wrong: float = 0.0) -> AnchorScores:
    """One validation hunk's scores: the model's confidence on line 11 and on line 12."""
    return AnchorScores(1 - p_right - p_wrong, {RIGHT: p_right, WRONG: p_wrong}, {RIGHT: "R11", WRONG: "R12"})


# five hunks a human commented on (line 11) and five the team left alone
COMMENTED = [_hunk(0.9), _hunk(0.8), _hunk(0.1, 0.5), _hunk(0.4), _hunk(0.3)]
SILENT = [_hunk(0.7), _hunk(0.05), _hunk(0.04), _hunk(0.03), _hunk(0.02)]


def test_the_curve_counts_line_level_precision_and_recall_at_every_threshold():
    scores = [_hunk(0.9), _hunk(0.2, 0.5), _hunk(0.4)]
    curve = pr_curve(scores, [{RIGHT}, {RIGHT}, {RIGHT}], max_per_hunk=1)
    assert [p.threshold for p in curve] == [0.9, 0.5, 0.4]
    assert [(p.precision, p.recall) for p in curve] == [(1.0, 1 / 3), (0.5, 1 / 3), (2 / 3, 2 / 3)]


def test_calibration_takes_the_best_f1_or_the_precision_asked_for():
    scores, humans = COMMENTED + SILENT, [{RIGHT}] * 5 + [set()] * 5
    best = calibrate(scores, humans, max_per_hunk=1)
    # at 0.3: six comments, four on a commented line (one silent hunk at 0.7 is a false alarm)
    assert (
        best.threshold == 0.3
        and best.point is not None
        and best.point.f1 == pytest.approx(2 * 2 / 3 * 0.8 / (2 / 3 + 0.8))
    )
    strict = calibrate(scores, humans, min_precision=0.9, max_per_hunk=1)
    assert strict.threshold == 0.8 and strict.to_dict()["precision"] == 1.0  # the most comments at precision 1
    assert calibrate(scores, humans, min_precision=0.7, max_per_hunk=1).threshold == 0.8  # 0.3 reaches only 2/3
    noisy = [_hunk(0.95)] + SILENT[1:]  # the most confident comment of all is on a hunk nobody commented on
    unreachable = calibrate(COMMENTED + noisy, humans, min_precision=0.99, max_per_hunk=1)
    assert unreachable.threshold is None and "no threshold reaches precision 0.99" in unreachable.reason


def test_calibration_refuses_without_hunks_the_team_left_alone():
    """crc-py's validation hunks all end at a commented line: commenting everywhere scores F1 1.0
    there, which says nothing about when to stay silent."""
    sure = [_hunk(0.6 + i / 100) for i in range(8)]
    humans = [{RIGHT}] * 8
    assert max(p.f1 for p in pr_curve(sure, humans, max_per_hunk=1)) == 1.0  # the degenerate curve
    for rule in (None, 0.9):
        refused = calibrate(sure, humans, min_precision=rule, max_per_hunk=1)
        assert refused.threshold is None and refused.point is None
        assert refused.reason.startswith("no validation hunk without a human comment (all 8 are commented)")
        assert "silence cannot be calibrated" in refused.reason
        assert refused.curve and refused.to_dict()["f1"] is None  # the curve is kept for the plot, no point chosen
    assert calibrate(sure, humans, min_precision=0.9).rule == "precision >= 0.9"


def test_calibration_needs_five_hunks_of_each_kind():
    assert MIN_CALIBRATION_HUNKS == 5
    humans = [{RIGHT}] * 5 + [set()] * 5
    assert calibrate(COMMENTED + SILENT, humans, max_per_hunk=1).threshold is not None  # five of each: enough
    few_silent = calibrate(COMMENTED + SILENT[:4], humans[:9], max_per_hunk=1)
    assert few_silent.threshold is None
    assert few_silent.reason == (
        "too few validation hunks to calibrate on: 5 with a human comment and 4 without, at least 5 of each needed"
    )
    few_commented = calibrate(COMMENTED[1:] + SILENT, humans[1:], min_precision=0.5, max_per_hunk=1)
    assert few_commented.threshold is None and "4 with a human comment and 5 without" in few_commented.reason
    none = calibrate(SILENT, [set()] * 5)
    assert none.threshold is None and "no validation comments" in none.reason
    assert calibrate([], []).threshold is None


def test_degenerate_answers_are_cut_where_they_start():
    assert degenerate_at("R75:\nR76:\nR77:\n") == 0  # anchors without bodies
    text = "R5: Rename this.\nR6: Rename this.\n"
    assert text[: degenerate_at(text)] == "R5: Rename this.\n"  # the same comment again
    text = "R1: a\nR2: b\nR3: c\nR4: d\n"
    assert text[: degenerate_at(text)] == "R1: a\nR2: b\nR3: c\n"  # at most three comments a hunk
    assert degenerate_at("R5:\n  the body on the next line\nR6: fine\n") is None
    assert degenerate_at("R5: ok\nR6: also") is None  # the last line is not complete yet
    assert degenerate_at("R9: x\nR10: y\n", max_comments=1) == len("R9: x\n")  # one chosen anchor, one comment


def test_the_decoding_guard_stops_a_row_once_its_answer_degenerates():
    from adapters.decoding import DegenerationGuard, trim_degenerate

    pieces = {1: "R7:", 2: "\n", 3: " fine", 4: "R8:"}
    guard = DegenerationGuard(lambda ids: "".join(pieces[i] for i in ids), 0, ["", "R3:"])
    assert guard.update([[1, 2], [3, 2]]) == [False, False]
    assert guard.update([[1, 2, 4, 2], [3, 2, 4, 2]]) == [True, True]
    assert trim_degenerate("R7:\nR8:\nR9:") == ""
    assert trim_degenerate(" fine\nR8: more", prefix="R3:") == " fine\n"
