"""The decision-weighted loss (finetune.loss.DecisionWeights): which answer tokens count as decisions
(the first token of an answer, each anchor label up to its colon, each quoted line up to its break), and that the weighted loss is the
cross-entropy weighted exactly so, on a tiny random llama (architecture only: its numbers mean nothing)."""

from __future__ import annotations

import pytest
import torch

from bot.errors import UsageError
from bot.examples import Example, ExampleComment
from finetune.config import TrainConfig
from finetune.data import encode_examples
from finetune.loss import AnswerHead, DecisionWeights

HUNK = "@@ -1,2 +1,3 @@\n def f(x):\n+    print(x)\n+    return x"


def _examples() -> list[Example]:
    two = [
        ExampleComment(2, "RIGHT", "Use the module logger instead of print."),
        ExampleComment(3, "RIGHT", "Return a copy."),
    ]
    return [
        Example(id="a", repo="o/r", pr=1, path="a.py", hunk=HUNK, comments=two),
        Example(id="b", repo="o/r", pr=2, path="b.py", hunk=HUNK, comments=[]),
    ]


@pytest.fixture(scope="module")
def batch(tiny_llama):
    from transformers import AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    encoded, _ = encode_examples(_examples(), tok, 2048)
    collate = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)
    return tok, collate([{"input_ids": list(e.ids), "labels": e.labels()} for e in encoded])


def test_the_decisions_are_the_first_token_and_each_anchor_label(batch):
    tok, inputs = batch
    decisions = DecisionWeights(tok, 5.0)
    shifted = inputs["labels"][:, 1:]
    targets = shifted[shifted != -100].tolist()
    mask = decisions.mask(shifted)
    assert len(mask) == len(targets)
    picked = [tok.decode([t]) for t, m in zip(targets, mask) if m]
    # the positive answer: each quoted line up to its line break (prompt format 4); the negative one:
    # its first token, up to the line's end
    text = "".join(picked)
    quotes = ">>> +    print(x)\n>>> +    return x\n"
    assert text.startswith(quotes)
    assert text[len(quotes) :].replace(" ", "").startswith("NO")
    assert "logger" not in text and "copy" not in text  # the comment's words are not decisions
    assert len(picked) < len(targets) // 2


def test_the_weighted_loss_is_the_cross_entropy_weighted(batch, tiny_llama):
    from transformers import AutoModelForCausalLM

    tok, inputs = batch
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    decisions = DecisionWeights(tok, 5.0)
    head = AnswerHead(model)
    with torch.no_grad():
        weighted, n = head.loss_sum(model, inputs, decisions)
        plain, n_plain = head.loss_sum(model, inputs)
        head.remove()
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits[:, :-1]
    labels = inputs["labels"][:, 1:]
    ce = torch.nn.functional.cross_entropy(logits[labels != -100].float(), labels[labels != -100], reduction="none")
    mask = torch.tensor(decisions.mask(labels))
    w = torch.where(mask, 5.0, 1.0)
    assert n == n_plain == ce.numel()
    assert weighted.item() == pytest.approx((ce * w).sum().item(), rel=1e-5)
    assert plain.item() == pytest.approx(ce.sum().item(), rel=1e-5)
    assert weighted.item() != pytest.approx(plain.item(), rel=1e-3)  # the weights do change the loss


def test_the_weight_is_checked():
    with pytest.raises(UsageError, match="decision-weight"):
        TrainConfig(decision_weight=0.5).validate()
