"""The tokens every prompt of a review shares, run through the model once.

Every prompt of a review starts the same way: the chat template's header, the system text, the
prompt format's worked examples (three whole hunks and answers for an untuned model). Only then
comes the hunk. Without this module each hunk pays for that shared prefix again, and in a batch
every row pays for it: since the worked examples came in, the prefix is most of the prompt, so
batching stopped paying (bench_review.py). Here the prefix's keys and values are computed once and
handed to ``generate()`` for every batch as transformers' own ``DynamicCache``, so the work per
hunk is the hunk's.

How a batch is laid out with the cache: ``[prefix][padding][hunk]`` per row. The padding sits
between the shared part and each row's own part (rows differ in length), masked out, and position
ids come from the attention mask (generate() computes them as its cumulative sum), so each row sees
exactly the positions and the keys it sees without the cache, where the same padding sits on the
left. Under greedy decoding the token ids are the same (tests/model/test_prefix_cache.py checks it).

The constrained path (``adapters.decoding``: scoring anchors, then a body after the chosen ones) runs
one prompt at a time, extending its prompt's cache and cropping it back after each continuation.
``start`` hands it a fresh cache over the remembered prefix: a new ``DynamicCache`` around the same
key and value tensors, which the pass extends by concatenation and crops by slicing, so the
remembered tensors are never written to; only the prompt's own tokens then run through the model.

Which prefix: the longest one that every prompt of one ``generate()`` call shares (``observe``),
remembered between calls (a review's batches, and the next review, share it), at least
``min_tokens`` long and always one token short of the shortest prompt. Models whose cache is not
plain attention (sliding windows, state-space layers, shared keys) are served without it.

The cache is keyed by token ids alone: code that changes the model's weights under a live backend
(enabling or disabling a peft adapter, training it further) must call ``clear()``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MIN_TOKENS = 32  # below this a prefix saves less than the cache copy costs
MAX_ENTRIES = 2  # prefixes remembered (e.g. the untuned prompt and a tuned one)


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading token ids all ``rows`` share."""
    if not rows:
        return 0
    first, n = rows[0], min(len(r) for r in rows)
    for i in range(n):
        token = first[i]
        if any(r[i] != token for r in rows):
            return i
    return n


def supports_prefix_cache(model: Any) -> bool:
    """True when the model's generation cache is plain attention layers: one key and value per
    token, which a prefix can be cut from and copied to every row."""
    from transformers import DynamicCache

    try:
        probe = DynamicCache(config=model.config)
    except (AttributeError, TypeError, ValueError):
        return False
    return not (any(probe.is_sliding) or any(probe.is_linear) or any(probe.is_dummy))


def longest_key(
    keys: Iterable[tuple[int, ...]], rows: Sequence[Sequence[int]], *, outlast: bool
) -> tuple[int, ...] | None:
    """The longest of ``keys`` that every row starts with (and, with ``outlast``, is longer than)."""
    best = None
    for key in keys:
        n = len(key)
        fits = all((len(r) > n if outlast else len(r) >= n) and tuple(r[:n]) == key for r in rows)
        if fits and (best is None or n > len(best)):
            best = key
    return best


class PrefixCache:
    """Shared-prefix key/value states for one model, reused across ``generate()`` calls."""

    def __init__(self, model: Any, *, min_tokens: int = DEFAULT_MIN_TOKENS, max_entries: int = MAX_ENTRIES):
        self.model = model
        self.min_tokens = min_tokens
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple[int, ...], Any] = OrderedDict()  # prefix ids -> DynamicCache (batch 1)
        self.hits = 0
        self.prefix_tokens_saved = 0

    def clear(self) -> None:
        """Forget every prefix (the model's weights changed)."""
        self.entries.clear()

    def observe(self, prompts: Sequence[Sequence[int]]) -> None:
        """Remember the prefix all ``prompts`` (one generate() call) share, if it is worth caching."""
        if len(prompts) < 2:
            return
        n = min(common_prefix_length(prompts), min(len(p) for p in prompts) - 1)
        if n >= self.min_tokens:
            key = tuple(prompts[0][:n])
            if key in self.entries:
                self.entries.move_to_end(key)
            else:
                self.entries[key] = None  # computed on first use
                while len(self.entries) > self.max_entries:
                    self.entries.popitem(last=False)

    def _match(self, batch: Sequence[Sequence[int]]) -> tuple[int, ...] | None:
        """The longest remembered prefix that every row of ``batch`` starts with and outlasts."""
        return longest_key(self.entries, batch, outlast=True)

    def _states(self, key: tuple[int, ...]) -> Any:
        cached = self.entries[key]
        if cached is None:
            import torch
            from transformers import DynamicCache

            ids = torch.tensor([key], dtype=torch.long, device=self.model.device)
            with torch.inference_mode():
                out = self.model(input_ids=ids, past_key_values=DynamicCache(config=self.model.config), use_cache=True)
            cached = self.entries[key] = out.past_key_values
            log.debug("cached a shared prompt prefix of %d tokens", len(key))
        return cached

    def layout(self, batch: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any, dict[str, Any]] | None:
        """``(input_ids, attention_mask, generate kwargs)`` for ``batch`` laid out as
        ``[prefix][padding][own tokens]`` with the prefix's cache copied to every row, or None when
        no remembered prefix fits (the caller then pads on the left as usual)."""
        key = self._match(batch)
        if key is None:
            return None
        import torch

        n, rows = len(key), len(batch)
        states = self._states(key)
        width = n + max(len(r) - n for r in batch)
        input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
        attention = torch.zeros((rows, width), dtype=torch.long)
        input_ids[:, :n] = torch.tensor(key, dtype=torch.long)
        attention[:, :n] = 1
        for row, ids in enumerate(batch):
            own = ids[n:]
            input_ids[row, width - len(own) :] = torch.tensor(own, dtype=torch.long)
            attention[row, width - len(own) :] = 1
        self.hits += 1
        self.prefix_tokens_saved += n * rows
        return input_ids, attention, {"past_key_values": self._copy(states, rows)}

    def start(self, prompt: Sequence[int]) -> tuple[Any, int] | None:
        """``(cache, n)`` for one prompt's own pass: a copy of the remembered prefix's states (its
        first ``n`` tokens) to run ``prompt[n:]`` after, or None when no remembered prefix fits."""
        key = self._match([prompt])
        if key is None:
            return None
        self.hits += 1
        self.prefix_tokens_saved += len(key)
        return self._copy(self._states(key), 1), len(key)

    def _copy(self, states: Any, rows: int) -> Any:
        """A new cache over ``states`` for ``rows`` rows: it grows each row's keys as it decodes (by
        concatenation, into new tensors) and is cropped by slicing, so the prefix stays untouched."""
        from transformers import DynamicCache

        return DynamicCache(
            [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v, *_ in states],
            config=self.model.config,
        )


def batch_layout(
    batch: Sequence[Sequence[int]], pad_id: int, prefix_cache: PrefixCache | None
) -> tuple[Any, Any, dict[str, Any]]:
    """``(input_ids, attention_mask, generate kwargs)`` for ``batch``: after the cached shared prefix
    when ``prefix_cache`` holds one that fits, else padded on the left with no extra kwargs. Either
    way every row's answer starts at the same column, the tensors' width."""
    laid_out = prefix_cache.layout(batch, pad_id) if prefix_cache is not None else None
    if laid_out is not None:
        return laid_out
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    return input_ids, attention, {}


class PromptStates:
    """Whole prompts' key/value states, kept from the pass that scored their answer starts for the
    ``generate()`` call that writes the bodies after the chosen ones.

    Constrained answering (``bot.anchoring``) runs each prompt through the model once to score its
    anchors (``adapters.decoding.score_with_states``), then generates a body after each chosen anchor
    in batches, and the batch's prefill would run every prompt again: on the demo's evaluation that
    second prefill was a quarter of the time. While ``keeping`` (a context the answering opens and
    closes), the scoring pass leaves each prompt's states here, and ``layout`` lays a batch out as
    ``[padding][prompt][padding][rest]`` per row: the prompts' states, padded on the left to the
    longest, become the batch's cache, and only the rest (the answer start: a label or a quoted line)
    runs through the model. Padding is masked and position ids follow from the attention mask, as in
    ``PrefixCache.layout``. Nothing is kept outside the context, and at most ``max_bytes`` inside it.
    """

    def __init__(self, model: Any, *, max_bytes: int = 1 << 30):
        self.model = model
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.bytes = 0
        self.active = 0  # open keeping() contexts (a service answers several reviews at once)
        self.hits = 0
        self._count = threading.Lock()

    @contextmanager
    def keeping(self) -> Iterator[PromptStates]:
        """A context in which scored prompts' states are kept; leaving it drops them all."""
        with self._count:
            self.active += 1
        try:
            yield self
        finally:
            with self._count:
                self.active -= 1
                if not self.active:
                    self.clear()

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    def keep(self, prompt: Sequence[int], cache: Any) -> None:
        """Remember ``cache`` (batch 1, exactly ``prompt``'s tokens) while keeping, within the budget."""
        if not self.active or cache is None or cache.get_seq_length() != len(prompt):
            return
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v, *_ in cache)
        key = tuple(prompt)
        if key in self.entries or size > self.max_bytes:
            return
        while self.entries and self.bytes + size > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old[1]
        self.entries[key] = (cache, size)
        self.bytes += size

    def layout(self, batch: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any, dict[str, Any]] | None:
        """``(input_ids, attention_mask, generate kwargs)`` with every row's kept prompt as the cache,
        or None unless every row starts with a kept prompt. A row that is its prompt alone keeps its
        last token out of the cache (``generate()`` needs a token to start from)."""
        keys = [longest_key(self.entries, [row], outlast=False) for row in batch]
        if not batch or any(k is None for k in keys):
            return None
        import torch
        from transformers import DynamicCache

        cached = [min(len(k), len(row) - 1) for k, row in zip(keys, batch)]  # type: ignore[arg-type]
        head = max(cached)
        tail = max(len(row) - n for row, n in zip(batch, cached))
        rows = len(batch)
        input_ids = torch.full((rows, head + tail), pad_id, dtype=torch.long)
        attention = torch.zeros((rows, head + tail), dtype=torch.long)
        layers: list[tuple[Any, Any]] = []
        for r, (key, row, n) in enumerate(zip(keys, batch, cached)):
            input_ids[r, head - n : head] = torch.tensor(row[:n], dtype=torch.long)
            attention[r, head - n : head] = 1
            rest = row[n:]
            input_ids[r, head + tail - len(rest) :] = torch.tensor(rest, dtype=torch.long)
            attention[r, head + tail - len(rest) :] = 1
            for i, (k, v, *_) in enumerate(self.entries[key][0]):  # type: ignore[index]
                if r == 0:
                    shape = (rows, k.shape[1], head, k.shape[3])
                    layers.append((k.new_zeros(shape), v.new_zeros((rows, v.shape[1], head, v.shape[3]))))
                layers[i][0][r, :, head - n :] = k[0, :, :n]
                layers[i][1][r, :, head - n :] = v[0, :, :n]
        self.hits += 1
        return input_ids, attention, {"past_key_values": DynamicCache(layers, config=self.model.config)}
