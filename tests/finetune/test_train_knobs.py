"""The CPU training knobs: LoRA on the last N blocks only, and the autocast precision."""

from __future__ import annotations

import pytest

from bot.errors import UsageError
from finetune.train import TrainConfig, mixed_precision, prepare_model, train
from tests.finetune.helpers import synthetic_examples


def test_lora_layers_puts_adapters_on_the_last_blocks_only(tiny_llama):
    import torch

    config = TrainConfig(lora_layers=1, quantize="none", packing=False)
    prepared = prepare_model(str(tiny_llama), config, torch.device("cpu"))
    total = prepared.model.config.num_hidden_layers
    assert total >= 2
    blocks = {
        int(name.split(".layers.")[1].split(".")[0]) for name, p in prepared.model.named_parameters() if p.requires_grad
    }
    assert blocks == {total - 1}
    everywhere = prepare_model(str(tiny_llama), TrainConfig(quantize="none", packing=False), torch.device("cpu"))
    assert {
        int(n.split(".layers.")[1].split(".")[0]) for n, p in everywhere.model.named_parameters() if p.requires_grad
    } == set(range(total))


def test_precision_choices_and_their_validation():
    assert mixed_precision("fp32", on_cuda=True, cuda_bf16=True) == "no"
    assert mixed_precision("bf16", on_cuda=False, cuda_bf16=False) == "bf16"
    assert mixed_precision("auto", on_cuda=True, cuda_bf16=False) == "no"  # no bf16 on that GPU
    with pytest.raises(UsageError, match="--precision must be one of auto, bf16, fp32"):
        TrainConfig(precision="fp8").validate()
    with pytest.raises(UsageError, match="--lora-layers must be 0"):
        TrainConfig(lora_layers=-1).validate()
    cpu, gpu = TrainConfig().for_device(on_cuda=False), TrainConfig().for_device(on_cuda=True)
    assert (cpu.max_length, cpu.lora_layers) == (1024, 8) and (gpu.max_length, gpu.lora_layers) == (2048, 0)
    assert TrainConfig(max_length=300, lora_layers=0).for_device(on_cuda=False).lora_layers == 0  # asked: kept


def test_a_bf16_run_records_its_precision_and_memory(tiny_llama, tmp_path):
    version = train(
        synthetic_examples(n_prs=12),
        str(tiny_llama),
        tmp_path / "models",
        TrainConfig(
            max_steps=2,
            batch_size=2,
            max_length=256,
            precision="bf16",
            lora_layers=1,
            quantize="none",
            exemplars=0,  # rows of 256 tokens: hunks alone fit, hunks with exemplars would not
            min_train=2,
            min_val=1,
            min_test=1,
        ),
        progress=False,
    )
    assert version.meta["hyperparameters"]["mixed_precision"] == "bf16"
    assert version.meta["hyperparameters"]["lora_layers"] == 1
    metrics = version.metrics
    assert metrics["tokens"] > metrics["supervised_tokens"] > 0 and metrics["tokens_per_s"] > 0
    assert metrics["peak_rss_mb"] > 100
    assert metrics["val_loss"] == version.meta["history"]["validation"][-1]["loss"]  # measured once, not twice
