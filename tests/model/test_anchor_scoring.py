"""Constrained anchors on a real (tiny) model: the token-tree scores equal scoring each candidate
alone, and a body continued from the prompt's cache equals what batched generation writes."""

from __future__ import annotations

import pytest

from bot.anchoring import analyse_hunks, labels
from bot.prompt import NO_COMMENT, with_answer_prefix


def brute_force(backend, inp, text: str) -> float:
    import torch

    prompt = backend._encode_prompt(inp)
    cand = list(backend.tokenizer(text, add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        logits = backend.model(input_ids=torch.tensor([prompt + cand])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(torch.exp(sum(logp[len(prompt) + j - 1, cand[j]] for j in range(len(cand)))))


def test_tree_scores_equal_each_candidate_scored_alone(llama_backend, prompts):
    from bot.diff import parse_hunk
    from tests.model.conftest import HUNKS

    inp, hunk = prompts[1], parse_hunk(HUNKS[1][1])
    texts = [NO_COMMENT] + [f"{label}:" for label, _, _ in labels(hunk)]
    (fast,) = llama_backend.score_answers([inp], [texts])
    assert fast == pytest.approx([brute_force(llama_backend, inp, t) for t in texts], rel=1e-3, abs=1e-9)


def test_one_pass_gives_the_same_bodies_and_free_answer_as_batched_generation(llama_backend, prompts):
    from bot.diff import parse_hunk
    from tests.model.conftest import HUNKS

    hunks = [parse_hunk(text) for _, text in HUNKS[:3]]
    analysed = analyse_hunks(
        llama_backend, list(prompts[:3]), hunks, {"all": 0.0, "own": None}, max_new_tokens=6, max_per_hunk=1, free=True
    )
    free = llama_backend.generate(list(prompts[:3]), max_new_tokens=6)
    assert [g.text for g in analysed.free] == [g.text for g in free]
    for i, answer in enumerate(analysed.variants["all"]):
        best = analysed.scores[i].ranked()[0][0]
        start = analysed.scores[i].prefix_of[best]  # the answer start that names the line
        (body,) = llama_backend.generate([with_answer_prefix(prompts[i], start)], max_new_tokens=6)
        assert answer.text == f"{start}{body.text}"
        assert all(hunks[i].is_commentable(c.line, c.side) for c in answer.comments)  # never outside the hunk
