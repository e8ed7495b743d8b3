"""The loss on the answer tokens only, in one place: training on the CPU computes it (train.py's trainer)
and ``revbot retrain`` measures it on held-out examples (evaluate.answer_loss), so both count the same
tokens the same way: labels are -100 on the prompt, and each supervised token is predicted from the
position before it."""

from __future__ import annotations

from typing import Any


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

    def loss_sum(self, model: Any, inputs: dict[str, Any]) -> tuple[Any, int]:
        """Sum of token cross-entropies over the supervised tokens of one batch (labels != -100, each
        predicted from the position before it), and their count."""
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
        return F.cross_entropy(logits.float(), targets, reduction="sum"), int(targets.numel())
