"""Exemplars for training and evaluation (prompt format v3), leak-free.

The index is built from the training split only (it is what a version saves and serves with).
Every example, in every split, gets the k most similar reviews of EARLIER pull requests, never of its
own: a training example from the oldest pull requests gets none, a test example any training review
(the split is by time). ``k`` = 0 turns exemplars off (the "no retrieval" recipe). A prompt too long with its exemplars
loses the least similar ones until it fits (``bot.exemplars.first_fit``): a training row in
``finetune.data.encode_examples``, an evaluation or calibration prompt in ``fit_to_context``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.examples import Example
from bot.exemplars import ExemplarIndex, Fitted, fit_prompt, pr_times, query_of
from bot.prompt import Exemplar, PromptInput, with_exemplars


def build_index(train: Sequence[Example]) -> ExemplarIndex:
    return ExemplarIndex.from_examples(list(train))


def exemplars_for(
    index: ExemplarIndex | None, examples: Sequence[Example], k: int, *, context: Sequence[Example] = ()
) -> dict[str, tuple[Exemplar, ...]]:
    """example id -> its leak-free exemplars. A pull request's time is its earliest example among
    ``examples`` and ``context`` (the other splits), so each is dated as the split dated it."""
    if index is None or k <= 0 or not len(index):
        return {}
    times = pr_times([*context, *examples])
    return {ex.id: index.top(query_of(ex, times), k) for ex in examples}


def prompt_inputs(examples: Sequence[Example], exemplars: dict[str, tuple[Exemplar, ...]]) -> list[PromptInput]:
    """Each example's prompt with its exemplars (none where it has none)."""
    return [with_exemplars(ex.prompt_input(), exemplars.get(ex.id, ())) for ex in examples]


def fit_to_context(backend: Any, inputs: Sequence[PromptInput], max_new_tokens: int) -> list[Fitted]:
    """Each prompt with as many of its exemplars as fit the backend's context beside
    ``max_new_tokens`` answer tokens, and the row length its version was trained at
    (``bot.exemplars.fit_prompt``: the rule training and review follow); as they are when the
    backend states no context."""
    limit = getattr(backend, "max_context", None)
    if not limit:
        return [Fitted(i, 0, 0, True) for i in inputs]
    trained = getattr(backend, "exemplar_max_length", None)
    return [fit_prompt(i, backend.count_prompt_tokens, limit - max_new_tokens, trained) for i in inputs]
