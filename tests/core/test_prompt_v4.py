"""Prompt format 4: an answer names its line by quoting it (``>>> +code``, the comment after it)."""

from __future__ import annotations

import pytest

from bot.anchoring import candidates
from bot.diff import parse_hunk
from bot.prompt import (
    PROMPT_FORMAT_VERSION,
    QUOTE_CHARS,
    Exemplar,
    PromptComment,
    degenerate_at,
    for_model,
    parse_output,
    render_answer,
    render_input,
    with_exemplars,
)

HUNK = parse_hunk(
    "@@ -1,6 +1,8 @@ def wait(alert_id):\n"
    "     for attempt in range(5):\n"
    "         alert = fetch(alert_id)\n"
    "-        if alert:\n"
    "+        if alert is not None:\n"
    "+            return alert\n"
    "+        time.sleep(1)\n"
    "     raise TimeoutError(alert_id)\n"
    "+    return alert\n"
    "+    return alert"
)


def test_the_answer_quotes_the_commented_line_and_parses_back_to_it():
    comments = [
        PromptComment(5, "RIGHT", "No time.sleep in service code.\nUse the retry helper."),
        PromptComment(3, "LEFT", "Why drop the truthiness check?"),
    ]
    answer = render_answer(comments, HUNK)
    assert PROMPT_FORMAT_VERSION == 4
    assert answer == (
        ">>> +        time.sleep(1)\nNo time.sleep in service code.\n  Use the retry helper.\n"
        ">>> -        if alert:\nWhy drop the truthiness check?\n</review>"
    )
    parsed = parse_output(answer, HUNK)
    assert {(c.line, c.side, c.body) for c in parsed.comments} == {(c.line, c.side, c.body) for c in comments}
    assert parsed.failures == 0 and not parsed.invalid_anchors
    # formats 1-3 and an answer without its hunk keep the label form
    assert render_answer(comments, HUNK, version=3).startswith("R5: No time.sleep")
    assert render_answer(comments).startswith("R5: No time.sleep")


def test_a_repeated_line_is_the_last_one_that_shows_it_and_an_unknown_quote_is_an_invalid_anchor():
    parsed = parse_output(">>> +    return alert\nReturn early.\n</review>", HUNK)
    assert [(c.line, c.side) for c in parsed.comments] == [(8, "RIGHT")]
    loose = parse_output(">>> +  time.sleep(1)\nNo sleeping.", HUNK)  # white space differs
    assert [(c.line, c.side) for c in loose.comments] == [(5, "RIGHT")]
    unknown = parse_output(">>> +    time.sleep(2)\nNo sleeping.", HUNK)
    assert not unknown.comments and [c.body for c in unknown.invalid_anchors] == ["No sleeping."]
    both = parse_output("R4: Good.\n>>> +        time.sleep(1)\nNo sleeping.", HUNK)  # the old form still reads
    assert [(c.line, c.body) for c in both.comments] == [(4, "Good."), (5, "No sleeping.")]


def test_constrained_anchors_score_each_distinct_quote_and_start_the_body_after_it():
    cands = candidates(HUNK, 4)
    assert [c[0] for c in cands].count(">>> +    return alert\n") == 1
    assert (">>> +    return alert\n", 8, "RIGHT") in cands  # the last of the repeated lines
    assert (">>> -        if alert:\n", 3, "LEFT") in cands
    assert len(cands) == len(HUNK.lines) - 1
    assert [c[0] for c in candidates(HUNK, 3)][:2] == ["R1:", "R2:"]
    assert (">>> +        time.sleep(1)\n", 5, "RIGHT") in cands
    assert ("R5:", 5, "RIGHT") in candidates(HUNK, 3)
    long = parse_hunk("@@ -1,0 +1,1 @@\n+" + "x" * 200)
    assert candidates(long, 4)[0][0] == ">>> +" + "x" * (QUOTE_CHARS - 1) + "\n"
    assert [(c.line, c.side) for c in parse_output(candidates(long, 4)[0][0] + "Too long.", long).comments] == [
        (1, "RIGHT")
    ]


def test_degenerate_quoted_answers_are_cut():
    quote = ">>> +        time.sleep(1)\n"
    assert degenerate_at(f"{quote}No sleep.\n{quote}No sleep.\n") == len(quote) + len("No sleep.\n")  # repeated
    assert degenerate_at(f"{quote}>>> +            return alert\nx\n") == 0  # a quote without a comment
    assert degenerate_at(f"{quote}No sleep.\n>>> +    return alert\n", 1) is not None  # past the cap
    assert degenerate_at(f"{quote}No sleep.\n  More on it.\n") is None


def test_exemplars_are_shown_in_the_served_versions_answer_form():
    ex = Exemplar("a.py", "R9 +f = open(q)", ">>> +f = open(q)\nUse a with block.", "R9: Use a with block.")
    inp = with_exemplars(render_input("b.py", HUNK), [ex])
    assert ">>> +f = open(q)\nUse a with block." in for_model(inp, 4).user_text()
    v3 = for_model(inp, 3).user_text()
    assert "R9: Use a with block." in v3 and ">>>" not in v3
    shots = for_model(inp, 4, few_shot=True).shots
    assert shots[-1][1].startswith(">>> +f = open(q)") and shots[0][1].startswith(">>> ")


def test_with_quotes_the_first_token_decides_whether_when_there_is_no_threshold():
    from bot.anchoring import _candidates, _scores

    cands, texts = _candidates(HUNK, 4)
    assert texts[0] == "NO COMMENT" and texts[-1] == ">>>" and len(texts) == len(cands) + 2
    assert [(line, side) for _, line, side in cands][5:7] == [(5, "RIGHT"), (6, "RIGHT")]
    quotes = [0.0] * len(cands)
    quotes[5], quotes[6] = 0.003, 0.001  # long quotes: small joint probabilities
    scores = _scores(cands, [0.02, *quotes, 0.9])
    # a threshold reads the joint probabilities, normalised over NO COMMENT and the quotes
    assert scores.silence == pytest.approx(0.02 / 0.024)
    assert scores.confidence[(5, "RIGHT")] == pytest.approx(0.003 / 0.024)
    assert scores.choose(0.1) == [(5, "RIGHT")]
    # the model's own choice: its first token, the quote mark (0.9) against NO COMMENT (0.02)
    assert scores.commits == pytest.approx(0.9 / 0.92)
    assert scores.choose(None) == [(5, "RIGHT")]
    assert _scores(cands, [0.9, *quotes, 0.02]).choose(None) == []
    assert _scores(cands, [0.0] * (len(cands) + 2)).choose(None) == []  # nothing scored: silence
    labels, label_texts = _candidates(HUNK, 3)
    assert len(label_texts) == len(labels) + 1 and _scores(labels, [0.5] * len(label_texts)).commits is None
