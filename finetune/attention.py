"""Attention for packed, padding-free batches that costs what the examples cost alone.

TRL's padding-free collator flattens a batch into one row and restarts the position ids at every
example (it also passes ``cu_seq_lens_q``, the examples' boundaries). Under ``sdpa`` transformers keeps
the examples apart by turning those position ids into a block-diagonal causal mask: correct, but
every token then scores every other token of the whole flattened batch (rows x width squared), and an
explicit mask keeps sdpa off its causal fast path.

``segment_attention``, registered through transformers' ``AttentionInterface``, finds the examples
from ``cu_seq_lens_q`` (or from where the position ids restart) and runs causal sdpa over them in a
few calls: examples of similar length are gathered into one padded (examples, heads, length, dim)
batch, padded on the right, which causal attention never looks at, and scattered back. The grouping
keeps the padded work within ``WASTE`` times the examples' own; ``WASTE=1`` is one call per distinct
length, ``inf`` a single call for the whole batch. tests/bench/bench_train.py measures it against the
block-diagonal mask ("attention alone", and end to end); it stays because it is faster there with less
memory (the figures are in docs/benchmarks.md).

No mask function is registered for it, so transformers hands it no mask: ``finetune.train`` switches
to it only for packed training after ``check_packing`` confirms, on the actual model, that packed
logits equal per-example logits, and never for models whose sliding window is shorter than a row
(plain causal sdpa would ignore the window). Anything else (a mask, a cache) goes to plain sdpa.
"""

from __future__ import annotations

from typing import Any

SEGMENT_ATTENTION = "revbot_segments"
WASTE = 1.3  # padded work allowed per group, relative to the examples' own (see the docstring)


def segment_starts(batch: int, width: int, position_ids: Any = None, cu_seq_lens: Any = None) -> Any:
    """Start offsets of the examples in the flattened (batch x width) tokens, plus the end.

    ``cu_seq_lens`` (TRL's padding-free batches carry it) is used as is for a single row; otherwise an
    example starts at each row start and wherever a position id is not its predecessor's plus one."""
    import torch

    if cu_seq_lens is not None and batch == 1:
        return cu_seq_lens.to(torch.long)
    positions = position_ids.expand(batch, width) if position_ids.shape[0] != batch else position_ids
    restart = torch.ones(batch, width, dtype=torch.bool, device=positions.device)
    restart[:, 1:] = torch.diff(positions, dim=1) != 1
    starts = restart.flatten().nonzero().flatten()
    return torch.cat([starts, starts.new_tensor([batch * width])])


def length_groups(lengths: list[int], waste: float = WASTE) -> list[list[int]]:
    """Indices of examples grouped longest first, each group's padded work (count x longest squared)
    within ``waste`` times the sum of its members' squared lengths."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    own = 0
    for i in order:
        if groups:
            longest = lengths[groups[-1][0]]
            if (len(groups[-1]) + 1) * longest * longest <= waste * (own + lengths[i] ** 2):
                groups[-1].append(i)
                own += lengths[i] ** 2
                continue
        groups.append([i])
        own = lengths[i] ** 2
    return groups


def segment_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    *,
    position_ids: Any = None,
    cu_seq_lens_q: Any = None,
    waste: float = WASTE,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Causal sdpa within each example of packed rows; plain sdpa whenever a mask or a cache is involved.

    query: (batch, heads, width, dim), key/value: (batch, kv heads, width, dim); returns the
    attention output as (batch, width, heads, dim), the layout every attention implementation returns."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    for unused in ("cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx", "is_causal"):
        kwargs.pop(unused, None)
    batch, heads, width, dim = query.shape
    if attention_mask is None and 1 < width < key.shape[2]:
        # several new tokens after a cache (a prompt's rest after a cached prefix): causal, each query
        # at the end of the keys. Left without a mask, sdpa's causal flag would align them with the
        # first keys instead, and every row would read the wrong past.
        past = key.shape[2] - width
        attention_mask = torch.ones(width, key.shape[2], dtype=torch.bool, device=query.device).tril(past)[None, None]
    if attention_mask is not None or (position_ids is None and cu_seq_lens_q is None) or key.shape[2] != width:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    edges = segment_starts(batch, width, position_ids, cu_seq_lens_q)
    starts, lengths = edges[:-1], torch.diff(edges)
    # tokens first: (batch * width, heads, dim), so an example is a run of rows
    q, k, v = (t.transpose(1, 2).reshape(batch * width, t.shape[1], dim) for t in (query, key, value))
    pieces, where = [], []
    for group in length_groups(lengths.tolist(), waste):
        index = torch.tensor(group, device=starts.device)
        longest = int(lengths[index[0]])
        offsets = torch.arange(longest, device=starts.device)
        real = offsets[None, :] < lengths[index, None]
        source = (starts[index, None] + offsets[None, :]).clamp(max=batch * width - 1)
        # (examples, heads, longest, dim); the clamped tail is padding that causal attention never reads
        gathered = [t[source].transpose(1, 2) for t in (q, k, v)]
        out, _ = sdpa_attention_forward(module, *gathered, None, is_causal=True, **kwargs)
        pieces.append(out[real])  # (tokens, heads, dim)
        where.append(source[real])
    values = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
    rows = torch.cat(where) if len(where) > 1 else where[0]
    out = values.new_empty(values.shape).index_copy(0, rows, values)
    return out.reshape(batch, width, heads, dim), None


def register() -> str:
    """Make ``SEGMENT_ATTENTION`` available to ``model.set_attn_implementation``."""
    from transformers import AttentionInterface

    AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)
    return SEGMENT_ATTENTION
