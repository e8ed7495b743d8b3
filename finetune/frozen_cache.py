"""Run the frozen lower blocks once per example, not once per epoch.

With LoRA on the last few blocks only (the CPU default, ``--lora-layers``), every block below the
first adapted one is frozen: for a given example, the hidden states it hands upwards are the same in
every epoch and for every validation pass. ``FrozenPrefixCache`` keeps them. The first time an
example is seen, the lower blocks run through the model's own forward (its masks, its position
embeddings, its attention) and their output is stored per example; afterwards those blocks are
skipped and the stored states are handed straight to the first adapted block. Training then costs
the adapted blocks forward and backward, plus one forward through the frozen ones per example.

Packed, padding-free rows (what revbot's training feeds the model) keep each example apart, so an
example's states do not depend on its neighbours in a row: the cache is keyed by the example's token
ids and start position. A call it cannot split that way (a padded batch, a KV cache) runs the frozen
blocks in full, as if nothing were cached.

``install`` refuses a model whose lower blocks are not deterministic in training (dropout) and
checks on the actual model, before any training, that a packed row gives the same logits with the
cache (both when it computes and when it reuses states) as without it; otherwise the model is left
as it was. ``remove`` restores the model exactly (the blocks are never replaced, only bypassed).

tests/bench/bench_cpu_training.py measures a step with the cache warm against the same step without.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from finetune.attention import segment_starts

log = logging.getLogger(__name__)

MAX_BYTES = 2 << 30  # states kept at most; beyond it the frozen blocks run for the examples not kept
TOLERANCE = 1e-3  # relative mean logit difference the install check accepts


class _Captured(Exception):
    """Carries the first adapted block's input out of a forward that need not go further."""

    def __init__(self, hidden: Any):
        super().__init__("captured")
        self.hidden = hidden


def _passthrough(hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
    return hidden_states


def _decoder_and_layers(model: Any) -> tuple[Any, Any]:
    """The decoder stack (``get_decoder``) and its list of blocks."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if decoder is None or layers is None:
        raise ValueError("the model has no decoder with a list of layers")
    return decoder, layers


def first_trained_layer(model: Any) -> int:
    """Index of the lowest block with a trainable parameter (the number of frozen blocks below it)."""
    _, layers = _decoder_and_layers(model)
    for i, layer in enumerate(layers):
        if any(p.requires_grad for p in layer.parameters()):
            return i
    return len(layers)


def _stochastic(config: Any) -> bool:
    """Whether the model's config asks for dropout anywhere (the frozen blocks would differ per pass)."""
    names = ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop")
    return any(float(getattr(config, name, 0.0) or 0.0) > 0 for name in names)


class FrozenPrefixCache:
    """Stored outputs of a model's frozen lower blocks, per example (see the module docstring)."""

    def __init__(self, model: Any, max_bytes: int = MAX_BYTES, keep_training: bool = True):
        self.model = model
        self.keep_training = keep_training  # False: a run that sees each training example once keeps validation's only
        self.decoder, self.layers = _decoder_and_layers(model)
        self.split = first_trained_layer(model)
        self.max_bytes = max_bytes
        self.states: dict[tuple[int, bytes], Any] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._pending: Any = None
        self._computing = False
        self._capturing = False
        self._handles: list[Any] = []

    # -- installing -------------------------------------------------------------------------------
    @classmethod
    def install(cls, model: Any, max_bytes: int = MAX_BYTES, keep_training: bool = True) -> FrozenPrefixCache | None:
        """The cache, installed on ``model``, or None (and the model untouched) where it does not apply
        or changes the logits: no frozen block below the adapted ones, dropout below them, or a
        failed check."""
        try:
            cache = cls(model, max_bytes, keep_training)
        except ValueError as exc:
            log.info("frozen-block cache off: %s", exc)
            return None
        if cache.split == 0 or cache.split >= len(cache.layers):
            log.info("frozen-block cache off: no frozen block below the trained ones")
            return None
        if _stochastic(getattr(cache.decoder, "config", None)):
            log.info("frozen-block cache off: the model has dropout below the trained blocks")
            return None
        cache._attach()
        difference = cache.check()
        if difference is None or difference > TOLERANCE:
            cache.remove()
            log.warning("frozen-block cache off: with it the logits differ (%s)", difference)
            return None
        log.info("frozen-block cache on: %d frozen blocks run once per example", cache.split)
        return cache

    def _attach(self) -> None:
        for layer in self.layers[: self.split]:
            layer.forward = _passthrough  # an instance attribute: the block and its weights stay in place
        self._handles = [
            self.decoder.register_forward_pre_hook(self._before_decoder, with_kwargs=True),
            self.layers[self.split].register_forward_pre_hook(self._before_first_trained, with_kwargs=True),
            self.decoder.register_forward_hook(self._after_decoder, always_call=True),
        ]

    def remove(self) -> None:
        """Restore the model as it was and drop the stored states."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._restore_blocks()
        self.states.clear()
        self.bytes = 0
        self._pending = None

    def usage(self) -> dict[str, int]:
        """What the cache did: frozen blocks skipped, examples computed and reused, states kept."""
        return {
            "frozen_blocks": self.split,
            "computed": self.misses,
            "reused": self.hits,
            "kept": len(self.states),
            "kept_mb": round(self.bytes / 2**20),
        }

    # -- the check --------------------------------------------------------------------------------
    def check(self) -> float | None:
        """Relative mean difference of a packed row's logits with the cache (computing, then reusing)
        against the model without it; None if the cached path failed."""
        import torch

        gen = torch.Generator().manual_seed(4321)
        vocab = int(getattr(self.model.config, "vocab_size", 1000) or 1000)
        high = max(4, min(vocab, 1000))
        lengths = (11, 7)
        ids = torch.randint(3, high, (1, sum(lengths)), generator=gen)
        positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
        device = next(self.model.parameters()).device
        ids, positions = ids.to(device), positions.to(device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                self._detach_temporarily()
                try:
                    plain = self.model(input_ids=ids, position_ids=positions, use_cache=False).logits.float()
                finally:
                    self._reattach()
                first = self.model(input_ids=ids, position_ids=positions, use_cache=False).logits.float()
                again = self.model(input_ids=ids, position_ids=positions, use_cache=False).logits.float()
        except Exception as exc:  # an architecture this way of bypassing does not suit
            log.debug("frozen-block cache check failed: %s", exc)
            return None
        finally:
            self.model.train(was_training)
            self.states.clear()
            self.bytes = 0
            self.hits = self.misses = 0
        scale = plain.abs().mean().clamp_min(1e-6)
        return max(((first - plain).abs().mean() / scale).item(), ((again - plain).abs().mean() / scale).item())

    def _restore_blocks(self) -> None:
        """The frozen blocks' own forward back (the instance attribute that bypassed them gone)."""
        for layer in self.layers[: self.split]:
            if "forward" in vars(layer):
                del layer.forward

    def _detach_temporarily(self) -> None:
        self._restore_blocks()
        self._computing = True

    def _reattach(self) -> None:
        for layer in self.layers[: self.split]:
            layer.forward = _passthrough
        self._computing = False

    # -- the hooks --------------------------------------------------------------------------------
    def _before_decoder(self, module: Any, args: tuple, kwargs: dict) -> None:
        if self._computing:
            return None
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        positions = kwargs.get("position_ids")
        cache = kwargs.get("past_key_values")
        plain_row = (
            input_ids is not None
            and positions is not None
            and input_ids.shape[0] == 1
            and kwargs.get("inputs_embeds") is None
            and (cache is None or cache.get_seq_length() == 0)
            and not kwargs.get("use_cache")
        )
        if not plain_row:  # what the cache cannot split by example runs the frozen blocks as usual
            self._detach_temporarily()
            return None
        self._pending = self._states_for(input_ids, positions)
        return None

    def _after_decoder(self, module: Any, args: tuple, output: Any) -> None:
        if self._computing and not self._capturing:
            self._reattach()
        self._pending = None
        return None

    def _before_first_trained(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        hidden = args[0] if args else kwargs["hidden_states"]
        if self._capturing:
            raise _Captured(hidden.detach())
        if self._computing or self._pending is None:
            return None
        pending = self._pending.to(dtype=hidden.dtype, device=hidden.device)
        if args:
            return (pending, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": pending}

    # -- computing and storing --------------------------------------------------------------------
    def _lower(self, kwargs: dict, input_ids: Any) -> Any:
        """The first adapted block's input, through the model's own forward with the frozen blocks."""
        import torch

        self._detach_temporarily()
        self._capturing = True
        try:
            with torch.no_grad():
                self.decoder(input_ids=input_ids, **kwargs)  # the post-hook sees _capturing: no reattach
        except _Captured as captured:
            return captured.hidden
        finally:
            self._capturing = False
            self._reattach()
        raise RuntimeError("the first adapted block was never reached")

    def _states_for(self, input_ids: Any, positions: Any) -> Any:
        import torch

        width = input_ids.shape[1]
        bounds = segment_starts(1, width, positions).tolist()
        pieces: list[Any] = [None] * (len(bounds) - 1)
        keys = []
        missing = []
        for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
            key = (int(positions[0, start]), input_ids[0, start:end].cpu().numpy().tobytes())
            keys.append(key)
            stored = self.states.get(key)
            if stored is None:
                missing.append(i)
            else:
                pieces[i] = stored
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            take = torch.cat([torch.arange(bounds[i], bounds[i + 1]) for i in missing]).to(input_ids.device)
            lower = self._lower({"position_ids": positions[:, take], "use_cache": False}, input_ids[:, take])
            offset = 0
            for i in missing:
                n = bounds[i + 1] - bounds[i]
                piece = lower[:, offset : offset + n]
                offset += n
                pieces[i] = piece
                size = piece.numel() * piece.element_size()
                if self.bytes + size <= self.max_bytes and (self.keep_training or not self.model.training):
                    self.states[keys[i]] = piece.cpu()
                    self.bytes += size
        device = input_ids.device
        return torch.cat([p.to(device) for p in pieces], dim=1)


@contextmanager
def frozen_blocks_cached(model: Any, enabled: bool = True, keep_training: bool = True) -> Iterator[dict[str, int]]:
    """The cache installed on ``model`` for the block (where it applies and ``enabled``); yields a
    dict that holds ``FrozenPrefixCache.usage()`` once the block ends (empty when no cache ran).
    ``keep_training=False`` (a run of one epoch or less) keeps only what validation computes: the
    training examples would not come back, and on crc-py their states were 0.8 GB."""
    usage: dict[str, int] = {}
    cache = FrozenPrefixCache.install(model, keep_training=keep_training) if enabled else None
    try:
        yield usage
    finally:
        if cache is not None:
            usage.update(cache.usage())
            cache.remove()
