"""Decoding helpers of the local backend, kept apart from its generate loop: scoring answer starts
under the model (constrained anchors, ``bot.anchoring``) and stopping degenerate answers early.

* ``score_continuations``: the probability of each candidate continuation of one prompt, teacher
  forced. The prompt runs once; its KV cache is repeated for the candidates, which are a few tokens
  each (``R``, digits, ``:``), so scoring 40 labels costs little more than one prompt. With a
  ``PrefixCache`` the prompt's pass starts from the shared prefix's cached states (a copy): only the
  prompt's own tokens run through the model.
* ``DegenerationGuard``: a stopping criterion that ends a row as soon as its answer degenerates
  (``bot.prompt.degenerate_at``: anchors without bodies, repeated comments, too many comments); a
  row whose answer was started for it (a chosen anchor) stops at the next comment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from bot.prompt import ANSWER_END, MAX_COMMENTS_PER_HUNK, degenerate_at

if TYPE_CHECKING:
    from adapters.prefix_cache import PrefixCache


def score_continuations(
    model: Any,
    prompt_ids: Sequence[int],
    continuations: Sequence[Sequence[int]],
    prefix_cache: PrefixCache | None = None,
) -> list[float]:
    """P(continuation | prompt) for each continuation (token ids, at least one each), in order."""
    return score_with_states(model, prompt_ids, continuations, prefix_cache)[0]


def score_with_states(
    model: Any,
    prompt_ids: Sequence[int],
    continuations: Sequence[Sequence[int]],
    prefix_cache: PrefixCache | None = None,
) -> tuple[list[float], Any]:
    """``score_continuations``, and the prompt's KV cache (exactly the prompt's tokens), for a
    generation that continues the same prompt (``adapters.prefix_cache.PromptStates``)."""
    import torch

    with torch.inference_mode():
        cache, first = _prompt_pass(model, prompt_ids, prefix_cache)
        return _tree_scores(model, cache, first, len(prompt_ids), continuations), cache


def _prompt_pass(model: Any, prompt_ids: Sequence[int], prefix_cache: PrefixCache | None = None) -> tuple[Any, Any]:
    """The prompt's KV cache and the log-probabilities of the answer's first token. When
    ``prefix_cache`` remembers a prefix of the prompt, the pass starts from a copy of its states and
    runs only the rest (positions follow from the cache's length)."""
    import torch

    started = prefix_cache.start(prompt_ids) if prefix_cache is not None else None
    cache, n = started if started is not None else (None, 0)
    prompt = torch.tensor([list(prompt_ids[n:])], dtype=torch.long, device=model.device)
    out = model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return out.past_key_values, torch.log_softmax(out.logits[0, -1].float(), dim=-1)


def _tree_scores(model: Any, cache: Any, first: Any, p: int, continuations: Sequence[Sequence[int]]) -> list[float]:
    """Every distinct proper prefix of the continuations in one pass, as a token tree: each node sits
    at its depth's position and attends to the prompt and its own ancestors only (a custom 4D mask),
    so 40 labels of 4 tokens cost one short pass instead of 40 copies of the prompt. The cache is
    rewound to the prompt afterwards."""
    import torch

    nodes, index = _prefix_tree(continuations)
    logp = None
    if nodes:
        n, device = len(nodes), model.device
        mask = torch.zeros((1, 1, n, p + n), dtype=torch.bool)
        mask[0, 0, :, :p] = True
        for row, prefix in enumerate(nodes):
            for depth in range(1, len(prefix) + 1):
                mask[0, 0, row, p + index[prefix[:depth]]] = True
        tree = model(
            input_ids=torch.tensor([[prefix[-1] for prefix in nodes]], dtype=torch.long, device=device),
            position_ids=torch.tensor([[p + len(prefix) - 1 for prefix in nodes]], device=device),
            attention_mask=mask.to(device),
            past_key_values=cache,
            use_cache=True,
        )
        logp = torch.log_softmax(tree.logits[0].float(), dim=-1)
        _rewind(cache, p)
    scores = []
    for c in continuations:
        total = float(first[c[0]])
        for j in range(1, len(c)):
            total += float(logp[index[tuple(c[:j])], c[j]])  # type: ignore[index]
        scores.append(math.exp(total))
    return scores


def _rewind(cache: Any, length: int) -> None:
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


@dataclass
class Continuation:
    """One greedy continuation of a prompt (after ``prefix``); the fields of a Generation."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass
class Analysis:
    """One prompt, one pass: the probability of each candidate answer start, the bodies written after
    the chosen candidates (candidate index -> continuation), and the free-running answer if asked."""

    probabilities: list[float]
    bodies: dict[int, Continuation] = field(default_factory=dict)
    free: Continuation | None = None


def analyse_prompt(
    model: Any,
    decode: Callable[[list[int]], str],
    eos_ids: Sequence[int],
    prompt_ids: Sequence[int],
    candidates: Sequence[Sequence[int]],
    choose: Callable[[list[float]], list[int]],
    *,
    prefixes: Sequence[str],
    max_new_tokens: int,
    free: bool,
    prefix_cache: PrefixCache | None = None,
) -> Analysis:
    """Score the candidates, write a body after each chosen one and, with ``free``, the answer the
    model writes on its own, all from ONE pass over the prompt (its KV cache, rewound after each
    continuation; started from the shared prefix's cached states when ``prefix_cache`` holds them),
    so the scores, every body and the free answer cost one prompt's work."""
    import torch

    p = len(prompt_ids)
    with torch.inference_mode():
        cache, first = _prompt_pass(model, prompt_ids, prefix_cache)
        analysis = Analysis(_tree_scores(model, cache, first, p, candidates))
        for i in choose(analysis.probabilities):
            analysis.bodies[i] = _greedy(
                model, decode, eos_ids, cache, p, list(candidates[i]), prefixes[i], max_new_tokens
            )
        if free:
            analysis.free = _greedy(model, decode, eos_ids, cache, p, [], "", max_new_tokens, first)
    return analysis


def _greedy(
    model: Any,
    decode: Callable[[list[int]], str],
    eos_ids: Sequence[int],
    cache: Any,
    p: int,
    forced: list[int],
    prefix: str,
    max_new_tokens: int,
    first: Any = None,
) -> Continuation:
    """Greedy decoding after the cached prompt and the ``forced`` tokens (whose text is ``prefix``):
    stops at the answer's end marker, an end-of-sequence token or a degenerate line (as the batched
    path does), then rewinds the cache to the prompt."""
    import torch

    device = model.device
    generated: list[int] = []
    reason = "length"
    logits = first
    if forced:
        out = model(
            input_ids=torch.tensor([forced], device=device),
            position_ids=torch.arange(p, p + len(forced), device=device).unsqueeze(0),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[0, -1]
    limit = max(0, min(max_new_tokens, model.config.max_position_embeddings - p - len(forced)))
    for step in range(limit):
        token = int(torch.argmax(logits))
        if token in eos_ids:
            reason = "stop"
            break
        generated.append(token)
        text = decode(generated)
        if find_answer_end(text) is not None or (
            "\n" in decode([token]) and degenerate_at(prefix + text, 1 if prefix else MAX_COMMENTS_PER_HUNK) is not None
        ):
            reason = "stop"
            break
        if step + 1 == limit:
            break
        position = p + len(forced) + len(generated) - 1
        out = model(
            input_ids=torch.tensor([[token]], device=device),
            position_ids=torch.tensor([[position]], device=device),
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[0, -1]
    _rewind(cache, p)
    text = trim_degenerate(trim_answer(decode(generated))[0], prefix)
    return Continuation(text, p + len(forced), len(generated), reason)


def _prefix_tree(continuations: Sequence[Sequence[int]]) -> tuple[list[tuple[int, ...]], dict[tuple[int, ...], int]]:
    """The distinct proper prefixes of the continuations, parents first, and each one's row."""
    nodes: list[tuple[int, ...]] = []
    index: dict[tuple[int, ...], int] = {}
    for c in continuations:
        for j in range(1, len(c)):
            prefix = tuple(int(t) for t in c[:j])
            if prefix not in index:
                index[prefix] = len(nodes)
                nodes.append(prefix)
    return nodes, index


def find_answer_end(text: str) -> int | None:
    """Index of the first ANSWER_END that starts a line, or None (as adapters.model's)."""
    pos = 0
    while (idx := text.find(ANSWER_END, pos)) >= 0:
        if idx == 0 or text[idx - 1] == "\n":
            return idx
        pos = idx + 1
    return None


def trim_answer(text: str) -> tuple[str, bool]:
    idx = find_answer_end(text)
    return (text, False) if idx is None else (text[:idx], True)


def trim_degenerate(text: str, prefix: str = "") -> str:
    """``text`` (generated after ``prefix``) without its degenerate tail, if it has one."""
    cut = degenerate_at(prefix + text + "\n", 1 if prefix else MAX_COMMENTS_PER_HUNK)
    return text if cut is None else text[: max(0, cut - len(prefix))]


class DegenerationGuard:
    """Stops each row of a batch once its answer degenerates; ``cut[i]`` is True for a row it stopped.
    Looks only when the newest token holds a newline (a line is complete), so it costs little."""

    def __init__(self, decode: Callable[[list[int]], str], prompt_len: int, prefixes: Sequence[str]):
        self.decode, self.prompt_len, self.prefixes = decode, prompt_len, list(prefixes)
        self.cut = [False] * len(self.prefixes)

    def update(self, rows: Sequence[Sequence[int]]) -> list[bool]:
        for i, generated in enumerate(rows):
            if self.cut[i] or not generated or "\n" not in self.decode([int(generated[-1])]):
                continue
            prefix = self.prefixes[i]
            text = prefix + self.decode([int(t) for t in generated])
            if degenerate_at(text, 1 if prefix else MAX_COMMENTS_PER_HUNK) is not None:
                self.cut[i] = True
        return list(self.cut)


@cache
def guard_criteria_class() -> Any:
    """A transformers StoppingCriteria around DegenerationGuard (built lazily: transformers is heavy)."""
    import torch
    from transformers import StoppingCriteria

    class DegenerationCriteria(StoppingCriteria):
        def __init__(self, guard: DegenerationGuard):
            self.guard = guard

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = self.guard.update(input_ids[:, self.guard.prompt_len :].tolist())
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return DegenerationCriteria
