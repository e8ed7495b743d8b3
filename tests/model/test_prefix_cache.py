"""The shared-prefix KV cache (adapters.prefix_cache): the same greedy token ids as generation without
it, on tiny random models of real architectures (llama: plain prompts; qwen2: a chat template), batched
and one hunk at a time; and the rules for which prefix is cached."""

from __future__ import annotations

import pytest

from adapters.model import BackendOptions, LocalBackend
from adapters.prefix_cache import PrefixCache, common_prefix_length, supports_prefix_cache

MAX_NEW = 24


def _backend(model_dir, batch_size: int) -> LocalBackend:
    # few-shot on: every prompt starts with the system text and the three worked examples, the shared prefix
    return LocalBackend.load(
        BackendOptions(str(model_dir), quantize="none", device="cpu", batch_size=batch_size, few_shot=True)
    )


def _generated_ids(backend: LocalBackend, inputs) -> tuple[list, list]:
    """(the generated token ids of every row of every batch, the texts), recorded around model.generate."""
    rows: list[list[int]] = []
    real = backend.model.generate

    def spy(**kwargs):
        out = real(**kwargs)
        rows.extend(out[:, kwargs["input_ids"].shape[1] :].tolist())
        return out

    backend.model.generate = spy
    try:
        texts = [g.text for g in backend.generate(inputs, max_new_tokens=MAX_NEW)]
    finally:
        del backend.model.generate
    return rows, texts


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model_dir(request, tiny_llama, tiny_qwen):
    return tiny_llama if request.param == "llama" else tiny_qwen


@pytest.mark.parametrize("batch_size", [1, 3])
def test_same_token_ids_with_and_without_the_prefix_cache(model_dir, prompts, batch_size):
    with_cache = _backend(model_dir, batch_size)
    without = _backend(model_dir, batch_size)
    without.prefix_cache = None
    assert with_cache.prefix_cache is not None
    inputs = prompts * 2  # ten hunks of five lengths: batches mix lengths, so rows are padded in the middle
    cached_ids, cached_texts = _generated_ids(with_cache, inputs)
    plain_ids, plain_texts = _generated_ids(without, inputs)
    assert cached_ids == plain_ids and cached_texts == plain_texts
    assert any(len(set(row)) > 1 for row in plain_ids)  # the model says something, not one token over and over
    cache = with_cache.prefix_cache
    shared = common_prefix_length([with_cache._encode_prompt(p) for p in inputs])
    assert cache.hits == -(-len(inputs) // batch_size)  # every batch used it
    assert cache.prefix_tokens_saved == shared * len(inputs) and shared > 200  # the worked examples are shared


def test_the_prefix_is_computed_once_and_reused_by_the_next_call(tiny_llama, prompts):
    backend = _backend(tiny_llama, 2)
    backend.generate(prompts, max_new_tokens=2)
    (key,) = backend.prefix_cache.entries
    states = backend.prefix_cache.entries[key]
    backend.generate(prompts[:1], max_new_tokens=2)  # one hunk alone still finds the remembered prefix
    assert backend.prefix_cache.entries[key] is states and backend.prefix_cache.hits == 4
    assert states.get_seq_length() == len(key)  # copies grow as rows decode; the cached prefix does not
    backend.prefix_cache.clear()  # new weights: the prefix is computed again on the next call
    backend.generate(prompts, max_new_tokens=2)
    assert backend.prefix_cache.entries[key] is not states


class _Model:
    """Enough of a model for the planning rules (no forward pass is made)."""

    device = "cpu"
    config = None


def test_which_prefix_is_remembered():
    cache = PrefixCache(_Model(), min_tokens=4)
    cache.observe([[1, 2, 3, 4, 5, 6]])  # one prompt: nothing is known to be shared
    assert not cache.entries
    cache.observe([[1, 2, 3, 9], [1, 2, 3, 8]])  # shared, but shorter than min_tokens
    assert not cache.entries
    cache.observe([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])  # the same prompt twice: one token left to each
    assert list(cache.entries) == [(1, 2, 3, 4, 5)]
    cache.observe([[7, 7, 7, 7, 1], [7, 7, 7, 7, 2]])
    cache.observe([[8, 8, 8, 8, 1], [8, 8, 8, 8, 2]])
    assert list(cache.entries) == [(7, 7, 7, 7), (8, 8, 8, 8)]  # the oldest is forgotten
    assert cache._match([[8, 8, 8, 8, 5, 5]]) == (8, 8, 8, 8)
    assert cache._match([[8, 8, 8, 8]]) is None  # a row must keep at least one token of its own
    assert cache.layout([[9, 9, 9]], 0) is None


def test_common_prefix_length():
    assert common_prefix_length([]) == 0
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[5], [6]]) == 0


def test_only_plain_attention_caches_are_shared(tiny_qwen):
    from transformers import AutoConfig

    class WithConfig:
        def __init__(self, config):
            self.config = config

    config = AutoConfig.from_pretrained(tiny_qwen)
    assert supports_prefix_cache(WithConfig(config))
    config.use_sliding_window, config.sliding_window, config.max_window_layers = True, 16, 0
    config.layer_types = ["sliding_attention"] * config.num_hidden_layers
    assert not supports_prefix_cache(WithConfig(config))
    assert not supports_prefix_cache(object())
