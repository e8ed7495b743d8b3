"""Metrics (BLEU-4 as CodeReviewer computes it, ROUGE-L, placement) and the baselines."""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import pytest

from bot.examples import Example, ExampleComment
from bot.exemplars import code_tokens
from bot.prompt import PromptComment
from finetune.baselines import BM25, MostFrequentBaseline, RetrievalBaseline, transplant
from finetune.metrics import (
    Placement,
    bleu4,
    bleu_tokens,
    exact_match,
    placement_metrics,
    review_scores,
    rouge_l,
    sentence_bleu4,
    stop_words,
    text_metrics,
    tokenize,
    uninformative_metrics,
)

# Review comments in the style of CodeReviewer's test set (short, imperative, code in backticks);
# written for these tests.
CODEREVIEWER_STYLE = [
    "Why do we need this change?",
    "nit: remove the extra blank line",
    "This should be `final`.",
    "Can we use `Objects.requireNonNull` here?",
    "I think this is not needed anymore.",
    "Please add a unit test for this.",
    "Shouldn't this be `private`?",
    "typo: recieve -> receive",
    "Is this thread-safe? `cache` is shared between requests.",
    "Use `StringBuilder` instead of `+=` in a loop.",
    "Can you explain why the timeout is 30s?",
    "This log line should be at DEBUG level.",
    "Why not `Optional.ofNullable(x).orElse(y)`?",
    "Please keep the imports sorted.",
    "This will throw NPE if `config` is null.",
    "Move this check before the loop.",
    "Let's not swallow the exception here; log it at least.",
    "We already have `utils.join_path` for this.",
    "nit: `self._cache_dir` -> `self.cache_dir`",
    "Same as above.",
    "Done.",
    "LGTM, minor nits only.",
    "Could this be a `@staticmethod`?",
    "Please don't use wildcard imports.",
    "The docstring is out of date.",
    "`__init__` should not do I/O.",
    "What happens if `len(items) == 0`?",
    "Rename to `is_enabled`?",
    "Consider using `with open(...)` so the file is closed.",
    "This duplicates `parse_args()` in cli.py.",
    "I would prefer a dict lookup over the if/elif chain.",
    "Magic number: 1024 -> MAX_BUFFER_SIZE.",
    "Do we need the `else` after `return`?",
    "THE TEST NAME IS MISLEADING.",
    "Is it OK to call this twice?",
]

EDGE_CASES = [
    ("", "Please add a test."),
    ("", ""),
    ("Use a context manager.", ""),
    ("the of and to", "the of"),
    ("The THE the", "the"),
    ("A I a i", "a i"),
    ("It Is What It Is", "it is what it is"),
    ("...!!!", "?!"),
    ("!!!", "!!!"),
    ("— –", "—"),
    ("über naïve café, très bien", "uber naive cafe"),
    ("İstanbul", "istanbul"),
    ("ΟΔΟΣ σοφίας", "οδος σοφιας"),
    ("emoji 🚀 ok", "ok 🚀"),
    ("数据 不对", "数据 对"),
    ("__init__ and self._cache_dir", "use _cache_dir in __init__"),
    ("foo_bar_baz", "foo bar baz"),
    ("3.14, 1,000 and -2", "3 . 14 , 1 , 000 and - 2"),
    ("a\ttab\tseparated", "a tab separated"),
    ("line one\nline two", "line one line two"),
    ("crlf\r\nends", "crlf ends"),
    ("&amp; &lt;tag&gt; &quot;q&quot;", '& <tag> "q"'),
    ("<skipped> text", "text"),
    ("don't won't can't", "do not"),
    ("x", "x"),
    ("x", "y"),
    ("x y z w v", "x y z w v"),
    ("`code`", "code"),
]


def _perturb(text: str, rng: random.Random) -> str:
    """A near miss of ``text``: some words dropped or swapped, some case changed."""
    words = text.split()
    out = [w for w in words if rng.random() > 0.2] or words[:1]
    if len(out) > 2 and rng.random() < 0.5:
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(w.capitalize() if rng.random() < 0.2 else w for w in out)


@pytest.fixture(scope="module")
def pairs(crc_path) -> list[tuple[str, str]]:
    """(prediction, reference) pairs: unrelated and near-miss crc-py comments, CodeReviewer-style
    texts, and edge cases."""
    rng = random.Random(7)
    comments = [json.loads(line)["comment"] for line in crc_path.read_text(encoding="utf-8").splitlines()][:200]
    out = [(c, comments[rng.randrange(len(comments))]) for c in comments[:100]]
    out += [(_perturb(c, rng), c) for c in comments[100:200]]
    out += [(c, rng.choice(CODEREVIEWER_STYLE)) for c in CODEREVIEWER_STYLE]
    out += [(_perturb(c, rng), c) for c in CODEREVIEWER_STYLE]
    out += [(c.upper(), c) for c in CODEREVIEWER_STYLE[:10]]
    return out + EDGE_CASES


def test_bleu_is_the_codereviewer_evaluators_on_every_pair(pairs, codereviewer_bleu):
    assert len(pairs) >= 300
    nonzero = 0
    for prediction, reference in pairs:
        for rmstop in (True, False):
            oracle = codereviewer_bleu.bleu_fromstr([prediction], [reference], rmstop=rmstop)
            ours = bleu4([prediction], [reference], stop_words=not rmstop)
            assert ours == pytest.approx(oracle, abs=0.01), (prediction, reference, rmstop)
            nonzero += oracle > 0
    assert nonzero > 300  # the comparison is not one of zeros
    predictions, references = [p for p, _ in pairs], [r for _, r in pairs]
    for rmstop in (True, False):
        oracle = codereviewer_bleu.bleu_fromstr(predictions, references, rmstop=rmstop)
        assert bleu4(predictions, references, stop_words=not rmstop) == pytest.approx(oracle, abs=0.01)


def test_bleu_tokens_follow_the_reference_steps_in_order():
    assert len(stop_words()) == 592 and "the" in stop_words() and "a" not in stop_words() and "i" not in stop_words()
    # stop words go before lower-casing, so a capitalised one stays
    assert bleu_tokens("The file is the problem", remove_stop_words=True) == ["the", "file", "problem"]
    # punctuation runs become single characters, "_" a token of its own
    assert bleu_tokens("self._cache_dir!?") == ["self", ".", "_", "cache", "_", "dir", "!", "?"]
    assert bleu_tokens("") == [] and bleu_tokens("the of", remove_stop_words=True) == []


def test_an_empty_prediction_scores_the_brevity_penalty_alone(codereviewer_bleu):
    # no n-grams: the precisions count as 1 and exp(1 - (r + 1) / 1) = exp(-r) remains, as in the reference
    assert sentence_bleu4([], ["a", "b"]) == pytest.approx(math.exp(-2))
    assert bleu4([""], ["please fix"]) == pytest.approx(100 * math.exp(-2))
    assert codereviewer_bleu.bleu_fromstr([""], ["please fix"], rmstop=False) == pytest.approx(
        100 * math.exp(-2), abs=0.005
    )
    assert bleu4([""], [""]) == 100.0


def test_sentence_bleu_smooths_higher_orders_and_penalises_brevity():
    assert sentence_bleu4(["a", "b", "c", "d"], ["a", "b", "c", "d"]) == pytest.approx(1.0)
    # all n-gram precisions are 1; the brevity penalty is exp(1 - (5 + 1) / (4 + 1))
    assert sentence_bleu4(["use", "a", "with", "block"], ["use", "a", "with", "block", "here"]) == pytest.approx(
        math.exp(-0.2)
    )
    # one substitution: p1 = 3/4, p2 = (1+1)/(3+1), p3 = (0+1)/(2+1), p4 = (0+1)/(1+1)
    expected = math.exp((math.log(3 / 4) + math.log(2 / 4) + math.log(1 / 3) + math.log(1 / 2)) / 4)
    assert sentence_bleu4(["a", "b", "c", "d"], ["a", "b", "x", "d"]) == pytest.approx(expected)
    assert sentence_bleu4(["z"], ["a", "b"]) == 0.0  # no unigram in common: no smoothing on unigrams
    with pytest.raises(ValueError, match="1 predictions but 0 references"):
        bleu4(["x"], [])


def test_rouge_l_is_rouge_scores_rougeL_f_measure(pairs):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for prediction, reference in pairs:
        assert rouge_l(prediction, reference) == pytest.approx(scorer.score(reference, prediction)["rougeL"].fmeasure)
    assert rouge_l("a b c d", "a b x d") == pytest.approx(0.75)
    assert rouge_l("Use .get()!", "use get") == 1.0  # punctuation is not a token
    assert rouge_l("café", "caf") == 1.0  # nor is a non-ASCII letter
    assert rouge_l("", "a") == 0.0 and rouge_l("!!", "??") == 0.0


def test_exact_match_and_text_metrics():
    assert exact_match("Use a `with` block.", "use a with block .") is False
    assert exact_match("Use a with block.", "use  a with\nblock .")
    assert tokenize("Don't!") == ["don", "'", "t", "!"]
    metrics = text_metrics(["nit: typo"], ["Nit: typo"])
    assert metrics["exact_match"] == 100.0 and metrics["bleu4"] == pytest.approx(100.0)
    assert metrics["rouge_l"] == pytest.approx(100.0)
    assert text_metrics([], [])["bleu4"] is None


HUNK = "@@ -1,2 +1,4 @@\n def f():\n+    print(x)\n+    y = 1\n     return y"
PRINT = "Use the module logger instead of print."


def _example(id_: str, comments: list[tuple[int, str]], hunk: str = HUNK) -> Example:
    return Example(id_, "o/r", 1, "a.py", hunk, [ExampleComment(line, "RIGHT", body) for line, body in comments])


def _prediction(id_: str, comments: list[tuple[int, str]]) -> SimpleNamespace:
    return SimpleNamespace(example_id=id_, comments=[PromptComment(line, "RIGHT", body) for line, body in comments])


def test_review_f1_rewards_the_right_words_on_the_right_line_only():
    examples = [_example("pos", [(2, PRINT)]), _example("neg", [])]
    perfect = review_scores(examples, [_prediction("pos", [(2, PRINT)]), _prediction("neg", [])])
    assert perfect == {"review_precision": 1.0, "review_recall": 1.0, "review_f1": 1.0}

    wrong_line = review_scores(examples, [_prediction("pos", [(3, PRINT)]), _prediction("neg", [])])
    assert wrong_line["review_f1"] == 0.0

    silent = review_scores(examples, [_prediction("pos", []), _prediction("neg", [])])
    assert silent["review_recall"] == 0.0 and silent["review_precision"] is None and silent["review_f1"] == 0.0

    noisy = review_scores(examples, [_prediction("pos", [(2, PRINT)]), _prediction("neg", [(2, "Rename this.")])])
    assert noisy["review_recall"] == 1.0 and noisy["review_precision"] == 0.5
    assert noisy["review_f1"] == pytest.approx(2 / 3)

    paraphrase = review_scores(
        examples, [_prediction("pos", [(2, "Use a logger, not print.")]), _prediction("neg", [])]
    )
    assert 0.0 < paraphrase["review_f1"] < 1.0
    assert review_scores([_example("neg", [])], [_prediction("neg", [])])["review_f1"] is None


def test_placement_is_marked_uninformative_when_every_comment_sits_at_the_hunks_end():
    at_end = [_example("a", [(4, "x")]), _example("b", [(4, "y")])]  # new line 4 is the hunk's last line
    marked = uninformative_metrics(at_end)
    assert {"line_precision", "line_recall", "hunk_precision", "hunk_recall"} <= set(marked)
    assert "last line" in marked["line_precision"] and "left alone" in marked["hunk_precision"]
    mixed = [_example("a", [(2, "x")]), _example("b", [(3, "y")]), _example("c", [])]
    assert uninformative_metrics(mixed) == {}
    only_end_with_negatives = [_example("a", [(4, "x")]), _example("c", [])]
    assert set(uninformative_metrics(only_end_with_negatives)) == {"line_precision", "line_recall", "line_f1"}


def test_placement_precision_recall_and_silence():
    R = "RIGHT"
    items = [
        Placement(frozenset({(3, R)}), frozenset({(3, R)})),  # right hunk, right line
        Placement(frozenset({(4, R), (5, R)}), frozenset({(5, R)})),  # right hunk, one of two lines right
        Placement(frozenset(), frozenset({(9, R)})),  # missed a commented hunk
        Placement(frozenset({(1, R)}), frozenset()),  # spoke on a negative
        Placement(frozenset(), frozenset()),  # stayed silent on a negative
    ]
    m = placement_metrics(items)
    assert m["hunk_precision"] == pytest.approx(2 / 3)
    assert m["hunk_recall"] == pytest.approx(2 / 3)
    assert m["line_precision"] == pytest.approx(2 / 4)
    assert m["line_recall"] == pytest.approx(2 / 3)
    assert m["silence_on_negatives"] == pytest.approx(1 / 2)
    assert m["line_f1"] == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    assert placement_metrics([Placement(frozenset(), frozenset({(1, R)}))])["hunk_precision"] is None


def _ex(i: int, path: str, body: list[str], comments: list[ExampleComment]) -> Example:
    hunk = f"@@ -1,{len(body)} +1,{len(body)} @@\n" + "\n".join(body)
    return Example(f"e{i}", "o/r", i, path, hunk, comments, "2024-01-01T00:00:00Z")


def test_code_tokens_split_identifiers():
    assert code_tokens("loadConfig(user_id)") == ["loadconfig", "load", "config", "user_id", "user", "id"]


def test_bm25_prefers_the_document_sharing_rare_terms():
    index = BM25([["open", "file", "read"], ["timeout", "session", "get"], ["open", "socket"]])
    assert index.best(["session", "timeout"]) == 1
    assert index.best(["open", "file"]) == 0
    assert index.best(["nothing"]) is None


def test_retrieval_answers_with_the_nearest_training_comment_on_the_same_relative_line():
    train = [
        _ex(
            1,
            "net.py",
            [" def call():", "+    response = session.get(url, timeout=30)", "     return response"],
            [ExampleComment(2, "RIGHT", "Read the timeout from the config.")],
        ),
        _ex(
            2, "io.py", [" def load():", "+    handle = open(path)"], [ExampleComment(2, "RIGHT", "Use a with block.")]
        ),
        _ex(3, "docs.py", [" # docs", "-# old", "+# new"], []),
    ]
    test = _ex(
        9, "client.py", [" def fetch():", " x = 1", "+    reply = session.get(url, timeout=5)", "     return reply"], []
    )
    baseline = RetrievalBaseline(train)
    assert baseline.neighbour(test).id == "e1"
    (comment,) = baseline.predict(test)
    assert comment.body == "Read the timeout from the config."
    assert (comment.line, comment.side) == (3, "RIGHT")  # one line before the end, as in the neighbour
    silent = _ex(10, "docs.py", [" # docs", "-# old text", "+# new text"], [])
    assert baseline.neighbour(silent).id == "e3" and baseline.predict(silent) == []


def test_transplant_keeps_deleted_lines_on_the_left():
    src = _ex(1, "a.py", [" a", "-b", "+c"], []).parsed_hunk()
    dst = _ex(2, "b.py", [" x", "-y", "+z", " w"], []).parsed_hunk()
    moved = transplant(PromptComment(2, "LEFT", "why?"), src, dst)
    assert (moved.line, moved.side) == (2, "RIGHT")  # one from the end of dst is "+z", new line 2
    moved = transplant(PromptComment(2, "LEFT", "why?"), src, _ex(3, "c.py", [" x", "-y", "+z"], []).parsed_hunk())
    assert (moved.line, moved.side) == (2, "LEFT")


def test_most_frequent_comment_on_the_last_line():
    train = [
        _ex(1, "a.py", [" a", "+b"], [ExampleComment(2, "RIGHT", "nit: typo")]),
        _ex(2, "a.py", [" a", "+b"], [ExampleComment(2, "RIGHT", "Nit:  typo ")]),
        _ex(3, "a.py", [" a", "+b"], [ExampleComment(2, "RIGHT", "LGTM")]),
    ]
    baseline = MostFrequentBaseline(train)
    assert baseline.comment == "nit: typo"
    (c,) = baseline.predict(_ex(4, "z.py", [" q", "-r", "-s"], []))
    assert (c.line, c.side, c.body) == (3, "LEFT", "nit: typo")
    assert MostFrequentBaseline([train[0].__class__(**{**train[0].__dict__, "comments": []})]).predict(train[0]) == []
