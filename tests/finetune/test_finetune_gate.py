"""The promotion gate as a pure function: it needs evidence, and it knows which way is better."""

from __future__ import annotations

import pytest

from finetune.gate import (
    PARSE_FAILURE_TOLERANCE,
    VAL_LOSS_TOLERANCE,
    Evidence,
    at_least_as_good,
    decide,
    has_signal,
)

GOOD = Evidence("v1", metric=0.31, parse_failure_rate=0.0, val_loss=0.37)


def _failed(decision) -> set[str]:
    return {c.name for c in decision.checks if not c.passed}


def test_a_barely_trained_candidate_never_replaces_a_good_model():
    # the numbers of the run that started it all: 3 steps, validation loss 7.36, every answer unparseable
    three_steps = Evidence("v2", metric=0.0, parse_failure_rate=1.0, val_loss=7.36)
    decision = decide("review_f1", three_steps, GOOD)
    assert not decision.promote
    assert _failed(decision) == {"metric", "parse_failures", "val_loss"}
    assert "review_f1 0.0000 is worse than v1's 0.3100" in decision.reason
    assert "parse failures 1.000 vs v1's 0.000" in decision.reason and "more than 20% worse" in decision.reason


@pytest.mark.parametrize("candidate,incumbent", [(0.0, 0.0), (None, None), (0.0, None), (None, 0.0)])
def test_a_tie_at_nothing_never_promotes(candidate, incumbent):
    decision = decide("review_f1", Evidence("v2", candidate, 0.0, 0.30), Evidence("v1", incumbent, 0.0, 0.37))
    assert not decision.promote
    assert _failed(decision) >= {"signal"} and "no evidence" in decision.reason


def test_a_genuinely_better_candidate_is_promoted():
    better = Evidence("v2", metric=0.42, parse_failure_rate=0.01, val_loss=0.35)
    decision = decide("review_f1", better, GOOD)
    assert decision.promote and _failed(decision) == set()
    assert "review_f1 0.4200 is at least as good as v1's 0.3100" in decision.reason
    # a real tie (with signal) is still good enough: the newer model has seen more reviews
    assert decide("review_f1", Evidence("v2", 0.31, 0.0, 0.37), GOOD).promote
    # against a current version that never worked, any signal is evidence
    assert decide("review_f1", Evidence("v2", 0.05, 0.2, 1.0), Evidence("v1", 0.0, 1.0, 7.0)).promote


def test_each_guard_alone_keeps_the_current_version():
    worse_parsing = Evidence("v2", 0.40, GOOD.parse_failure_rate + PARSE_FAILURE_TOLERANCE + 0.01, 0.30)
    assert _failed(decide("review_f1", worse_parsing, GOOD)) == {"parse_failures"}
    within = Evidence("v2", 0.40, GOOD.parse_failure_rate + PARSE_FAILURE_TOLERANCE, 0.30)
    assert decide("review_f1", within, GOOD).promote

    worse_loss = Evidence("v2", 0.40, 0.0, GOOD.val_loss * (1 + VAL_LOSS_TOLERANCE) + 0.01)
    assert _failed(decide("review_f1", worse_loss, GOOD)) == {"val_loss"}
    assert decide("review_f1", Evidence("v2", 0.40, 0.0, GOOD.val_loss * (1 + VAL_LOSS_TOLERANCE)), GOOD).promote
    assert not decide("review_f1", Evidence("v2", 0.40, 0.0, None), GOOD).promote  # no loss: no evidence
    # the tolerances are parameters
    assert decide("review_f1", worse_loss, GOOD, val_loss_tolerance=1.0).promote
    assert not decide("review_f1", within, GOOD, parse_failure_tolerance=0.0).promote


def test_the_first_candidate_is_promoted_when_nothing_is_current():
    decision = decide("review_f1", Evidence("v1", 0.0, 1.0, 7.0), None)
    assert decision.promote and "no version was current" in decision.reason


def test_direction_and_signal_per_metric():
    assert at_least_as_good(0.5, 0.5, "review_f1")
    assert at_least_as_good(0.6, 0.5, "review_f1") and not at_least_as_good(0.4, 0.5, "review_f1")
    assert at_least_as_good(1.2, 2.0, "answer_loss") and not at_least_as_good(2.5, 2.0, "answer_loss")
    assert not at_least_as_good(0.2, 0.1, "parse_failure_rate")
    assert not at_least_as_good(None, 0.1, "review_f1")  # nothing measured never beats something
    assert at_least_as_good(0.0, None, "review_f1")
    assert not has_signal(0.0, 0.0, "bleu4") and has_signal(0.0, 0.1, "bleu4")
    assert has_signal(0.0, 0.0, "parse_failure_rate")  # both perfect is a measurement, not an absence
    assert not has_signal(None, None, "answer_loss")
    assert decide("answer_loss", Evidence("v2", 1.2, 0.0, 0.3), Evidence("v1", 2.0, 0.0, 0.37)).promote
    higher_loss = decide("answer_loss", Evidence("v2", 2.5, 0.0, 0.3), Evidence("v1", 2.0, 0.0, 0.37))
    assert not higher_loss.promote and "answer_loss 2.5000 is worse than v1's 2.0000" in higher_loss.reason
