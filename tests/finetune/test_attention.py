"""Per-example attention over packed rows: the same outputs and gradients as attending to each example
alone, whichever way the examples are delimited and grouped."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from finetune.attention import length_groups, segment_attention, segment_starts


class _Module(torch.nn.Module):
    """What transformers' sdpa wrapper reads off an attention layer: GQA groups and causality."""

    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def _alone(query, key, value, lengths, groups):
    """Reference: causal sdpa on each example separately, concatenated back."""
    outs, start = [], 0
    for n in lengths:
        k = key[:, :, start : start + n].repeat_interleave(groups, dim=1)
        v = value[:, :, start : start + n].repeat_interleave(groups, dim=1)
        outs.append(F.scaled_dot_product_attention(query[:, :, start : start + n], k, v, is_causal=True))
        start += n
    return torch.cat(outs, dim=2).transpose(1, 2)


def _qkv(width, heads=4, kv_heads=2, dim=8, batch=1, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def make(h):
        return torch.randn(batch, h, width, dim, generator=gen, requires_grad=True)

    return make(heads), make(kv_heads), make(kv_heads)


@pytest.mark.parametrize("waste", [1.0, 1.3, math.inf])
@pytest.mark.parametrize("delimit", ["positions", "cu_seq_lens"])
def test_packed_row_attends_within_each_example_only(waste, delimit):
    lengths = [7, 3, 12, 3, 1, 9]
    q, k, v = _qkv(sum(lengths))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    bounds = torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)
    extra = (
        {"position_ids": positions} if delimit == "positions" else {"cu_seq_lens_q": bounds, "position_ids": positions}
    )
    out, weights = segment_attention(_Module(2), q, k, v, None, waste=waste, dropout=0.0, **extra)
    assert weights is None and out.shape == (1, sum(lengths), 4, 8)
    reference = _alone(q, k, v, lengths, 2)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    # gradients too: padding and grouping must not leak into any example's q, k or v
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(reference, (q, k, v), grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_several_packed_rows_are_split_at_row_starts_too():
    """Rows of a (batch, width) packed batch: a row boundary starts an example even where the position
    ids happen to continue across it."""
    rows = [[5, 3], [4, 4]]  # the second row starts at position 0 of a new example after "2"
    q, k, v = _qkv(8, batch=2)
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2], [3, 4, 5, 6, 0, 1, 2, 3]])
    out, _ = segment_attention(_Module(2), q, k, v, None, position_ids=positions)
    for b, lengths in enumerate(rows):
        reference = _alone(q[b : b + 1], k[b : b + 1], v[b : b + 1], lengths, 2)
        torch.testing.assert_close(out[b : b + 1], reference, rtol=1e-5, atol=1e-6)
    assert segment_starts(2, 8, positions).tolist() == [0, 5, 8, 12, 16]


def test_a_mask_or_a_cache_goes_to_plain_sdpa():
    q, k, v = _qkv(6)
    mask = torch.ones(1, 1, 6, 6, dtype=torch.bool).tril()
    positions = torch.tensor([[0, 1, 2, 0, 1, 2]])
    masked, _ = segment_attention(_Module(2), q, k, v, mask, position_ids=positions)
    plain = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=mask)
    torch.testing.assert_close(masked, plain.transpose(1, 2), rtol=1e-5, atol=1e-6)
    decoding, _ = segment_attention(_Module(2), q[:, :, -1:], k, v, None, position_ids=positions[:, -1:])
    last = F.scaled_dot_product_attention(q[:, :, -1:], k.repeat_interleave(2, 1), v.repeat_interleave(2, 1))
    torch.testing.assert_close(decoding, last.transpose(1, 2), rtol=1e-5, atol=1e-6)  # a cache: the whole row


def test_several_tokens_after_a_cache_attend_causally_from_the_end():
    """A prompt's rest after a cached prefix: query i sees the cache and the new tokens up to i. (Without
    a mask, sdpa's causal flag aligned the queries with the first keys: anchor scores after a cached
    prefix came out as noise while the model was on this attention.)"""
    q, k, v = _qkv(10)
    new = 4
    out, _ = segment_attention(_Module(2), q[:, :, -new:], k, v, None, position_ids=torch.arange(6, 10)[None])
    whole = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True)
    torch.testing.assert_close(out, whole[:, :, -new:].transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_length_groups_bound_the_padding():
    lengths = [700, 520, 480, 400, 390, 350, 300, 290, 250, 220, 180, 150, 120, 40, 40]
    for waste in (1.0, 1.3, 2.0):
        groups = length_groups(lengths, waste)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        for g in groups:
            longest = max(lengths[i] for i in g)
            assert lengths[g[0]] == longest  # the group's first member sets its padded length
            assert len(g) * longest**2 <= waste * sum(lengths[i] ** 2 for i in g) + 1e-9
    assert [len(g) for g in length_groups(lengths, 1.0)] == [1] * 13 + [2]  # only equal lengths share
    assert length_groups(lengths, math.inf) == [sorted(range(len(lengths)), key=lambda i: -lengths[i])]
    assert len(length_groups(lengths, 1.3)) < len(lengths)
