"""Prompt format v3: the team's past reviews beside the hunk, retrieved leak-free, shown compactly."""

from __future__ import annotations

import pytest

from bot.diff import parse_hunk
from bot.examples import Example, ExampleComment
from bot.exemplars import (
    EXEMPLAR_TOKEN_BUDGET,
    ExemplarIndex,
    Query,
    compact,
    exemplar_tokens,
    first_fit,
    fit_prompt,
    query_of,
    within_budget,
)
from bot.prompt import (
    EXEMPLARS_HEADER,
    FEW_SHOT,
    HUNK_HEADER,
    SYSTEM_PROMPTS,
    Exemplar,
    for_model,
    render_input,
    with_exemplars,
)

HUNK = "@@ -1,3 +1,4 @@\n import os\n-x = open(p).read()\n+with open(p) as fh:\n+    x = fh.read()\n y = 1"


def example(pr: int, day: int, path: str, body: str, *, line: int = 2, repo: str = "o/r", hunk: str = HUNK) -> Example:
    return Example(
        f"{repo}#{pr}:{path}",
        repo,
        pr,
        path,
        hunk,
        [ExampleComment(line, "RIGHT", body)],
        f"2024-01-{day:02d}T10:00:00Z",
    )


def test_an_exemplar_shows_a_few_lines_up_to_the_commented_one_and_the_comment():
    hunk = parse_hunk("@@ -1,0 +1,9 @@\n" + "".join(f"+line {i}\n" for i in range(1, 10)).rstrip("\n"))
    ex = compact("a.py", hunk, 7, "RIGHT", "Name this better.\n\nAnd test it.")
    assert ex is not None
    assert ex.code.splitlines() == [f"R{i} +line {i}" for i in range(3, 8)]  # 4 lines before, then the line
    # the answer in the current format quotes the commented line; formats 1-3 name it by its label
    assert ex.answer == ">>> +line 7\nName this better.\n\n  And test it."
    assert ex.for_version(3).answer == ex.label_answer == "R7: Name this better.\n\n  And test it."
    assert ex.for_version(4) == ex
    assert compact("a.py", hunk, 42, "RIGHT", "x") is None  # not in the hunk
    assert compact("a.py", hunk, 7, "RIGHT", "  ") is None  # nothing said
    long = compact("a.py", hunk, 7, "RIGHT", "word " * 200)
    assert long is not None and len(long.answer) < 320 and long.answer.endswith("…")


def test_exemplars_stay_within_the_token_budget():
    small = Exemplar("a.py", "R1 +x", "R1: short")
    big = Exemplar("b.py", "R1 +" + "y" * 4 * EXEMPLAR_TOKEN_BUDGET, "R1: long")
    kept = within_budget([small, big, small])
    assert kept == (small, small)
    assert sum(exemplar_tokens(e) for e in kept) <= EXEMPLAR_TOKEN_BUDGET


def test_retrieval_is_leak_free_earlier_pull_requests_only_never_the_same_one():
    train = [
        example(1, 1, "src/loader.py", "Close the file: use a with block."),
        example(2, 2, "src/loader.py", "Same file handling note, a day later."),
        example(3, 3, "docs/readme.md", "Unrelated.", hunk="@@ -1 +1 @@\n-old words\n+new words"),
        example(4, 9, "src/loader.py", "From a later pull request."),
    ]
    index = ExemplarIndex.from_examples(train)
    # a hunk of PR 2 sees PR 1's review, never its own and never PR 4's (newer)
    shown = index.top(query_of(train[1], {("o/r", 2): "2024-01-02T10:00:00Z"}), k=3)
    assert [e.label_answer for e in shown] == ["R2: Close the file: use a with block."]
    # the oldest pull request has no earlier review to show
    assert index.top(query_of(train[0]), k=3) == ()
    # at review time there is no pull-request time: every indexed review is earlier, most similar first
    served = index.top(Query("src/loader.py", HUNK), k=2)
    assert len(served) == 2 and all(e.path == "src/loader.py" for e in served)
    # the same PR number in another repository is another pull request
    other = index.top(Query("src/loader.py", HUNK, "x/y", 2, "2024-01-05T00:00:00Z"), k=5)
    assert {e.label_answer for e in other} == {
        "R2: Close the file: use a with block.",
        "R2: Same file handling note, a day later.",
    }


def test_v3_prompts_put_what_every_prompt_shares_first_and_the_exemplars_before_the_hunk():
    inp = render_input("src/app.py", parse_hunk(HUNK))
    ex = Exemplar("src/old.py", "R9 +f = open(q)", "R9: Use a with block.")
    v3 = for_model(with_exemplars(inp, [ex]), 3)
    messages = v3.messages()
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPTS[3]}
    last = messages[-1]["content"]
    assert last.startswith(EXEMPLARS_HEADER) and last.index("R9: Use a with block.") < last.index(HUNK_HEADER)
    assert last.endswith(inp.user)
    # an untuned model: worked examples first (shared by every prompt), then the exemplars as turns
    base = for_model(with_exemplars(inp, [ex]), 3, few_shot=True)
    assert len(base.shots) == len(FEW_SHOT) + 1 and base.exemplars == ()
    assert base.shots[-1] == (ex.user_text(), "R9: Use a with block.\n</review>")
    assert base.messages()[-1]["content"] == inp.user
    # v1/v2 adapters never saw exemplars and are served as before
    for version in (1, 2):
        old = for_model(with_exemplars(inp, [ex]), version)
        assert old.exemplars == () and old.messages()[-1]["content"] == inp.user


def test_an_index_saved_with_a_version_loads_back_and_refuses_a_changed_file(tmp_path):
    from adapters.exemplars import load_index, save_index
    from bot.errors import ModelError

    train = [example(1, 1, "src/loader.py", "Close the file."), example(2, 2, "src/io.py", "Same here.")]
    index = ExemplarIndex.from_examples(train)
    entry = save_index(index, tmp_path, k=2)
    assert entry["k"] == 2 and entry["documents"] == 2 and len(entry["sha256"]) == 64
    loaded = load_index(tmp_path, entry)
    assert loaded is not None
    query = Query("src/loader.py", HUNK)
    assert loaded.top(query, 2) == index.top(query, 2)
    assert load_index(tmp_path, None) is None  # a version without an index: served as before
    (tmp_path / "exemplars" / "reviews.jsonl").write_text("{}\n")
    with pytest.raises(ModelError, match="does not match the hash"):
        load_index(tmp_path, entry)


def test_a_prompt_too_long_with_its_exemplars_drops_the_least_similar_until_it_fits():
    best, second, third = (Exemplar(f"src/{n}.py", "R1 +" + "word " * 20, f"R1: note {n}") for n in "abc")
    inp = with_exemplars(render_input("src/app.py", parse_hunk(HUNK)), [best, second, third])

    def words(p):
        return len(p.plain_text().split())

    bare, full = words(with_exemplars(inp, ())), words(inp)
    one, two = words(with_exemplars(inp, [best])), words(with_exemplars(inp, [best, second]))
    assert bare < one < two < full
    whole = fit_prompt(inp, words, full)
    assert whole.fits and whole.dropped == 0 and whole.prompt == inp and whole.tokens == full
    fitted = fit_prompt(inp, words, two + 1)
    assert fitted.fits and fitted.prompt.exemplars == (best, second) and fitted.dropped == 1 and fitted.tokens == two
    assert fit_prompt(inp, words, one).prompt.exemplars == (best,)
    none = fit_prompt(inp, words, one - 1)
    assert none.fits and none.prompt.exemplars == () and none.dropped == 3 and none.tokens == bare
    # not even the bare prompt fits: it comes back, with its cost, for the caller to skip or split
    unfit = fit_prompt(inp, words, bare - 1)
    assert not unfit.fits and unfit.prompt.exemplars == () and unfit.tokens == bare and unfit.dropped == 3
    # the trained row length holds a prompt with exemplars, never the bare hunk (the context does that)
    capped = fit_prompt(inp, words, full, exemplar_room=two)
    assert capped.fits and capped.prompt.exemplars == (best, second)
    assert fit_prompt(inp, words, full, exemplar_room=bare - 1).prompt.exemplars == ()
    assert fit_prompt(inp, words, full, exemplar_room=bare - 1).fits
    # the rule itself, on anything an attempt builds: first fit, and how many were dropped for it
    assert first_fit("abc", lambda shown: "".join(shown) if len(shown) <= 1 else None) == ("a", 2)
    tried = []
    assert first_fit("abc", lambda shown: tried.append(len(shown))) is None
    assert tried == [3, 0]  # not even the bare prompt fits: no point trying one or two exemplars
    tried.clear()
    assert first_fit("abc", lambda shown: tried.append(len(shown)) or (shown if len(shown) <= 1 else None)) == (
        ("a",),
        2,
    )
    assert tried == [3, 0, 2, 1]
    assert first_fit((), lambda shown: len(shown)) == (0, 0)
