"""finetune.frozen_cache on tiny random models of real architectures (Llama, Qwen2): fast stand-ins
for the real base. The cache must give the training step exactly what the full model gives (loss and
LoRA gradients), reuse an example's states when it comes back in another row, and leave the model as
it found it."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from finetune.frozen_cache import FrozenPrefixCache, first_trained_layer  # noqa: E402


def _lora_model(path, last: int):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.set_attn_implementation("sdpa")
    total = model.config.num_hidden_layers
    torch.manual_seed(0)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj", "up_proj"],
        layers_to_transform=list(range(total - last, total)),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    for name, param in model.named_parameters():  # LoRA's B starts at zero: give the gradient something to differ by
        if "lora_B" in name:
            param.data.normal_(0, 0.02)
    return model


def _row(seqs):
    ids = torch.cat([torch.tensor(s) for s in seqs]).unsqueeze(0)
    positions = torch.cat([torch.arange(len(s)) for s in seqs]).unsqueeze(0)
    return ids, positions


def _loss_and_grads(model, ids, positions):
    model.zero_grad()
    out = model(input_ids=ids, position_ids=positions, labels=ids, use_cache=False)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.loss.detach(), grads


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen"])
def test_a_cached_step_equals_the_full_step(arch, request):
    model = _lora_model(request.getfixturevalue(arch), last=1)
    model.train()
    a, b, c = list(range(5, 18)), list(range(40, 49)), list(range(60, 71))
    ids, positions = _row([a, b])
    want_loss, want_grads = _loss_and_grads(model, ids, positions)

    cache = FrozenPrefixCache.install(model)
    assert cache is not None, "the check refused a model the cache suits"
    assert cache.split == first_trained_layer(model) == model.config.num_hidden_layers - 1
    try:
        loss, grads = _loss_and_grads(model, ids, positions)  # computes both examples' states
        assert cache.usage()["computed"] == 2 and cache.usage()["reused"] == 0
        assert torch.allclose(loss, want_loss, atol=1e-5)
        for name, grad in want_grads.items():
            assert torch.allclose(grads[name], grad, atol=1e-5, rtol=1e-4), name
        # the same examples in another row, in another order, beside a new one: two reused, one computed
        ids2, positions2 = _row([b, c, a])
        plain = model.get_base_model()
        loss2, _ = _loss_and_grads(model, ids2, positions2)
        assert cache.usage()["reused"] == 2 and cache.usage()["computed"] == 3
    finally:
        cache.remove()
    want2, _ = _loss_and_grads(model, ids2, positions2)
    assert torch.allclose(loss2, want2, atol=1e-5)
    assert not any("forward" in vars(layer) for layer in plain.get_decoder().layers)  # the blocks are back


def test_calls_it_cannot_split_run_the_frozen_blocks(tiny_llama):
    """A padded batch of two rows (no position ids): the cache stores nothing and the logits are the model's."""
    model = _lora_model(tiny_llama, last=1).eval()
    ids = torch.randint(3, 200, (2, 10))
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        cache = FrozenPrefixCache.install(model)
        assert cache is not None
        try:
            got = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            assert cache.usage()["kept"] == 0
        finally:
            cache.remove()
    assert torch.allclose(got, want, atol=1e-5)


def test_refuses_models_it_does_not_suit(tiny_llama):
    every_block = _lora_model(tiny_llama, last=0)  # layers_to_transform=[]: LoRA nowhere, so nothing trains...
    for p in every_block.parameters():
        p.requires_grad_(True)  # ...then everything trains: no frozen block below the adapted ones
    assert FrozenPrefixCache.install(every_block) is None

    model = _lora_model(tiny_llama, last=1)
    model.config.attention_dropout = 0.1  # the frozen blocks would differ from pass to pass
    assert FrozenPrefixCache.install(model) is None
    assert not any("forward" in vars(layer) for layer in model.get_base_model().get_decoder().layers)


def test_keeps_no_more_than_its_budget(tiny_llama):
    model = _lora_model(tiny_llama, last=1).train()
    cache = FrozenPrefixCache.install(model, max_bytes=1)
    assert cache is not None
    try:
        ids, positions = _row([list(range(5, 18)), list(range(40, 49))])
        first, _ = _loss_and_grads(model, ids, positions)
        again, _ = _loss_and_grads(model, ids, positions)
        assert cache.usage()["kept"] == 0 and cache.usage()["computed"] == 4
        assert torch.allclose(first, again)
    finally:
        cache.remove()


def test_training_with_the_cache_ends_where_training_without_it_does(tmp_path, tiny_llama, monkeypatch):
    """`revbot train` with LoRA on the last block of two: the cache is used (examples reused across
    epochs and validation passes) and the adapter and losses are those of a run without it. In fp32:
    under bf16 autocast the frozen blocks' matmuls see other row shapes when only some examples are
    computed, and the rounding differs in the last bits."""
    from safetensors.torch import load_file

    from finetune import frozen_cache
    from finetune.train import TrainConfig, train
    from tests.finetune.helpers import synthetic_examples

    examples = synthetic_examples()
    config = dict(
        epochs=3, batch_size=2, max_length=512, eval_every=2, quantize="none", lora_layers=1, precision="fp32"
    )
    cached = train(examples, str(tiny_llama), tmp_path / "cached", TrainConfig(**config), progress=False)
    use = cached.meta["metrics"]["frozen_block_cache"]
    assert use["frozen_blocks"] == 1 and use["reused"] > use["computed"] > 0

    monkeypatch.setattr(frozen_cache.FrozenPrefixCache, "install", classmethod(lambda cls, model, **kw: None))
    plain = train(examples, str(tiny_llama), tmp_path / "plain", TrainConfig(**config), progress=False)
    assert plain.meta["metrics"]["frozen_block_cache"] is None

    a = load_file(cached.path / "adapter_model.safetensors")
    b = load_file(plain.path / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    losses = [[h["loss"] for h in v.meta["history"]["train"]] for v in (cached, plain)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert cached.metrics["val_loss"] == pytest.approx(plain.metrics["val_loss"], rel=1e-4)


def test_a_single_epoch_keeps_only_what_validation_computes(tiny_llama):
    model = _lora_model(tiny_llama, last=1)
    cache = FrozenPrefixCache.install(model, keep_training=False)
    assert cache is not None
    try:
        ids, positions = _row([list(range(5, 18)), list(range(40, 49))])
        model.train()
        _loss_and_grads(model, ids, positions)
        assert cache.usage()["kept"] == 0  # a training example of a one-epoch run does not come back
        model.eval()
        with torch.no_grad():
            model(input_ids=ids, position_ids=positions, use_cache=False)
            model(input_ids=ids, position_ids=positions, use_cache=False)
        assert cache.usage()["kept"] == 2 and cache.usage()["reused"] == 2  # validation passes repeat
    finally:
        cache.remove()
