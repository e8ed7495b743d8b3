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


# -- the constrained path: anchor scores and bodies, one prompt at a time, from the cached prefix


def _exemplars(i: int):
    from bot.prompt import Exemplar

    # each hunk its own past reviews, as retrieval gives them: only the system text and the header are shared
    return [
        Exemplar(f"old/{i}_{j}.py", f"R{j + 2} +value = compute({i}, {j})", f"R{j + 2}: Check {i}") for j in range(2)
    ]


def _styled(model_dir, prompts, style: str) -> tuple[LocalBackend, list]:
    """A backend and its inputs, each hunk with its own exemplars: ``untuned`` (the worked examples as
    shots, the long shared prefix, then the exemplars as shots) or ``tuned`` (format v3: the system
    text, then the exemplars and the hunk in one turn)."""
    from bot.prompt import with_exemplars

    backend = LocalBackend.load(
        BackendOptions(str(model_dir), quantize="none", device="cpu", batch_size=2, few_shot=style == "untuned")
    )
    return backend, [with_exemplars(p, _exemplars(i)) for i, p in enumerate(prompts)]


def _candidate_ids(backend: LocalBackend, hunk_text: str) -> tuple[list[str], list[list[int]]]:
    from bot.anchoring import labels
    from bot.diff import parse_hunk
    from bot.prompt import NO_COMMENT

    texts = [NO_COMMENT] + [f"{label}:" for label, _, _ in labels(parse_hunk(hunk_text))]
    return texts, [list(backend.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]


def _analysed(backend, ids, texts, cands, prefix_cache):
    """analyse_prompt's scores and, for two fixed anchors and the free answer, the generated token ids."""
    from adapters.decoding import analyse_prompt

    decoded: list[list[int]] = []

    def decode(tokens: list[int]) -> str:
        decoded.append(list(tokens))
        return str(backend.tokenizer.decode(tokens, skip_special_tokens=True))

    analysis = analyse_prompt(
        backend.model, decode, backend.eos_ids, ids, cands, lambda probs: [1, 2],
        prefixes=texts, max_new_tokens=MAX_NEW, free=True, prefix_cache=prefix_cache,
    )  # fmt: skip
    bodies = [analysis.bodies[1], analysis.bodies[2], analysis.free]
    return analysis.probabilities, bodies, decoded


@pytest.mark.parametrize("style", ["untuned", "tuned"])
def test_constrained_scores_and_bodies_are_the_same_from_the_cached_prefix(model_dir, prompts, style):
    import torch

    from adapters.decoding import score_continuations
    from tests.model.conftest import HUNKS

    backend, inputs = _styled(model_dir, prompts, style)
    encoded = [backend._encode_prompt(inp) for inp in inputs]
    cache = PrefixCache(backend.model)
    cache.observe(encoded)
    (key,) = cache.entries
    assert len(key) == common_prefix_length(encoded) and len(key) >= cache.min_tokens  # something is shared
    states = cache._states(key)  # computed here once, before any pass
    snapshot = [(k.clone(), v.clone()) for k, v, *_ in states]
    for ids, (_, hunk_text) in zip(encoded, HUNKS):
        texts, cands = _candidate_ids(backend, hunk_text)
        plain_probs, plain_bodies, plain_ids = _analysed(backend, ids, texts, cands, None)
        probs, bodies, token_ids = _analysed(backend, ids, texts, cands, cache)
        assert probs == pytest.approx(plain_probs, rel=1e-4, abs=1e-9)
        assert score_continuations(backend.model, ids, cands, cache) == pytest.approx(plain_probs, rel=1e-4, abs=1e-9)
        assert token_ids == plain_ids and bodies == plain_bodies  # the same greedy token ids, texts and counts
    assert any(len(set(ids)) > 1 for ids in plain_ids)  # the bodies say something
    # computed once, and never written to by the passes that extended and cropped their copies
    assert cache.entries[key] is states and states.get_seq_length() == len(key)
    assert all(torch.equal(k, k0) and torch.equal(v, v0) for (k, v, *_), (k0, v0) in zip(states, snapshot))
    assert cache.hits == 2 * len(encoded) and cache.prefix_tokens_saved == 2 * len(encoded) * len(key)


@pytest.mark.parametrize("style", ["untuned", "tuned"])
def test_the_backend_scores_and_answers_anchors_from_the_cached_prefix(model_dir, prompts, style):
    from bot.anchoring import analyse_hunks
    from bot.diff import parse_hunk
    from tests.model.conftest import HUNKS

    hunks = [parse_hunk(text) for _, text in HUNKS]
    variants = {"all": 0.0, "own": None}
    results = []
    for cached in (True, False):
        backend, inputs = _styled(model_dir, prompts, style)
        started: list[int] = []
        if cached:
            real = backend.prefix_cache.start

            def start(ids, real=real, started=started):
                got = real(ids)
                started.extend([got[1]] if got is not None else [])
                return got

            backend.prefix_cache.start = start
        else:
            backend.prefix_cache = None  # as a model whose cache is not plain attention is served
        several = analyse_hunks(backend, inputs, hunks, variants, max_new_tokens=MAX_NEW, max_per_hunk=2, free=True)
        one = analyse_hunks(backend, inputs[:1], hunks[:1], variants, max_new_tokens=MAX_NEW, free=True)  # analyse()
        results.append((several, one, started))
    (several, one, started), (plain_several, plain_one, _) = results
    # every prompt's pass started from the prefix: score_answers' (several hunks) and analyse's (one hunk)
    assert len(started) == len(inputs) + 1
    for got, want in ((several, plain_several), (one, plain_one)):
        for s, w in zip(got.scores, want.scores):
            assert s.silence == pytest.approx(w.silence, rel=1e-4, abs=1e-9)
            assert s.confidence == pytest.approx(w.confidence, rel=1e-4, abs=1e-9)
        for name in variants:
            assert [a.text for a in got.variants[name]] == [a.text for a in want.variants[name]]
        assert [g.text for g in got.free] == [g.text for g in want.free]


@pytest.mark.parametrize("style", ["untuned", "tuned"])
def test_bodies_continue_from_the_scored_prompts_states(model_dir, prompts, style):
    """analyse_hunks keeps each scored prompt's states for the bodies' generate() call
    (PromptStates): the same bodies and free answers as a second prefill gives, with only the answer
    starts run through the model, and nothing kept afterwards."""
    from bot.anchoring import analyse_hunks
    from bot.diff import parse_hunk
    from tests.model.conftest import HUNKS

    hunks = [parse_hunk(text) for _, text in HUNKS]
    variants = {"all": 0.0, "own": None}
    results, fed = [], []
    for reuse in (True, False):
        backend, inputs = _styled(model_dir, prompts, style)
        if not reuse:
            backend.prompt_states = None
        real = backend.model.generate
        widths: list[int] = []

        def spy(widths=widths, real=real, **kwargs):
            cache = kwargs.get("past_key_values")
            widths.append(kwargs["input_ids"].shape[1] - (cache.get_seq_length() if cache is not None else 0))
            return real(**kwargs)

        backend.model.generate = spy
        results.append(
            analyse_hunks(backend, inputs, hunks, variants, max_new_tokens=MAX_NEW, max_per_hunk=2, free=True)
        )
        fed.append(widths)
        if reuse:
            states = backend.prompt_states
            assert states.hits == len(widths) > 0 and not states.entries and states.bytes == 0  # freed on the way out
    (got, want), (reused, prefilled) = results, fed
    for name in variants:
        assert [a.text for a in got.variants[name]] == [a.text for a in want.variants[name]]
        assert [a.confidences for a in got.variants[name]] == [a.confidences for a in want.variants[name]]
    assert [g.text for g in got.free] == [g.text for g in want.free]
    assert any(a.comments for a in got.variants["all"])  # bodies were written
    assert max(reused) < min(prefilled)  # tokens fed to generate(): the answer starts, not the prompts


def test_prompt_states_are_kept_only_inside_the_context_and_within_the_budget(tiny_llama, prompts):
    from adapters.decoding import score_with_states

    backend = _backend(tiny_llama, 2)
    states = backend.prompt_states
    ids = [backend._encode_prompt(p) for p in prompts[:3]]
    cands = [[5], [6, 7]]
    _, cache = score_with_states(backend.model, ids[0], cands)
    states.keep(ids[0], cache)
    assert not states.entries  # outside keeping(): nothing
    with states.keeping():
        size = sum(k.numel() * k.element_size() * 2 for k, *_ in cache)
        states.max_bytes = int(size * 2.5)  # room for two
        for row in ids:
            states.keep(row, score_with_states(backend.model, row, cands)[1])
        assert list(states.entries) == [tuple(ids[1]), tuple(ids[2])]  # the oldest went first
        assert states.layout([ids[0] + [9]], backend.pad_id) is None  # a row without kept states: no layout
        input_ids, attention, kwargs = states.layout([ids[1] + [9, 10], ids[2]], backend.pad_id)
        head = kwargs["past_key_values"].get_seq_length()
        assert head == max(len(ids[1]), len(ids[2]) - 1)  # a prompt alone keeps its last token to start from
        assert input_ids[0, -2:].tolist() == [9, 10] and input_ids[1, -1].item() == ids[2][-1]
        assert int(attention[0].sum()) == len(ids[1]) + 2 and int(attention[1].sum()) == len(ids[2])
    assert not states.entries
