"""Examples in, training rows out: loading, honest splits, and tokenisation with answer-only labels.

Why each piece is here:
* Splits are by PR and by time (the newest PRs are the test set, the next newest validation), so a
  model is scored on reviews written after everything it learnt from, and a PR's hunks never leak
  across splits.
* Labels are -100 on every prompt token: the model learns to write the review, not to reproduce the
  diff it was shown.
* Examples become TRL's tokenized prompt-completion rows (``prompt_completion_dataset``); packing,
  labels and batches are the trainer's (finetune/train.py).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.files import read_dataset, read_examples
from bot.balance import balance_by_repo
from bot.errors import DataError
from bot.examples import Example
from bot.exemplars import first_fit
from bot.prompt import PROMPT_FORMAT_VERSION, Exemplar, for_model, training_text, with_exemplars
from finetune.config import TrainConfig

IGNORE_INDEX = -100
SQLITE_MAGIC = b"SQLite format 3\x00"


# --------------------------------------------------------------------------- loading


def is_store(path: str | os.PathLike[str]) -> bool:
    """A SQLite file (the dataset store) rather than an examples JSONL."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def load_examples(path: str | os.PathLike[str], fmt: str | None = None) -> list[Example]:
    """All examples from the dataset store (SQLite), an examples JSONL, or (with ``fmt``) a dataset in one
    of bot.datasets' formats (crc, codereviewer, alpaca, ...); de-duplicated by id (the last occurrence
    wins, as a re-harvest would). A malformed JSONL line raises DataError naming file:line; an unknown
    ``fmt`` is a UsageError naming the known ones."""
    name = str(path)
    if not Path(path).exists():
        raise DataError("no such file; pass the dataset store (revbot harvest writes it) or an examples JSONL", name)
    if Path(path).is_dir():
        raise DataError("is a directory; pass the dataset store file or an examples JSONL", name)
    if fmt not in (None, "", "examples"):
        examples = read_dataset(name, fmt).examples
    elif is_store(path):
        from adapters.store import Store

        store = Store(path)
        try:
            examples = list(store.iter_examples())
        finally:
            store.close()
    else:
        examples = list(read_examples(path))
    unique: dict[str, Example] = {}
    for ex in examples:
        unique[ex.id] = ex
    return list(unique.values())


# --------------------------------------------------------------------------- splits


@dataclass
class Splits:
    """Train / validation / test examples; ``time_ordered`` is False when no example had a date and the
    split fell back to a seeded shuffle of PRs."""

    train: list[Example]
    validation: list[Example]
    test: list[Example]
    time_ordered: bool = True
    settings: dict[str, Any] = field(default_factory=dict)

    def items(self) -> list[tuple[str, list[Example]]]:
        return [("train", self.train), ("validation", self.validation), ("test", self.test)]

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: split_counts(part) for name, part in self.items()}

    def ids(self) -> dict[str, list[str]]:
        return {name: sorted(ex.id for ex in part) for name, part in self.items()}


def split_counts(examples: Sequence[Example]) -> dict[str, int]:
    negatives = sum(1 for ex in examples if ex.is_negative)
    return {
        "examples": len(examples),
        "prs": len({(ex.repo, ex.pr) for ex in examples}),
        "positive": len(examples) - negatives,
        "negative": negatives,
    }


def parse_time(text: str) -> datetime | None:
    """An ISO-8601 timestamp (GitHub's ``2024-05-01T10:00:00Z`` and friends) as an aware datetime."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def split_as_configured(examples: Iterable[Example], config: TrainConfig) -> Splits:
    """``split_examples`` with a training configuration's seed, fractions, minimums and repository cap
    (what `revbot train` and `revbot retrain` both split by)."""
    return split_examples(
        examples,
        config.seed,
        test_fraction=config.test_fraction,
        val_fraction=config.val_fraction,
        min_train=config.min_train,
        min_val=config.min_val,
        min_test=config.min_test,
        max_repo_share=config.max_repo_share,
    )


def _seeded_key(seed: int, repo: str, pr: int) -> str:
    return hashlib.sha256(f"{seed}\0{repo}\0{pr}".encode()).hexdigest()


def split_examples(
    examples: Iterable[Example],
    seed: int = 0,
    *,
    test_fraction: float = 0.1,
    val_fraction: float = 0.1,
    min_train: int = 10,
    min_val: int = 2,
    min_test: int = 2,
    max_repo_share: float | None = None,
) -> Splits:
    """Split by PR and by time: the newest PRs form the test set, the next newest validation, the
    rest training. A PR's time is its earliest example; PRs without dates count as the oldest and
    ties are broken by a hash of the seed, so the split is deterministic given the seed.

    Each held-out split takes whole PRs, newest first, until it holds ``max(min, fraction × total)``
    examples. A dataset too small for the minimums raises DataError with the counts per split.
    ``max_repo_share``: training examples balanced across repositories (bot.balance), so no
    repository holds more than that share of them; validation and test are left as they are.
    """
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0 <= value < 1:
            raise DataError(f"{name} must be in [0, 1), got {value}")
    if test_fraction + val_fraction >= 1:
        raise DataError(f"test_fraction + val_fraction must be below 1, got {test_fraction + val_fraction:g}")
    for name, value in (("min_train", min_train), ("min_val", min_val), ("min_test", min_test)):
        if value < 0:
            raise DataError(f"{name} must be >= 0, got {value}")
    examples = list(examples)
    by_pr: dict[tuple[str, int], list[Example]] = defaultdict(list)
    for ex in examples:
        by_pr[(ex.repo, ex.pr)].append(ex)
    dated = 0

    def pr_key(key: tuple[str, int]) -> tuple[int, datetime, str]:
        nonlocal dated
        times = [t for ex in by_pr[key] if (t := parse_time(ex.created_at)) is not None]
        if times:
            dated += 1
            return (1, min(times), _seeded_key(seed, *key))
        return (0, datetime.min.replace(tzinfo=UTC), _seeded_key(seed, *key))

    newest_first = sorted(by_pr, key=pr_key, reverse=True)
    total = len(examples)
    want_test = max(min_test, math.ceil(test_fraction * total))
    want_val = max(min_val, math.ceil(val_fraction * total))
    parts: list[list[Example]] = [[], [], []]  # test, validation, train
    stage = 0
    for key in newest_first:
        while stage < 2 and len(parts[stage]) >= (want_test, want_val)[stage]:
            stage += 1
        parts[stage].extend(sorted(by_pr[key], key=lambda e: e.id))
    test, validation, train = parts
    balanced = balance_by_repo(train, max_repo_share, seed)  # a no-op without max_repo_share
    train = balanced.examples
    splits = Splits(
        train,
        validation,
        test,
        time_ordered=dated > 0,
        settings={
            "seed": seed,
            "test_fraction": test_fraction,
            "val_fraction": val_fraction,
            "min_train": min_train,
            "min_val": min_val,
            "min_test": min_test,
            **({"max_repo_share": max_repo_share, "balance": balanced.to_dict()} if max_repo_share else {}),
        },
    )
    if len(train) < min_train or len(validation) < min_val or len(test) < min_test:
        counts = ", ".join(f"{name}={len(part)}" for name, part in splits.items())
        raise DataError(
            f"dataset too small: {total} examples in {len(by_pr)} PRs split into {counts}; need at least "
            f"train={min_train}, validation={min_val}, test={min_test} (whole PRs go to one split). Harvest "
            f"more reviews, or lower --test-fraction/--val-fraction and the minimums"
        )
    return splits


# --------------------------------------------------------------------------- tokenisation


@dataclass(frozen=True)
class Encoded:
    """One example as token ids; the first ``n_prompt`` get no loss. ``exemplars_dropped``: how many of
    its exemplars were left out for it to fit a row (``encode_examples``)."""

    example_id: str
    ids: tuple[int, ...]
    n_prompt: int
    exemplars_dropped: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_answer(self) -> int:
        return len(self.ids) - self.n_prompt

    def labels(self) -> list[int]:
        return [IGNORE_INDEX] * self.n_prompt + list(self.ids[self.n_prompt :])


LAST_LINE_SHARE = 0.9


def answer_format_for(examples: Sequence[Example]) -> int:
    """The prompt format to train on these examples: 3 (the answer names its line by label) when at
    least LAST_LINE_SHARE of their comments sit on their hunk's last line, else the current format
    (the answer quotes its line).

    The two shapes of review data want different answers. A forge's comment context ends at the
    commented line (GitHub's ``diff_hunk``; crc-py and CodeReviewer-style datasets): the line is always
    the last, a label says so in one token, and on crc-py format 3 wrote far better comments than
    quoting (review F1 0.089 against 0.026, ROUGE-L 8.85 against 4.17, bench_quality). Hunks of a
    whole pull request (what ``revbot harvest`` builds) put comments anywhere: a small model finds the
    label of the line that shows a habit badly and quotes that line well (the demo: review F1 0.952
    against 0.095). Measured on those two data sets only; docs/evaluation.md."""
    on_last = total = 0
    for ex in examples:
        if not ex.comments:
            continue
        lines = ex.parsed_hunk().lines
        last = (lines[-1].number, lines[-1].side) if lines else None
        for c in ex.comments:
            total += 1
            on_last += (c.line, c.side) == last
    if total and on_last >= LAST_LINE_SHARE * total:
        return 3
    return PROMPT_FORMAT_VERSION


def encode_example(
    example: Example, tokenizer: Any, exemplars: Sequence[Exemplar] = (), version: int = PROMPT_FORMAT_VERSION
) -> Encoded:
    """Prompt and answer tokenised separately (the answer ends with the tokenizer's eos), exactly as
    ``adapters.model`` encodes prompts: chat templates carry their own special tokens, plain prompts get
    the tokenizer's (a leading <s>, say). ``exemplars``: the team's past reviews shown before the hunk
    (format v3, chosen leak-free by ``finetune.retrieval``)."""
    inp = for_model(with_exemplars(example.prompt_input(), exemplars), version)
    prompt, answer = training_text(inp, example.comments, tokenizer, example.parsed_hunk(), version)
    chat = bool(getattr(tokenizer, "chat_template", None))
    prompt_ids = list(tokenizer(prompt, add_special_tokens=not chat)["input_ids"])
    answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        answer_ids.append(int(tokenizer.eos_token_id))
    return Encoded(example.id, tuple(prompt_ids + answer_ids), len(prompt_ids))


def encode_examples(
    examples: Sequence[Example],
    tokenizer: Any,
    max_length: int,
    exemplars: Mapping[str, Sequence[Exemplar]] | None = None,
    version: int = PROMPT_FORMAT_VERSION,
) -> tuple[list[Encoded], list[str]]:
    """Encoded examples that fit ``max_length``, and the ids of those that do not (reported, not
    truncated: a cut prompt or answer would teach the model a format it never sees at review time).
    ``exemplars``: example id -> its exemplars, best first. An example too long with its exemplars
    loses the least similar ones until it fits (``bot.exemplars.first_fit``, the rule evaluation and
    review follow; counted in ``Encoded.exemplars_dropped``); only one too long without any is left out."""
    kept: list[Encoded] = []
    too_long: list[str] = []
    for ex in examples:

        def attempt(shown: tuple[Exemplar, ...], ex: Example = ex) -> Encoded | None:
            enc = encode_example(ex, tokenizer, shown, version)
            return enc if len(enc) <= max_length else None

        found = first_fit((exemplars or {}).get(ex.id, ()), attempt)
        if found is None:
            too_long.append(ex.id)
        else:
            enc, dropped = found
            kept.append(replace(enc, exemplars_dropped=dropped) if dropped else enc)
    return kept, too_long


# --------------------------------------------------------------------------- the trainer's dataset


def prompt_completion_dataset(encoded: Sequence[Encoded]) -> Any:
    """Encoded examples as TRL's tokenized prompt-completion dataset: ``input_ids`` and a
    ``completion_mask`` that is 1 on the answer. SFTTrainer turns the mask into -100 labels on the
    prompt (``completion_only_loss``), packs the rows and batches them; it does not tokenise again, so
    the tokens are exactly the ones review will feed the model."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "input_ids": [list(e.ids) for e in encoded],
            "completion_mask": [[0] * e.n_prompt + [1] * e.n_answer for e in encoded],
        }
    )
