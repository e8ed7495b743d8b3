"""The prompt contract: render-then-parse is lossless, parsing is tolerant, both prompt paths work."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.diff import LEFT, RIGHT, parse_hunk
from bot.examples import ExampleComment
from bot.prompt import (
    ANSWER_END,
    ANSWER_HEADER,
    NO_COMMENT,
    PromptComment,
    canonical,
    parse_output,
    prompt_text,
    render_answer,
    render_input,
    render_target,
    training_text,
)

# Lines that try to break the format: anchors inside bodies, the end marker, fences, blank lines.
TRICKY = st.sampled_from(
    [
        "R1: looks like an anchor",
        "L2: another",
        "- R3: listed",
        "(R5): bracketed",
        "`R7`: ticked",
        "R4-9: range",
        NO_COMMENT,
        "no comment.",
        ANSWER_END,
        ANSWER_HEADER,
        "```",
        "```suggestion",
        "~~~",
        "  indented",
        "    deeper",
        "",
        " ",
        "\t",
        "\ttabbed",
        "@@ -1 +1 @@",
        "+added",
        "-removed",
        "\r",
        "caf\u00e9 \u2603 \U0001f600",
        "\u2028",
        "\x85",
    ]
)
LINE = st.one_of(st.text(max_size=40), TRICKY)
BODY = st.lists(LINE, max_size=6).map("\n".join)


@st.composite
def comments(draw):
    line = draw(st.integers(1, 1_000_000))
    span = draw(st.one_of(st.none(), st.integers(0, 60)))
    start = max(1, line - span) if span is not None else None
    return ExampleComment(line, draw(st.sampled_from([LEFT, RIGHT])), draw(BODY), start)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(comments(), max_size=6))
def test_render_then_parse_gives_back_the_comments(cs):
    result = parse_output(render_answer(cs))
    assert result.comments == canonical(cs)
    assert result.failures == 0
    assert result.no_comment == (not canonical(cs))


def test_canonical_normalises_and_drops():
    cs = [
        ExampleComment(3, RIGHT, "  \n body  \r\nsecond  \n\n"),
        ExampleComment(3, RIGHT, " body\nsecond"),  # duplicate after normalising
        ExampleComment(4, RIGHT, "   "),  # empty
        ExampleComment(5, LEFT, "range of one", start_line=5),  # collapses to a single line
    ]
    assert canonical(cs) == [PromptComment(3, RIGHT, " body\nsecond"), PromptComment(5, LEFT, "range of one")]
    assert render_target([]) == NO_COMMENT and render_answer([]) == f"{NO_COMMENT}\n{ANSWER_END}"


HUNK = parse_hunk(
    "@@ -10,3 +10,4 @@ def load(path):\n     with open(path) as fh:\n-        data = fh.read()\n+        data = fh.read()\n+        data = data.strip()\n     return data"
)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   \n\n",
        "complete garbage",
        "R: no number",
        "X12: wrong letter",
        "R11 missing colon",
        "\x00\x01\x02",
        "</review>\nR11: after the end",
        "R99999999999: too many digits",
        ANSWER_END,
    ],
)
def test_malformed_output_never_raises_and_counts(text):
    result = parse_output(text, HUNK)
    assert result.comments == [] or all(HUNK.is_commentable(c.line, c.side) for c in result.comments)
    assert result.failures >= 1 and result.failed


@pytest.mark.parametrize(
    "text",
    [
        "NO COMMENT",
        "No comment.",
        "no_comments",
        "**NO COMMENT**",
        "NO COMMENT\n</review>",
        f"{ANSWER_HEADER}\nNO COMMENT",
    ],
)
def test_no_comment_variants(text):
    result = parse_output(text, HUNK)
    assert result.no_comment and result.comments == [] and result.failures == 0 and not result.failed


def test_anchors_outside_the_hunk_are_set_aside():
    result = parse_output(
        "R11: fine\nR99: not in this hunk\nL13: not an old line here\nR10-11: range ok\nR9-11: starts outside", HUNK
    )
    assert [(c.line, c.side) for c in result.comments] == [(11, RIGHT), (11, RIGHT)]
    assert result.comments[1].start_line == 10
    assert [(c.line, c.side, c.start_line) for c in result.invalid_anchors] == [
        (99, RIGHT, None),
        (13, LEFT, None),
        (11, RIGHT, 9),
    ]


def test_text_after_the_end_marker_is_ignored_and_indented_marker_is_body():
    result = parse_output(f"R11: first\n  {ANSWER_END}\n  still first\n{ANSWER_END}\nR12: after the end", HUNK)
    assert result.comments == [PromptComment(11, RIGHT, f"first\n{ANSWER_END}\nstill first")]


def test_garbage_before_a_comment_is_counted_but_the_comment_survives():
    result = parse_output("Sure! Here is my review:\nR12: Strip in the parser.\n  Not here.", HUNK)
    assert result.comments == [PromptComment(12, RIGHT, "Strip in the parser.\nNot here.")]
    assert result.failures == 1 and not result.failed


def test_answer_wrapped_in_a_code_fence_is_unwrapped():
    text = "```text\nR11: Strip here.\n  ```suggestion\n  data = fh.read().strip()\n  ```\n```"
    result = parse_output(text, HUNK)
    assert result.comments == [PromptComment(11, RIGHT, "Strip here.\n```suggestion\ndata = fh.read().strip()\n```")]
    assert result.failures == 0


def test_empty_comment_body_is_a_failure():
    result = parse_output("R11:\nR12: real", HUNK)
    assert result.comments == [PromptComment(12, RIGHT, "real")] and result.failures == 1


def test_rendered_input_names_every_line():
    inp = render_input("src/app.py", HUNK)
    lines = inp.user.splitlines()
    assert lines[0] == "File: src/app.py" and lines[1] == HUNK.header
    # label, space, the diff marker, the line: context lines get a blank marker
    assert lines[2:] == [
        "R10      with open(path) as fh:",
        "L11 -        data = fh.read()",
        "R11 +        data = fh.read()",
        "R12 +        data = data.strip()",
        "R13      return data",
    ]
    assert inp.messages() == [{"role": "system", "content": inp.system}, {"role": "user", "content": inp.user}]


def test_plain_prompt_text_without_a_chat_template(tiny_llama):
    from transformers import AutoTokenizer

    inp = render_input("a.py", HUNK)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    assert not getattr(tok, "chat_template", None)
    text = prompt_text(inp, tok)
    assert text == inp.plain_text() == prompt_text(inp, None)
    assert text.endswith(f"\n\n{ANSWER_HEADER}\n") and inp.user in text
    prompt, answer = training_text(inp, [ExampleComment(12, RIGHT, "why?")], tok)
    assert prompt == text and answer == f"R12: why?\n{ANSWER_END}"


def test_chat_prompt_text_uses_the_template(tiny_qwen):
    from transformers import AutoTokenizer

    inp = render_input("a.py", HUNK)
    tok = AutoTokenizer.from_pretrained(tiny_qwen)
    text = prompt_text(inp, tok)
    assert text.startswith("<|im_start|>system\n" + inp.system + "<|im_end|>")
    assert f"<|im_start|>user\n{inp.user}<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n") and ANSWER_HEADER not in text
