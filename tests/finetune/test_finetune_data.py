"""Splits by PR and time, answer-only labels, packing and loading examples."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bot.errors import DataError
from bot.examples import write_examples
from bot.prompt import render_answer
from finetune.data import (
    IGNORE_INDEX, Encoded, encode_example, encode_examples, load_examples, make_batches, pack_rows, padding_share,
    register_dataset_reader, split_examples,
)
from tests.finetune.helpers import crc_examples, synthetic_examples


def _pr_time(examples):
    return {ex.pr: ex.created_at for ex in examples}


def test_split_holds_out_the_newest_prs_and_never_splits_a_pr():
    examples = synthetic_examples(n_prs=40, per_pr=3)
    splits = split_examples(examples, seed=0, test_fraction=0.1, val_fraction=0.1)
    prs = {name: {ex.pr for ex in part} for name, part in splits.items()}
    assert not (prs["train"] & prs["validation"]) and not (prs["train"] & prs["test"]) \
        and not (prs["validation"] & prs["test"])
    assert sum(len(p) for _, p in splits.items()) == len(examples)
    # time order: every test PR is newer than every validation PR, which is newer than every train PR
    assert min(prs["test"]) > max(prs["validation"]) > max(prs["train"])
    assert len(splits.test) >= 12 and len(splits.validation) >= 12  # ceil(0.1 * 120), whole PRs
    assert splits.time_ordered
    counts = splits.counts()
    assert counts["test"]["prs"] == len(prs["test"])
    assert counts["train"]["positive"] + counts["train"]["negative"] == len(splits.train)


def test_split_is_deterministic_and_seed_only_breaks_ties():
    examples = synthetic_examples(n_prs=30)
    a = split_examples(examples, seed=3)
    b = split_examples(list(reversed(examples)), seed=3)
    assert a.ids() == b.ids()
    # without dates the seed decides which PRs are held out
    undated = [replace(ex, created_at="") for ex in examples]
    s1, s2 = split_examples(undated, seed=1), split_examples(undated, seed=2)
    assert not s1.time_ordered
    assert s1.ids() == split_examples(undated, seed=1).ids()
    assert s1.ids()["test"] != s2.ids()["test"]


def test_undated_prs_count_as_oldest():
    examples = synthetic_examples(n_prs=30)
    examples = [replace(ex, created_at="") if ex.pr == 30 else ex for ex in examples]
    splits = split_examples(examples, seed=0)
    assert 30 in {ex.pr for ex in splits.train}


def test_too_small_dataset_names_the_counts_per_split():
    examples = synthetic_examples(n_prs=4)
    with pytest.raises(DataError) as err:
        split_examples(examples, seed=0, min_train=10, min_val=2, min_test=2)
    message = str(err.value)
    assert "8 examples in 4 PRs" in message
    assert "train=4, validation=2, test=2" in message and "need at least train=10" in message


def test_split_of_real_reviews_puts_the_newest_prs_last(crc_path):
    from finetune.data import parse_time

    examples = crc_examples(crc_path, limit=300)
    splits = split_examples(examples, seed=0)
    first = {}
    for ex in examples:
        first[(ex.repo, ex.pr)] = min(first.get((ex.repo, ex.pr), ex.created_at), ex.created_at)
    start = lambda part: [parse_time(first[(e.repo, e.pr)]) for e in part]
    assert max(start(splits.train)) <= min(start(splits.validation))
    assert max(start(splits.validation)) <= min(start(splits.test))
    assert splits.counts()["test"]["negative"] > 0  # the helper cuts negatives from real hunks too


def test_split_rejects_bad_fractions():
    with pytest.raises(DataError, match="below 1"):
        split_examples(synthetic_examples(), test_fraction=0.6, val_fraction=0.5)


@pytest.fixture(scope="module")
def tokenizers(tiny_llama, tiny_qwen):
    from transformers import AutoTokenizer

    return {"llama": AutoTokenizer.from_pretrained(tiny_llama), "qwen": AutoTokenizer.from_pretrained(tiny_qwen)}


@pytest.mark.parametrize("arch", ["llama", "qwen"])
def test_labels_cover_the_answer_only(tokenizers, arch):
    tok = tokenizers[arch]
    ex = synthetic_examples(n_prs=1, per_pr=1)[0]
    assert ex.comments
    enc = encode_example(ex, tok)
    labels = enc.labels()
    assert labels[:enc.n_prompt] == [IGNORE_INDEX] * enc.n_prompt
    assert labels[enc.n_prompt:] == list(enc.ids[enc.n_prompt:])
    answer_ids = list(enc.ids[enc.n_prompt:])
    assert answer_ids[-1] == tok.eos_token_id
    assert tok.decode(answer_ids[:-1]) == render_answer(ex.comments)
    assert "Review" in tok.decode(enc.ids[:enc.n_prompt]) or "assistant" in tok.decode(enc.ids[:enc.n_prompt])
    if arch == "llama":  # plain prompts start with the tokenizer's <s>; chat templates bring their own markers
        assert enc.ids[0] == tok.bos_token_id
    else:
        assert tok.decode(enc.ids[:enc.n_prompt]).startswith("<|im_start|>system")


def test_examples_longer_than_max_length_are_skipped_and_reported(tokenizers):
    examples = synthetic_examples(n_prs=3, per_pr=1)
    longest = max(len(encode_example(e, tokenizers["llama"])) for e in examples)
    kept, too_long = encode_examples(examples, tokenizers["llama"], longest - 1)
    assert too_long and len(kept) + len(too_long) == 3
    assert all(len(e) <= longest - 1 for e in kept)


def _enc(name: str, n: int, prompt: int = 2) -> Encoded:
    return Encoded(name, tuple(range(10, 10 + n)), prompt)


def test_packing_fills_rows_without_exceeding_max_length():
    items = [_enc(f"e{i}", n) for i, n in enumerate([9, 7, 6, 5, 4, 3, 2, 1])]
    rows = pack_rows(items, 10)
    assert sorted(e.example_id for row in rows for e in row) == sorted(e.example_id for e in items)
    assert all(sum(len(e) for e in row) <= 10 for row in rows)
    assert len(rows) == 4  # 37 tokens need at least 4 rows of 10
    assert pack_rows(list(reversed(items)), 10) == rows  # input order does not matter


def test_packed_batch_restarts_positions_and_masks_padding():
    batch = make_batches([_enc("a", 5, 3), _enc("b", 4, 1), _enc("c", 6, 2)], batch_size=2, max_length=10,
                         packed=True, seed=0, epoch=0, shuffle=False)[0]
    t = batch.tensors(pad_id=0)
    assert set(t) == {"input_ids", "labels", "position_ids"}  # no attention mask: positions delimit examples
    assert t["input_ids"].shape == (2, 10)
    row_a = t["position_ids"][0].tolist()
    assert row_a == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]  # c (6 tokens) then b (4 tokens)
    labels = t["labels"][0].tolist()
    assert labels[:2] == [IGNORE_INDEX] * 2 and labels[2:6] == [12, 13, 14, 15]
    assert labels[6] == IGNORE_INDEX and labels[7:10] == [11, 12, 13]
    row_b = t["position_ids"][1].tolist()  # a (5 tokens) then 5 padding positions of their own
    assert row_b == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert t["labels"][1].tolist()[5:] == [IGNORE_INDEX] * 5
    assert batch.n_pad == 5 and batch.n_supervised == 4 + 3 + 2
    assert padding_share([batch]) == pytest.approx(5 / 20)


def test_unpacked_batches_group_by_length_and_mask_padding():
    items = [_enc(f"e{i}", n) for i, n in enumerate([3, 30, 4, 31, 5, 29])]
    batches = make_batches(items, batch_size=3, max_length=64, packed=False, seed=0, epoch=0)
    for b in batches:
        lengths = [len(row[0]) for row in b.rows]
        assert max(lengths) - min(lengths) <= 2  # short with short, long with long
    t = batches[0].tensors(pad_id=0)
    assert "attention_mask" in t and "position_ids" not in t
    assert t["attention_mask"].sum().item() == sum(len(r[0]) for r in batches[0].rows)


def test_batch_order_depends_on_seed_and_epoch_only():
    items = [_enc(f"e{i}", 3 + i % 5) for i in range(40)]
    order = lambda seed, epoch: [[e.example_id for e in row] for b in make_batches(
        items, 2, 8, packed=True, seed=seed, epoch=epoch) for row in b.rows]
    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)


def test_load_examples_reports_the_bad_line(tmp_path):
    path = tmp_path / "ex.jsonl"
    write_examples(path, synthetic_examples(n_prs=2, per_pr=1))
    with open(path, "a") as fh:
        fh.write('{"id": "x", "repo": "r", "pr": "seven", "path": "p", "hunk": "@@ -1 +1 @@\\n+x"}\n')
    with pytest.raises(DataError, match=r"ex\.jsonl:3: field 'pr' must be an integer"):
        load_examples(path)
    with pytest.raises(DataError, match="no such file"):
        load_examples(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="directory"):
        load_examples(tmp_path)


def test_load_examples_from_the_store_and_deduplicated(tmp_path):
    from bot.store import Store

    examples = synthetic_examples(n_prs=3)
    store = Store(tmp_path / "revbot.db")
    store.upsert_examples(examples)
    store.close()
    got = load_examples(tmp_path / "revbot.db")
    assert sorted(e.id for e in got) == sorted(e.id for e in examples)
    path = tmp_path / "dupes.jsonl"
    changed = replace(examples[0], comments=[])
    path.write_text("\n".join(json.dumps(e.to_dict()) for e in [examples[0], changed]) + "\n")
    (only,) = load_examples(path)
    assert only.is_negative  # the later record wins


def test_other_formats_need_a_registered_reader(tmp_path, monkeypatch):
    import finetune.data as data

    path = tmp_path / "crc.jsonl"
    path.write_text("{}\n")
    monkeypatch.setattr(data, "_READERS", [])
    with pytest.raises(DataError, match="revbot dataset import"):
        load_examples(path, "crc")
    seen = []

    def reader(name, fmt):
        seen.append((name, fmt))
        return synthetic_examples(n_prs=1, per_pr=1)

    register_dataset_reader(reader)
    assert len(load_examples(path, "crc")) == 1 and seen == [(str(path), "crc")]
