"""Splits by PR and time, answer-only labels, the trainer's dataset, and loading examples."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from adapters.files import write_examples
from bot.errors import DataError, UsageError
from bot.prompt import render_answer
from finetune.data import (
    IGNORE_INDEX,
    encode_example,
    encode_examples,
    load_examples,
    prompt_completion_dataset,
    split_examples,
)
from tests.finetune.helpers import crc_examples, synthetic_examples


def _pr_time(examples):
    return {ex.pr: ex.created_at for ex in examples}


def test_split_holds_out_the_newest_prs_and_never_splits_a_pr():
    examples = synthetic_examples(n_prs=40, per_pr=3)
    splits = split_examples(examples, seed=0, test_fraction=0.1, val_fraction=0.1)
    prs = {name: {ex.pr for ex in part} for name, part in splits.items()}
    assert (
        not (prs["train"] & prs["validation"])
        and not (prs["train"] & prs["test"])
        and not (prs["validation"] & prs["test"])
    )
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

    def start(part):
        return [parse_time(first[(e.repo, e.pr)]) for e in part]

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
    assert labels[: enc.n_prompt] == [IGNORE_INDEX] * enc.n_prompt
    assert labels[enc.n_prompt :] == list(enc.ids[enc.n_prompt :])
    answer_ids = list(enc.ids[enc.n_prompt :])
    assert answer_ids[-1] == tok.eos_token_id
    assert tok.decode(answer_ids[:-1]) == render_answer(ex.comments, ex.parsed_hunk())
    assert "Review" in tok.decode(enc.ids[: enc.n_prompt]) or "assistant" in tok.decode(enc.ids[: enc.n_prompt])
    if arch == "llama":  # plain prompts start with the tokenizer's <s>; chat templates bring their own markers
        assert enc.ids[0] == tok.bos_token_id
    else:
        assert tok.decode(enc.ids[: enc.n_prompt]).startswith("<|im_start|>system")


def test_examples_longer_than_max_length_are_skipped_and_reported(tokenizers):
    examples = synthetic_examples(n_prs=3, per_pr=1)
    longest = max(len(encode_example(e, tokenizers["llama"])) for e in examples)
    kept, too_long = encode_examples(examples, tokenizers["llama"], longest - 1)
    assert too_long and len(kept) + len(too_long) == 3
    assert all(len(e) <= longest - 1 for e in kept)


def test_an_example_too_long_with_its_exemplars_loses_the_least_similar_instead_of_being_skipped(tokenizers):
    from bot.prompt import Exemplar

    tok = tokenizers["llama"]
    fits, trimmed, bare_too_long = synthetic_examples(n_prs=3, per_pr=1)
    shown = tuple(Exemplar(f"src/old_{n}.py", "R3 +" + "value = table[key] " * 8, f"R3: note {n}") for n in "abc")
    with_one = len(encode_example(trimmed, tok, shown[:1]))
    limit = with_one + 1
    assert len(encode_example(trimmed, tok, shown[:2])) > limit  # all three, or two, would not fit a row
    assert len(encode_example(fits, tok, ())) <= limit
    bare_too_long = replace(bare_too_long, hunk=bare_too_long.hunk + "  # " + "spelled out at length " * 60)
    assert len(encode_example(bare_too_long, tok, ())) > limit
    kept, too_long = encode_examples(
        [fits, trimmed, bare_too_long], tok, limit, {trimmed.id: shown, bare_too_long.id: shown}
    )
    assert too_long == [bare_too_long.id]  # skipped only because it does not fit even without exemplars
    by_id = {e.example_id: e for e in kept}
    assert by_id[fits.id].exemplars_dropped == 0
    assert by_id[trimmed.id].exemplars_dropped == 2  # the two least similar went, the most similar stayed
    assert by_id[trimmed.id].ids == encode_example(trimmed, tok, shown[:1]).ids
    assert all(len(e) <= limit for e in kept)


def test_the_trainer_packs_whole_examples_with_loss_on_their_answers(tiny_llama, tokenizers, tmp_path):
    """What the trainer makes of prompt_completion_dataset: best-fit-decreasing rows of whole examples
    (none cut, none lost), -100 on every prompt token, and padding-free batches whose position ids
    restart at every example (what the per-example attention splits on)."""
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    tok = tokenizers["llama"]
    encoded, _ = encode_examples(synthetic_examples(n_prs=6), tok, 512)
    row = 3 * max(len(e) for e in encoded)
    args = SFTConfig(
        output_dir=str(tmp_path),
        packing=True,
        packing_strategy="bfd",
        max_length=row,
        completion_only_loss=True,
        per_device_train_batch_size=2,
        use_cpu=True,
        bf16=False,
        report_to="none",
        activation_checkpointing=False,
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_llama),
        args=args,
        train_dataset=prompt_completion_dataset(encoded),
        processing_class=tok,
    )
    by_ids = {e.ids: e for e in encoded}
    seen = []
    for packed in trainer.train_dataset:
        assert len(packed["input_ids"]) <= row and sum(packed["seq_lengths"]) == len(packed["input_ids"])
        start = 0
        for n in packed["seq_lengths"]:
            ids = tuple(packed["input_ids"][start : start + n])
            assert packed["labels"][start : start + n] == by_ids[ids].labels()  # -100 on the prompt, ids on the answer
            seen.append(ids)
            start += n
    assert sorted(seen) == sorted(by_ids)  # every example once, whole
    assert len(trainer.train_dataset) < len(encoded)  # and several share a row
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1  # the batch's rows flattened into one
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert starts == batch["cu_seq_lens_q"][:-1].tolist() and len(starts) > 2


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
    from adapters.store import Store

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


def test_other_formats_are_read_through_the_dataset_registry(tmp_path):
    """No reader to register first: finetune reads crc, alpaca, ... through bot.datasets itself."""
    path = tmp_path / "crc.jsonl"
    row = {
        "code": "@@ -1,2 +1,2 @@\n import os\n-x = 1\n+x = 2",
        "comment": "Why two?",
        "line_number": 2,
        "file_path": "m.py",
        "pr_number": 7,
        "repo": "o/r",
        "comment_id": 11,
        "comment_created_at": "2025-01-01T00:00:00Z",
    }
    path.write_text(json.dumps(row) + "\n")
    (example,) = load_examples(path, "crc")
    assert (example.repo, example.pr, example.path, example.source) == ("o/r", 7, "m.py", "import:crc")
    assert [c.body for c in example.comments] == ["Why two?"]
    with pytest.raises(UsageError, match="unknown import format 'xml'; choose one of crc, codereviewer"):
        load_examples(path, "xml")


def test_the_answer_form_follows_where_the_data_puts_its_comments():
    """Comments on their hunk's last line (a forge's comment context): labels, format 3. Comments
    spread over whole hunks (what `revbot harvest` builds): quotes, the current format. Training
    renders the answer in that form, with that format's system text and exemplar answers."""
    from bot.examples import ExampleComment
    from bot.prompt import PROMPT_FORMAT_VERSION, SYSTEM_PROMPTS
    from finetune.data import answer_format_for, encode_example

    at_end = synthetic_examples()
    assert answer_format_for(at_end) == 3
    spread = [
        replace(ex, comments=[ExampleComment(ex.comments[0].line - 1, "RIGHT", "Earlier line.")]) if ex.comments else ex
        for ex in at_end
    ]
    assert answer_format_for(spread) == PROMPT_FORMAT_VERSION == 4
    assert answer_format_for([ex for ex in at_end if not ex.comments]) == PROMPT_FORMAT_VERSION  # nothing to go by

    class Chars:  # a character tokenizer: the encoded text can be read back exactly
        chat_template = None
        eos_token_id = None

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) for c in text]}

    ex = next(e for e in spread if e.comments)
    for version, answer_start in ((3, f"R{ex.comments[0].line}: "), (4, ">>> ")):
        enc = encode_example(ex, Chars(), (), version)
        prompt = "".join(map(chr, enc.ids[: enc.n_prompt]))
        answer = "".join(map(chr, enc.ids[enc.n_prompt :]))
        assert prompt.startswith(SYSTEM_PROMPTS[version]) and answer.startswith(answer_start)
