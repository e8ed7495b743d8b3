"""Decoding helpers of the local backend, kept apart from its generate loop: scoring answer starts
under the model (constrained anchors, ``bot.anchoring``) and stopping degenerate answers early.

* ``score_continuations``: the probability of each candidate continuation of one prompt, teacher
  forced. The prompt runs once; its KV cache is repeated for the candidates, which are a few tokens
  each (``R``, digits, ``:``), so scoring 40 labels costs little more than one prompt.
* ``DegenerationGuard``: a stopping criterion that ends a row as soon as its answer degenerates
  (``bot.prompt.degenerate_at``: anchors without bodies, repeated comments, too many comments); a
  row whose answer was started for it (a chosen anchor) stops at the next comment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from bot.prompt import MAX_COMMENTS_PER_HUNK, degenerate_at


def score_continuations(model: Any, prompt_ids: Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
    """P(continuation | prompt) for each continuation (token ids), in order."""
    import torch

    device = model.device
    with torch.inference_mode():
        prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
        out = model(input_ids=prompt, use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        cache_ = out.past_key_values
        width = max(len(c) for c in continuations)
        n = len(continuations)
        scores = [float(first[c[0]]) for c in continuations]
        if width > 1:
            cache_.batch_repeat_interleave(n)
            ids = torch.zeros((n, width - 1), dtype=torch.long)
            mask = torch.zeros((n, len(prompt_ids) + width - 1), dtype=torch.long)
            mask[:, : len(prompt_ids)] = 1
            for row, c in enumerate(continuations):
                ids[row, : len(c) - 1] = torch.tensor(list(c[:-1]), dtype=torch.long)
                mask[row, len(prompt_ids) : len(prompt_ids) + len(c) - 1] = 1
            positions = torch.arange(len(prompt_ids), len(prompt_ids) + width - 1).unsqueeze(0).expand(n, -1)
            logits = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                past_key_values=cache_,
                use_cache=True,
            ).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            for row, c in enumerate(continuations):
                for j in range(1, len(c)):
                    scores[row] += float(logp[row, j - 1, c[j]])
    return [float(torch.exp(torch.tensor(s))) for s in scores]


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
