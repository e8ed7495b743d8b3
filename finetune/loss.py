"""The loss on the answer tokens only, in one place: training on the CPU computes it (train.py's trainer)
and ``revbot retrain`` measures it on held-out examples (evaluate.answer_loss), so both count the same
tokens the same way: labels are -100 on the prompt, and each supervised token is predicted from the
position before it. Training may weight the answer's decision tokens (``DecisionWeights``); validation
and the retrain gate's loss are always the plain mean over answer tokens."""

from __future__ import annotations

import re
from typing import Any

ANCHOR_TOKENS_MAX = 8  # a label is ``R``, a few digits and ``:``; a decision never runs longer
QUOTE_TOKENS_MAX = 32  # a quoted line (prompt format 4) is a decision up to its line break, at most this long
_ANCHOR_START = re.compile(r"^[RL]\d*$")
_QUOTE_START = re.compile(r"^\s*>{1,3}\s*$")


class AnswerHead:
    """Projects only the hidden states that predict a supervised token through the LM head, and sums
    the loss on them (``loss_sum``). Training uses it on the CPU; evaluation's answer_loss on any device
    (only the answer's logits are ever made, a fraction of a full batch's).

    TRL's fused LM head scores only the supervised positions where Triton runs (CUDA, XPU), but on the
    CPU it scores every position, vocabulary tile by tile, and the prompt is most of a review example.
    Kept because tests/bench/bench_train.py measures it faster than TRL's at no more memory ("LM head
    alone", and end to end; only the selected rows' logits exist; figures in docs/benchmarks.md). A forward pre-hook on the output embedding swaps its (rows, width, hidden) input for the
    selected (1, n, hidden) states, so the model call (and DDP around it) stays untouched."""

    def __init__(self, model: Any):
        head = model.get_output_embeddings()
        self.index = None
        self.handle = head.register_forward_pre_hook(self._hook) if head is not None else None

    def _hook(self, module: Any, args: tuple) -> tuple | None:
        if self.index is None or not args:
            return None
        return (args[0][self.index].unsqueeze(0), *args[1:])

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()

    def loss_sum(self, model: Any, inputs: dict[str, Any], decisions: DecisionWeights | None = None) -> tuple[Any, int]:
        """Sum of token cross-entropies over the supervised tokens of one batch (labels != -100, each
        predicted from the position before it), and their count. With ``decisions``, each token's
        cross-entropy is weighted by ``decisions.weights`` (decisions count more; the count is unchanged)."""
        import torch
        import torch.nn.functional as F

        labels = inputs["labels"]
        shifted = labels[:, 1:]
        supervised = shifted != -100
        select = torch.zeros_like(labels, dtype=torch.bool)
        select[:, :-1] = supervised
        targets = shifted[supervised]
        self.index = select if self.handle is not None else None
        try:
            logits = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits
        finally:
            self.index = None
        if (
            logits.dim() == 3
            and logits.shape[0] == 1
            and logits.shape[1] == targets.numel()
            and self.handle is not None
        ):
            logits = logits[0]
        else:  # a model that called its head some other way: select from the full logits
            logits = logits[select]
        if decisions is None:
            return F.cross_entropy(logits.float(), targets, reduction="sum"), int(targets.numel())
        losses = F.cross_entropy(logits.float(), targets, reduction="none")
        return (losses * decisions.weights(shifted).to(losses.device)).sum(), int(targets.numel())


class DecisionWeights:
    """Weights for the answer tokens that carry its decisions: whether to comment (the answer's first
    token, ``NO`` or ``R``) and where (each anchor label, ``R12:``, up to its colon; from prompt format 4
    each quoted line, ``>>> +code``, up to its line break). A review answer is
    mostly comment text, easy to learn when a team repeats itself, and a handful of decision tokens:
    under the plain loss a short training run learns the words and not when or where to say them (the
    model proposes the right comment on the neighbouring line, or stays silent on a hunk it has seen).
    Weighting the decisions ``weight`` times a word adds gradient on them and takes none from the
    words (a comment's text is learned as under the plain loss; the loss is a weighted sum over the
    same token count).

    Built once from the tokenizer: which token ids hold a colon or a newline, and which can start an
    anchor label (``R``, ``L``, or such a letter with digits where a tokenizer merges them)."""

    def __init__(self, tokenizer: Any, weight: float):
        self.weight = float(weight)
        self.colon: set[int] = set()
        self.newline: set[int] = set()
        self.anchor: set[int] = set()
        self.quote: set[int] = set()
        for token_id in range(len(tokenizer)):
            text = tokenizer.decode([token_id])
            if ":" in text:
                self.colon.add(token_id)
            if "\n" in text:
                self.newline.add(token_id)
            if _ANCHOR_START.match(text):
                self.anchor.add(token_id)
            if _QUOTE_START.match(text):
                self.quote.add(token_id)

    def mask(self, shifted: Any) -> list[bool]:
        """For each supervised target (labels != -100, row by row, in order), whether it is a decision."""
        out: list[bool] = []
        for row in shifted.tolist():
            active, quoted, count, prev = False, False, 0, -100
            for token in row:
                if token == -100:
                    active, prev = False, -100
                    continue
                if prev == -100 or (prev in self.newline and (token in self.anchor or token in self.quote)):
                    active, quoted, count = True, token in self.quote, 0
                out.append(active)
                if active:
                    count += 1
                    if quoted:
                        active = token not in self.newline and count < QUOTE_TOKENS_MAX
                    elif token in self.colon or token in self.newline or count >= ANCHOR_TOKENS_MAX:
                        active = False
                prev = token
        return out

    def weights(self, shifted: Any) -> Any:
        """Per supervised target: ``weight`` on decisions, 1 on the rest."""
        import torch

        return torch.where(torch.tensor(self.mask(shifted), dtype=torch.bool), self.weight, 1.0)
