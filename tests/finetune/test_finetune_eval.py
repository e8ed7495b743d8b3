"""Evaluation: every system scored on the same hunks; the report; feedback from the store."""

from __future__ import annotations

import json

import pytest

from adapters.model import Backend, Generation
from bot.prompt import render_target, with_exemplars
from finetune.data import split_examples
from finetune.evaluate import evaluate, store_feedback
from tests.finetune.helpers import synthetic_examples


class ScriptedBackend(Backend):
    """Answers from a table (prompt text -> answer); a stand-in for a model with known output."""

    prompt_format_version = 1

    def __init__(self, answers: dict[str, str], default: str = "NO COMMENT", max_context: int = 100_000):
        self.answers, self.default, self.max_context, self.name = answers, default, max_context, "scripted"
        self.calls = 0

    def generate(self, inputs, *, max_new_tokens=256):
        self.calls += len(inputs)
        return [Generation(self.answers.get(i.user, self.default), 10, 5, "stop") for i in inputs]

    def count_tokens(self, text):
        return len(text.split())

    def describe(self):
        return {"kind": "scripted"}


@pytest.fixture(scope="module")
def splits():
    return split_examples(synthetic_examples(n_prs=40), seed=0, test_fraction=0.3)


def perfect(examples) -> ScriptedBackend:
    return ScriptedBackend({e.prompt_input().user: render_target(e.comments) for e in examples})


def test_every_system_is_scored_on_the_same_hunks(splits, tmp_path):
    test, train = splits.test, splits.train
    tuned = perfect(test)
    base = ScriptedBackend({}, default="I think this code is fine overall.")
    report = evaluate(tuned, test, train, base=base, out_dir=tmp_path, progress=False)
    assert [s.name for s in report.systems] == ["tuned", "base", "base + retrieval", "retrieval", "most-frequent"]
    assert tuned.calls == len(test) and base.calls == 2 * len(test)  # base alone, then with exemplars
    assert all(len(s.predictions) == len(test) for s in report.systems)
    t = report.system("tuned").metrics
    assert t["review_f1"] == pytest.approx(1.0)
    assert t["bleu4"] == pytest.approx(100.0) and t["bleu4_no_stop"] == pytest.approx(100.0)
    assert t["exact_match"] == 100.0 and t["rouge_l"] == pytest.approx(100.0)
    assert t["hunk_precision"] == t["hunk_recall"] == t["line_precision"] == t["line_recall"] == 1.0
    assert t["silence_on_negatives"] == 1.0 and t["parse_failure_rate"] == 0.0
    b = report.system("base").metrics
    assert b["parse_failure_rate"] == 1.0 and b["hunk_recall"] == 0.0 and b["review_f1"] == 0.0
    assert b["bleu4"] < 0.1  # silent: an empty prediction scores exp(-reference length), as CodeReviewer's does
    m = report.system("most-frequent").metrics
    assert m["silence_on_negatives"] == 0.0 and m["hunk_recall"] == 1.0  # always speaks
    r = report.system("retrieval").metrics
    assert r["bleu4"] > m["bleu4"] * 0.5  # near neighbours of these templated hunks share their comment
    counts = report.counts
    assert counts["positive"] > 0 and counts["negative"] > 0
    # the report: table, plots, side by side, all predictions in metrics.json
    md = (tmp_path / "report.md").read_text()
    assert md.splitlines()[2].startswith("**verdict: tuned beats base on review F1, BLEU-4 -stop, ROUGE-L")
    for name in (
        "**tuned**",
        "**base**",
        "**retrieval**",
        "**most-frequent**",
        "![text_metrics.png]",
        "![placement.png]",
        "![errors.png]",
        "| review F1 |",
        "## What the promotion gate reads",
    ):
        assert name in md
    assert md.count("```diff") == min(10, counts["positive"])
    assert (tmp_path / "placement.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["systems"]["tuned"]["metrics"]["bleu4"] == pytest.approx(100.0)
    assert len(saved["systems"]["base"]["predictions"]) == len(test)
    table = report.table().splitlines()
    assert table[0].startswith(
        "verdict: tuned beats base on review F1, BLEU-4 -stop, ROUGE-L, hunk R, parse-fail; "
        "tuned beats base + retrieval on review F1"
    )
    assert "tuned beats retrieval on review F1" in table[0]
    assert table[2].split()[:3] == ["system", "review", "F1"] and table[4].startswith("tuned")


def test_anchor_outside_the_hunk_is_not_placed(splits):
    test = [e for e in splits.test if not e.is_negative][:3]
    wrong = ScriptedBackend({e.prompt_input().user: f"R999: {e.comments[0].body}" for e in test})
    report = evaluate(wrong, test, splits.train, base=None, out_dir=None, progress=False)
    t = report.system("tuned").metrics
    assert t["invalid_anchor_rate"] == 1.0 and t["hunk_recall"] == 0.0
    assert t["parse_failure_rate"] == 0.0
    assert t["bleu4"] == pytest.approx(100.0)  # the words are right, only the line is not


def test_leaked_and_too_long_examples_are_dropped_for_every_system(splits):
    test = list(splits.test)
    leaked = splits.train[0]
    longest = max(test, key=lambda e: len(e.prompt_input().plain_text().split()))
    limit = len(longest.prompt_input().plain_text().split()) + 16 - 1  # the longest no longer fits with 16 new tokens
    backend = perfect(test)
    backend.max_context = limit
    report = evaluate(
        backend, test + [leaked], splits.train, base=None, out_dir=None, max_new_tokens=16, progress=False
    )
    assert report.dropped["also_in_training"] == 1
    assert report.dropped["too_long"] >= 1
    ids = {e.id for e in report.examples}
    assert leaked.id not in ids and longest.id not in ids
    assert all({p.example_id for p in s.predictions} == ids for s in report.systems)


def test_feedback_on_the_bots_comments_comes_from_the_store(splits, tmp_path):
    from adapters.store import Feedback, Store

    store = Store(tmp_path / "revbot.db")
    store.record_feedback(
        [
            Feedback("o/r", 1, 101, "reactions", "", json.dumps({"+1": 2, "-1": 0})),
            Feedback("o/r", 1, 102, "reactions", "", json.dumps({"+1": 0, "-1": 1})),
            Feedback("o/r", 1, 102, "reply", "dev", "Not here, this is generated code.", ref_id=900),
            Feedback("o/r", 2, 103, "reaction", "dev", "confused"),
        ]
    )
    store.close()
    fb = store_feedback(tmp_path / "revbot.db")
    assert fb == {
        "comments": 3,
        "liked_share": pytest.approx(1 / 3),
        "disliked_share": pytest.approx(2 / 3),
        "answered_share": pytest.approx(1 / 3),
        # 101 liked twice; 102 voted down (its reply says neither); 103 confused; no versions recorded
        "by_version": {"unknown": {"judged": 3, "accepted": 1, "rejected": 2, "acceptance_rate": pytest.approx(1 / 3)}},
    }
    report = evaluate(
        perfect(splits.test),
        splits.test,
        splits.train,
        base=None,
        out_dir=tmp_path / "out",
        store=tmp_path / "revbot.db",
        progress=False,
    )
    assert report.feedback == fb
    assert "liked 33%, disliked 67%, answered 33%" in (tmp_path / "out" / "report.md").read_text()
    empty = Store(tmp_path / "empty.db")
    empty.close()
    assert store_feedback(tmp_path / "empty.db") is None
    from bot.errors import DataError

    with pytest.raises(DataError, match="no such dataset store"):
        store_feedback(tmp_path / "typo.db")
    assert not (tmp_path / "typo.db").exists()


def test_evaluation_needs_examples(splits):
    from bot.errors import DataError

    with pytest.raises(DataError, match="no test examples"):
        evaluate(perfect([]), [], splits.train, base=None, out_dir=None)
    with pytest.raises(DataError, match="baselines need them"):
        evaluate(perfect([]), splits.test, [], base=None, out_dir=None)


def test_what_a_version_is_evaluated_on(tmp_path):
    from adapters.files import write_examples
    from adapters.store import Store
    from adapters.versions import ModelVersion
    from bot.errors import DataError
    from finetune.evaluate import examples_for

    examples = synthetic_examples(n_prs=30)
    splits = split_examples(examples, seed=0)
    settings = {**splits.settings, "time_ordered": True}
    vdir = tmp_path / "v1"
    (vdir / "data").mkdir(parents=True)
    version = ModelVersion("v1", vdir, {"data": {"split": settings}})
    with pytest.raises(DataError, match="no saved test split"):
        examples_for(version)
    for name, part in splits.items():
        write_examples(vdir / "data" / f"{name}.jsonl", part)
    test, train = examples_for(version)
    assert [e.id for e in test] == [e.id for e in splits.test] and len(train) == len(splits.train)
    # a grown store: its newest PRs become the test split, made with the version's settings
    grown = examples + synthetic_examples(n_prs=34)[60:]  # PRs 31..34, newer than all
    store = Store(tmp_path / "revbot.db")
    store.upsert_examples(grown)
    store.close()
    test, train = examples_for(version, tmp_path / "revbot.db")
    assert {e.pr for e in test} >= {33, 34} and len(train) == len(splits.train)
    # any other file: all of it
    other = tmp_path / "other.jsonl"
    write_examples(other, examples[:5])
    test, _ = examples_for(version, other)
    assert [e.id for e in test] == [e.id for e in examples[:5]]


def test_answer_loss_is_the_mean_cross_entropy_of_the_answer_tokens(tiny_llama, monkeypatch):
    """retrain's answer_loss goes through training's answer-only head (finetune.loss): on padded batches
    it equals cross-entropy over each example's own full logits at its answer tokens, and it leaves no
    hook behind on the model."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.data import encode_example
    from finetune.evaluate import answer_loss
    from finetune.loss import AnswerHead

    batches = []
    training_loss = AnswerHead.loss_sum

    def spy(head, model, inputs):
        batches.append(inputs["input_ids"].shape)
        return training_loss(head, model, inputs)

    monkeypatch.setattr(AnswerHead, "loss_sum", spy)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    examples = synthetic_examples(n_prs=3, per_pr=1)
    assert len({len(encode_example(ex, tok)) for ex in examples[:2]}) == 2  # the first batch is padded
    got = answer_loss(SimpleNamespace(model=model, tokenizer=tok), examples, batch_size=2)
    assert [rows for rows, _ in batches] == [2, 1]  # every batch through training's loss
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:  # one at a time: no padding, the whole vocabulary scored at every position
            enc = encode_example(ex, tok)
            logits = model(input_ids=torch.tensor([enc.ids])).logits[0, :-1]
            targets = torch.tensor(enc.labels()[1:])
            keep = targets != -100
            total += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
            count += int(keep.sum())
    assert count == sum(encode_example(ex, tok).n_answer for ex in examples)
    assert got == pytest.approx(total / count, rel=1e-4)
    assert not model.get_output_embeddings()._forward_pre_hooks


def test_a_test_prompt_too_long_with_its_exemplars_is_answered_with_fewer_not_silenced(splits):
    """The tuned model's context fits every bare test prompt but not every one with its three
    exemplars: those lose the least similar exemplars (as training and review do), none is answered as
    silence, and the report counts them."""
    from finetune.retrieval import build_index, exemplars_for

    test, train = list(splits.test), list(splits.train)
    index = build_index(train)
    shown = exemplars_for(index, test, 3, context=train)
    new_tokens = 16
    backend = perfect(test)
    widest = max(len(e.prompt_input().plain_text().split()) for e in test)
    longest = max(len(with_exemplars(e.prompt_input(), shown[e.id]).plain_text().split()) for e in test)
    backend.max_context = (widest + longest) // 2 + new_tokens
    assert widest + new_tokens < backend.max_context < longest + new_tokens
    backend.exemplars, backend.exemplar_k = index, 3
    seen = []
    answer = backend.generate
    backend.generate = lambda inputs, **kw: (seen.extend(inputs), answer(inputs, **kw))[1]
    report = evaluate(backend, test, train, base=None, out_dir=None, max_new_tokens=new_tokens, progress=False)
    assert report.too_long == {} and not report.dropped and len(report.examples) == len(test)
    by_user = {i.user: i for i in seen}
    trimmed = 0
    for e in test:
        inp = by_user[e.prompt_input().user]
        assert inp.exemplars == shown[e.id][: len(inp.exemplars)]  # the most similar kept, in order
        assert backend.count_prompt_tokens(inp) + new_tokens <= backend.max_context
        trimmed += len(inp.exemplars) < len(shown[e.id])
    assert trimmed and report.exemplars_trimmed == {"tuned": trimmed}
    assert f"shown fewer exemplars to fit: tuned {trimmed}" in report.table()
    assert report.system("tuned").metrics["review_f1"] == pytest.approx(1.0)
