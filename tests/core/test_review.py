"""The review pipeline with a scripted backend: selection, budgets, splitting, anchoring, dedupe, caps."""

from __future__ import annotations

import time

import pytest

from adapters.sources import FileSource
from bot.diff import LEFT, RIGHT, parse_diff
from bot.errors import DiffError, ModelError, UsageError
from bot.prompt import render_input
from bot.review import CallbackSink, ReviewOptions, TextSource, review_diff, run
from tests.core.conftest import first_line_comment, prompt_anchors, prompt_path


def new_file(path: str, lines: list[str]) -> str:
    body = "".join(f"+{ln}\n" for ln in lines)
    return f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{len(lines)} @@\n{body}"


MIXED = (
    new_file("src/app.py", ["import os", "print(os.name)"])
    + "diff --git a/logo.png b/logo.png\nindex 1..2 100644\nBinary files a/logo.png and b/logo.png differ\n"
    + "diff --git a/old.py b/old.py\ndeleted file mode 100644\n--- a/old.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-x = 1\n"
    + "diff --git a/bin/run b/bin/run\nnew file mode 120000\n--- /dev/null\n+++ b/bin/run\n@@ -0,0 +1 @@\n+../tool\n"
    + new_file("vendor/lib/x.js", ["var a = 1;"])
    + new_file("api/thing_pb2.py", ["X = 1"])
    + new_file("docs/guide.md", ["# Guide"])
    + "diff --git a/a.txt b/b.txt\nsimilarity index 100%\nrename from a.txt\nrename to b.txt\n"
    + "diff --git a/src/util.py b/src/util.py\nindex 1..2 100644\n--- a/src/util.py\n+++ b/src/util.py\n"
    "@@ -1,4 +1,4 @@\n def f():\n-    return 1\n+    return 2\n \n \n@@ -20,2 +20,3 @@ def g():\n     a = 1\n+    b = 2\n     return a\n"
)


def test_skips_each_unreviewable_file_with_its_reason(scripted):
    backend = scripted(lambda inp: "NO COMMENT")
    review = review_diff(parse_diff(MIXED, "mixed.diff"), backend, ReviewOptions(ignore_paths=("docs/**",)))
    reasons = {s.path: s.reason for s in review.skipped}
    assert reasons == {
        "logo.png": "binary file",
        "old.py": "deleted file",
        "bin/run": "symlink",
        "vendor/lib/x.js": "vendored or generated (matches 'vendor/')",
        "api/thing_pb2.py": "vendored or generated (matches '*_pb2.py')",
        "docs/guide.md": "ignored by configuration (matches 'docs/**')",
        "b.txt": "renamed without changes",
    }
    assert [prompt_path(p) for p in backend.prompts] == ["src/app.py", "src/util.py", "src/util.py"]
    assert (review.files_total, review.files_reviewed, review.hunks_total, review.hunks_reviewed) == (9, 2, 3, 3)
    assert review.comments == [] and review.parse_failures == 0
    assert "Skipped: 7 files" in review.summary and "Reviewed 3 of 3 hunks in 2 of 9 files" in review.summary


def test_every_comment_is_anchored_on_the_diff_or_set_aside(scripted):
    def answer(inp):
        if prompt_anchors(inp)[0] == "R1":  # first hunk of src/util.py
            return (
                "R2: why 2?\nL2: was this wrong?\nR77: not in the diff\nL9: nor this\n"
                "R1-2: a valid range\nR0-2: range starting outside\n"
            )
        return "R21: name b better\n"

    diff = parse_diff(MIXED, "mixed.diff")
    review = review_diff(
        diff, scripted(answer), ReviewOptions(ignore_paths=("src/app.py", "docs/"), max_comments_per_file=10)
    )
    got = [(c.path, c.line, c.side, c.start_line, c.body) for c in review.comments]
    assert got == [  # in diff order: the deleted line 2 comes before the added line 2
        ("src/util.py", 2, LEFT, None, "was this wrong?"),
        ("src/util.py", 2, RIGHT, None, "why 2?"),
        ("src/util.py", 2, RIGHT, 1, "a valid range"),
        ("src/util.py", 2, RIGHT, None, "range starting outside"),  # kept on its last line
        ("src/util.py", 21, RIGHT, None, "name b better"),
    ]
    for c in review.comments:
        assert diff.is_commentable(c.path, c.line, c.side)
        assert c.start_line is None or diff.is_commentable(c.path, c.start_line, c.side)
    assert [(c.line, c.side) for c in review.unanchored] == [(9, LEFT), (77, RIGHT)]  # by line number
    assert all(c.new_line is None for c in review.unanchored)
    # code text and the new-file line each comment shows at
    left = next(c for c in review.comments if c.side == LEFT)
    assert left.code == "    return 1" and left.new_line == 2
    assert review.comments[-1].code == "    b = 2" and review.comments[-1].new_line == 21


def test_duplicates_dropped_and_caps_keep_diff_order(scripted):
    text = "".join(new_file(f"f{k}.py", [f"a{i} = {i}" for i in range(1, 7)]) for k in range(3))
    answer = lambda inp: "R5: five\nR1: one\nR3: three\nR1:   ONE \nR6: six\nR2: two\n"  # noqa: E731
    review = review_diff(parse_diff(text), scripted(answer), ReviewOptions(max_comments=5, max_comments_per_file=2))
    assert [(c.path, c.line) for c in review.comments] == [
        ("f0.py", 1),
        ("f0.py", 2),
        ("f1.py", 1),
        ("f1.py", 2),
        ("f2.py", 1),
    ]
    assert [c.body for c in review.comments] == ["one", "two", "one", "two", "one"]  # the first of duplicates
    assert review.duplicates_dropped == 3  # "ONE" repeats "one" in each of the three files
    assert review.over_cap_dropped == 15 - 5  # five distinct comments per file, five kept
    assert "Dropped 3 duplicates and 10 over the comment limits" in review.summary


def test_deterministic(scripted):
    diff = parse_diff(MIXED)
    a = review_diff(diff, scripted(first_line_comment)).to_dict()
    b = review_diff(diff, scripted(first_line_comment)).to_dict()
    a.pop("timing"), b.pop("timing")
    assert a == b and a["comments"]


def test_token_budget_skips_the_rest_and_says_so(scripted):
    text = "".join(new_file(f"f{k}.py", [f"v{i} = {i}" for i in range(1, 4)]) for k in range(6))
    backend = scripted(first_line_comment)
    diff = parse_diff(text)
    # every prompt costs the same (its tokens plus max_new_tokens 20): 2.5 prompts' worth pays for two
    cost = backend.count_tokens(render_input("f0.py", diff.files[0].hunks[0]).plain_text()) + 20
    budget = 2 * cost + cost // 2
    review = review_diff(diff, backend, ReviewOptions(token_budget=budget, max_new_tokens=20))
    assert [prompt_path(p) for p in backend.prompts] == ["f0.py", "f1.py"]
    assert [(s.path, s.reason, s.hunks) for s in review.skipped] == [
        (f"f{k}.py", f"token budget of {budget} tokens spent (source)", ()) for k in range(2, 6)
    ]
    assert review.hunks_reviewed == 2 and review.hunks_total == 6 and len(review.comments) == 2
    assert f"4 files (token budget of {budget} tokens spent: 4)" in review.summary


def test_oversized_hunk_is_split_and_comments_land_in_every_piece(scripted):
    lines = [f"value_{i} = {i}" for i in range(1, 61)]
    backend = scripted(first_line_comment, max_context=16 + 160)
    review = review_diff(
        parse_diff(new_file("big.py", lines)),
        backend,
        ReviewOptions(max_new_tokens=16, max_comments=100, max_comments_per_file=100),
    )
    assert len(backend.prompts) > 2
    shown = [a for p in backend.prompts for a in prompt_anchors(p)]
    assert shown == [f"R{i}" for i in range(1, 61)]  # every line shown exactly once, in order
    for p in backend.prompts:
        assert backend.count_tokens(p.plain_text()) + 16 <= 160
    assert review.prompts == len(backend.prompts) and review.hunks_reviewed == 1 and review.skipped == []
    assert [c.line for c in review.comments] == [int(p.user.split("\nR", 2)[1].split()[0]) for p in backend.prompts]


def test_a_hunk_too_long_with_its_exemplars_keeps_the_most_similar_that_fit_instead_of_being_split(scripted):
    from bot.examples import Example, ExampleComment
    from bot.exemplars import ExemplarIndex, Query
    from bot.prompt import with_exemplars

    lines = [f"handle_{i} = open(path_{i})" for i in range(1, 9)]
    past = [
        Example(
            f"o/r#{n}",
            "o/r",
            n,
            "src/loader.py",
            f"@@ -0,0 +1,2 @@\n+handle_{n} = open(path_{n})\n+x = {n}",
            [ExampleComment(1, "RIGHT", f"Close handle_{n}: use a with block, note {n}.")],
            f"2024-01-0{n}",
        )
        for n in range(1, 4)
    ]
    diff = parse_diff(new_file("src/loader.py", lines))
    hunk = diff.files[0].hunks[0]
    backend = scripted(first_line_comment)
    backend.exemplars, backend.exemplar_k = ExemplarIndex.from_examples(past), 3
    shown = backend.exemplars.top(Query("src/loader.py", hunk.text()), 3)
    assert len(shown) == 3

    def words(exemplars):
        return backend.count_tokens(with_exemplars(render_input("src/loader.py", hunk), exemplars).plain_text()) + 16

    options = ReviewOptions(max_new_tokens=16)
    backend.max_context = words(shown[:1]) + 16  # room for the hunk and its most similar exemplar only
    review = review_diff(diff, backend, options)
    assert len(backend.prompts) == 1 and backend.prompts[0].exemplars == shown[:1]  # not split: two exemplars went
    assert review.exemplars_trimmed == 1 and review.to_dict()["stats"]["exemplars_trimmed"] == 1
    assert review.skipped == [] and len(review.comments) == 1
    # the row length the version was trained at holds exemplars, never the hunk: past it, the bare hunk
    backend.calls.clear()
    backend.max_context, backend.exemplar_max_length = 4096, words(()) - 16 - 1
    review = review_diff(diff, backend, options)
    assert len(backend.prompts) == 1 and backend.prompts[0].exemplars == () and review.exemplars_trimmed == 1
    backend.calls.clear()
    backend.exemplar_max_length = words(shown[:2]) - 16
    assert review_diff(diff, backend, options).exemplars_trimmed == 1 and backend.prompts[0].exemplars == shown[:2]
    backend.calls.clear()
    backend.exemplar_max_length = None
    assert review_diff(diff, backend, options).exemplars_trimmed == 0 and backend.prompts[0].exemplars == shown
    # a review budget that pays for the bare hunk only: its exemplars go before any of its lines
    backend.calls.clear()
    review = review_diff(diff, backend, ReviewOptions(max_new_tokens=16, token_budget=words(()) + 16))
    assert backend.prompts[0].exemplars == () and prompt_anchors(backend.prompts[0]) == [f"R{i}" for i in range(1, 9)]
    assert review.skipped == [] and review.exemplars_trimmed == 1


def test_a_line_too_long_for_the_context_is_skipped_with_the_reason(scripted):
    lines = ["ok = 1", " ".join(["word"] * 500), "ok = 3"]
    backend = scripted(first_line_comment, max_context=16 + 160)
    review = review_diff(parse_diff(new_file("long.py", lines)), backend, ReviewOptions(max_new_tokens=16))
    assert [s.reason for s in review.skipped] == ["a line too long for the model's context (160 prompt tokens)"]
    assert review.skipped[0].hunks == ("@@ -0,0 +1,3 @@",) and review.skipped[0].lines == 1
    assert sorted(a for p in backend.prompts for a in prompt_anchors(p)) == ["R1", "R3"]


def test_context_too_small_for_any_prompt_is_a_model_error(scripted):
    with pytest.raises(ModelError, match="too few for a prompt"):
        review_diff(
            parse_diff(new_file("a.py", ["x"])),
            scripted(first_line_comment, max_context=100),
            ReviewOptions(max_new_tokens=64),
        )


def test_empty_diff_never_loads_the_model(scripted):
    def factory():
        raise AssertionError("the model must not be loaded for an empty diff")

    for text in ("", "\n"):
        review = run(TextSource(text), factory)
        assert review.nothing_to_review and review.summary == "Nothing to review."
        assert review.comments == [] and review.model == {}
    with pytest.raises(DiffError, match="<stdin>:1: not a unified diff"):  # not "nothing to review"
        run(TextSource("not a diff at all\n"), factory)
    only_binary = run(TextSource("diff --git a/x.png b/x.png\nBinary files a/x.png and b/x.png differ\n"), factory)
    assert only_binary.summary == "Nothing to review (1 file (binary file: 1))."


def test_run_reads_a_source_loads_lazily_and_writes_to_the_sink(tmp_path, scripted):
    path = tmp_path / "change.diff"
    path.write_text(new_file("a.py", ["x = 1"]))
    loaded, seen = [], []

    def factory():
        loaded.append(1)
        return scripted(first_line_comment)

    review = run(FileSource(path), factory, CallbackSink(seen.append))
    assert loaded == [1] and seen == [review] and review.source == str(path)
    assert [(c.path, c.line, c.body) for c in review.comments] == [("a.py", 1, "check a.py")]
    assert set(review.timing) >= {"read", "select", "load", "prompts", "generate", "parse", "total"}
    with pytest.raises(UsageError, match="cannot read diff file"):
        FileSource(tmp_path / "missing.diff").read()
    with pytest.raises(UsageError, match="is a directory"):
        FileSource(tmp_path).read()


def test_unreadable_answers_are_counted_and_secrets_scrubbed(scripted):
    answers = iter(["I think this is fine overall.", "R1: the key ghp_" + "x" * 36 + " must not be here"])
    review = review_diff(
        parse_diff(new_file("a.py", ["x = 1"]) + new_file("b.py", ["y = 2"])), scripted(lambda inp: next(answers))
    )
    assert review.parse_failures == 1 and review.prompts == 2
    assert [c.body for c in review.comments] == ["the key <REDACTED> must not be here"]
    assert "1 of 2 model answers were partly unreadable" in review.summary


def test_backend_returning_the_wrong_number_of_answers(scripted):
    backend = scripted(first_line_comment)
    backend.generate = lambda inputs, max_new_tokens=256: []
    with pytest.raises(ModelError, match="returned 0 answers for 1 prompts"):
        review_diff(parse_diff(new_file("a.py", ["x"])), backend)


def test_options_validate():
    with pytest.raises(UsageError, match="max comments must be 0 or more"):
        ReviewOptions(max_comments=-1)
    with pytest.raises(UsageError, match="token budget"):
        ReviewOptions(token_budget=0)


def test_fifty_thousand_line_diff_is_bounded_and_reports_what_it_left(scripted):
    text = "".join(new_file(f"src/m{k}.py", [f"x_{i} = {i}" for i in range(100)]) for k in range(500))
    backend = scripted(first_line_comment)
    start = time.perf_counter()
    review = run(TextSource(text, "huge.diff"), backend, options=ReviewOptions(token_budget=20_000))
    elapsed = time.perf_counter() - start
    assert elapsed < 20, elapsed
    assert 0 < review.prompts <= 20_000 // 256 and review.hunks_total == 500
    skipped_files = [s for s in review.skipped if s.reason.startswith("token budget")]
    cut = [s for s in skipped_files if s.hunks]  # the hunk the budget ran out in: its head was reviewed
    assert len(cut) <= 1 and all(0 < s.lines < 100 for s in cut)
    assert len(skipped_files) - len(cut) == 500 - review.hunks_reviewed
    assert sum(s.lines for s in skipped_files if not s.hunks) == 100 * (len(skipped_files) - len(cut))
    assert f"Reviewed {review.hunks_reviewed} of 500 hunks" in review.summary


def test_options_from_config_take_the_overrides_that_are_given():
    from bot.config import RepoConfig

    config = RepoConfig(max_comments=4, max_comments_per_file=2, ignore_paths=("a/**",), default_ignores=False)
    options = ReviewOptions.from_config(config, max_comments=None, max_comments_per_file=1, ignore_paths=["b/*"])
    assert (options.max_comments, options.max_comments_per_file) == (4, 1)
    assert options.ignore_paths == ("b/*",) and options.default_ignores is False
    assert options.max_new_tokens == ReviewOptions().max_new_tokens
    assert ReviewOptions.from_config(config, token_budget=999).token_budget == 999
    assert ReviewOptions.from_config(config).ignore_paths == ("a/**",)
