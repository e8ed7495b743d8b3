"""Attention for packed rows that costs what the examples cost alone.

transformers keeps packed examples apart under ``sdpa`` by building a block-diagonal causal mask from
the position ids. That is correct but pays for the whole row: an explicit mask stops the fused
kernels from skipping masked blocks, so a 2,048-token row of four examples costs 2,048² score
entries instead of the sum of the four squares, and the mask itself is rows × 2,048² booleans.

``segment_attention`` is registered as an attention implementation: it splits each row at the
positions where the position ids restart and runs causal sdpa on each example separately
(``is_causal=True``, no mask: the fused kernels' fast path). With no mask function registered for
it, transformers passes no mask at all, so it is only used for packed training rows, never for
padded batches. ``finetune.train`` switches to it only after ``check_packing`` confirms, on the
actual model, that packed logits equal per-example logits, and never for models whose sliding
window is shorter than a row (plain causal sdpa would ignore the window).
"""
from __future__ import annotations

from typing import Any

SEGMENT_ATTENTION = "revbot_segments"


def _segments(positions: Any) -> list[tuple[int, int]]:
    """[(start, end)] of the runs of consecutive positions in one row."""
    import torch

    breaks = (torch.diff(positions) != 1).nonzero().flatten().add(1).tolist()
    edges = [0, *breaks, positions.shape[0]]
    return list(zip(edges[:-1], edges[1:]))


def segment_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, *,
                      position_ids: Any = None, **kwargs: Any) -> tuple[Any, None]:
    """Per-example causal sdpa over packed rows; plain sdpa whenever a mask or a cache is involved."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None or position_ids is None or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    rows = []
    for b in range(query.shape[0]):
        positions = position_ids[b if position_ids.shape[0] > 1 else 0]
        pieces = [
            sdpa_attention_forward(module, query[b:b + 1, :, s:e], key[b:b + 1, :, s:e], value[b:b + 1, :, s:e], None,
                                   is_causal=True, **kwargs)[0]
            for s, e in _segments(positions)
        ]
        rows.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1))
    return torch.cat(rows, dim=0), None


def register() -> str:
    """Make ``SEGMENT_ATTENTION`` available to ``model.set_attn_implementation``."""
    from transformers import AttentionInterface

    AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)
    return SEGMENT_ATTENTION
