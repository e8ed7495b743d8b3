"""Metrics (BLEU-4 as CodeReviewer computes it, ROUGE-L, placement) and the baselines."""
from __future__ import annotations

import math

import pytest

from bot.examples import Example, ExampleComment
from bot.prompt import PromptComment
from finetune.baselines import BM25, MostFrequentBaseline, RetrievalBaseline, code_tokens, transplant
from finetune.metrics import (
    Placement, bleu4, exact_match, placement_metrics, remove_stop_words, rouge_l, sentence_bleu4, text_metrics,
    tokenize,
)


def test_tokenize_lowercases_words_and_punctuation():
    assert tokenize("Use .get() — don't index!") == ["use", ".", "get", "()", "—", "don", "'", "t", "index", "!"]
    assert remove_stop_words(tokenize("This is the file that we read")) == ["file", "read"]


def test_sentence_bleu_smooths_higher_orders_and_penalises_brevity():
    assert sentence_bleu4(["a", "b", "c", "d"], ["a", "b", "c", "d"]) == pytest.approx(1.0)
    # all n-gram precisions are 1; the brevity penalty is exp(1 - (5 + 1) / (4 + 1))
    assert sentence_bleu4(tokenize("use a with block"), tokenize("use a with block here")) == pytest.approx(math.exp(-0.2))
    # one substitution: p1 = 3/4, p2 = (1+1)/(3+1), p3 = (0+1)/(2+1), p4 = (0+1)/(1+1)
    expected = math.exp((math.log(3 / 4) + math.log(2 / 4) + math.log(1 / 3) + math.log(1 / 2)) / 4)
    assert sentence_bleu4(["a", "b", "c", "d"], ["a", "b", "x", "d"]) == pytest.approx(expected)
    assert sentence_bleu4([], ["a"]) == 0.0
    assert sentence_bleu4(["z"], ["a", "b"]) == 0.0  # no unigram in common: no smoothing on unigrams


def test_corpus_bleu_is_the_mean_times_100_with_and_without_stop_words():
    preds = ["use a with block", "completely different words"]
    refs = ["use a with block here", "the file handle is never closed"]
    assert bleu4(preds, refs) == pytest.approx(100 * (math.exp(-0.2) + 0.0) / 2)
    # without stop words "a"/"with" go: "use block" vs "use block" -> a perfect sentence
    assert bleu4(preds[:1], refs[:1], stop_words=False) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        bleu4(["x"], [])


def test_rouge_l_and_exact_match():
    assert rouge_l("a b c d", "a b x d") == pytest.approx(0.75)
    assert rouge_l("", "a") == 0.0
    assert exact_match("Use a `with` block.", "use a with block .") is False
    assert exact_match("Use a with block.", "use  a with\nblock .")
    metrics = text_metrics(["nit: typo"], ["Nit: typo"])
    assert metrics["exact_match"] == 100.0 and metrics["bleu4"] == pytest.approx(100.0)
    assert text_metrics([], [])["bleu4"] is None


def test_placement_precision_recall_and_silence():
    R = "RIGHT"
    items = [
        Placement(frozenset({(3, R)}), frozenset({(3, R)})),          # right hunk, right line
        Placement(frozenset({(4, R), (5, R)}), frozenset({(5, R)})),  # right hunk, one of two lines right
        Placement(frozenset(), frozenset({(9, R)})),                  # missed a commented hunk
        Placement(frozenset({(1, R)}), frozenset()),                  # spoke on a negative
        Placement(frozenset(), frozenset()),                          # stayed silent on a negative
    ]
    m = placement_metrics(items)
    assert m["hunk_precision"] == pytest.approx(2 / 3)
    assert m["hunk_recall"] == pytest.approx(2 / 3)
    assert m["line_precision"] == pytest.approx(2 / 4)
    assert m["line_recall"] == pytest.approx(2 / 3)
    assert m["silence_on_negatives"] == pytest.approx(1 / 2)
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
        _ex(1, "net.py", [" def call():", "+    response = session.get(url, timeout=30)", "     return response"],
            [ExampleComment(2, "RIGHT", "Read the timeout from the config.")]),
        _ex(2, "io.py", [" def load():", "+    handle = open(path)"], [ExampleComment(2, "RIGHT", "Use a with block.")]),
        _ex(3, "docs.py", [" # docs", "-# old", "+# new"], []),
    ]
    test = _ex(9, "client.py", [" def fetch():", " x = 1", "+    reply = session.get(url, timeout=5)", "     return reply"], [])
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
