"""Training: what a version holds, loss on the answer only, packing, resume, early stopping, and
the errors a user can act on."""

from __future__ import annotations

import json

import pytest
import torch

from adapters.versions import ModelRegistry
from bot.errors import DataError, ModelError, UsageError
from bot.prompt import PROMPT_FORMAT_VERSION
from finetune import train as train_module
from finetune.loss import AnswerHead
from finetune.train import (
    TrainConfig,
    TrainingInterrupted,
    check_packing,
    detect_target_modules,
    ensure_pad_token,
    train,
)
from tests.finetune.helpers import synthetic_examples

FAST = dict(max_steps=4, batch_size=2, max_length=512, eval_every=2, quantize="none")


def test_version_holds_adapter_tokenizer_metadata_and_curve(trained, tiny_llama):
    models, out = trained
    registry = ModelRegistry(models)
    (version,) = registry.list()
    assert "wrote v1" in out and "v1 is now current" in out  # the first version is promoted
    assert registry.current_name() == "v1"
    files = {p.name for p in version.path.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "revbot.json",
        "loss_curve.png",
        "data",
    } <= files
    assert (version.path / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    meta = version.meta
    assert meta["base_model"] == str(tiny_llama.resolve())
    # the synthetic examples' comments sit on their hunk's last line: labels (format 3), not quotes
    assert meta["prompt_format_version"] == 3 < PROMPT_FORMAT_VERSION
    assert meta["base_config"]["model_type"] == "llama" and meta["base_config"]["hidden_size"] == 64
    from adapters.files import read_examples
    from bot.examples import fingerprint

    saved = {
        name: list(read_examples(version.path / "data" / f"{name}.jsonl")) for name in ("train", "validation", "test")
    }
    assert meta["data"]["fingerprint"] == fingerprint([e for part in saved.values() for e in part])
    assert meta["data"]["fingerprint"] == fingerprint(synthetic_examples())
    assert {k: v["examples"] for k, v in meta["data"]["counts"].items()} == {k: len(v) for k, v in saved.items()}
    hyper = meta["hyperparameters"]
    assert (hyper["lora_r"], hyper["lora_alpha"], hyper["lora_dropout"]) == (16, 32, 0.0)
    assert hyper["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (
        hyper["quantization"] == "none" and hyper["quantize"] == "none"
    )  # the CPU default: plain LoRA (measured faster)
    assert {"torch", "transformers", "peft", "bitsandbytes"} <= set(meta["libraries"])
    metrics = meta["metrics"]
    assert metrics["steps"] == 4 and metrics["packing"] is True
    assert 0 <= metrics["padding_share"] < 0.5
    assert metrics["val_loss"] > 0 and metrics["test_loss"] > 0
    assert {"load_s", "train_s", "total_s"} <= set(meta["timings"])
    assert [h["step"] for h in meta["history"]["validation"]] == [2, 4]
    adapter = json.loads((version.path / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_llama.resolve())
    assert adapter["r"] == 16 and set(adapter["target_modules"]) == set(hyper["target_modules"])
    assert not list(models.glob(".incoming-*")) and not (models / ".runs").exists()  # nothing left behind


def test_version_loads_with_peft_and_the_review_backend(trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from adapters.model import BackendOptions, load_backend

    models, _ = trained
    version = ModelRegistry(models).get("v1")
    base = AutoModelForCausalLM.from_pretrained(version.base_model)
    peft_model = PeftModel.from_pretrained(base, str(version.path))
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # trained: LoRA B starts at zero
    backend = load_backend(BackendOptions(adapter=str(version.path)))
    (gen,) = backend.generate([synthetic_examples(1, 1)[0].prompt_input()], max_new_tokens=4)
    assert gen.completion_tokens >= 1


def test_answer_head_loss_equals_masked_cross_entropy(tiny_llama):
    """The CPU's answer-only head on a padding-free batch as TRL's collator builds it: the same loss as
    cross-entropy over the full logits at the supervised positions."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from finetune.data import encode_examples

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    encoded, _ = encode_examples(synthetic_examples(3, 2), tok, 512)
    collate = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)
    inputs = collate([{"input_ids": list(e.ids), "labels": e.labels()} for e in encoded])
    head = AnswerHead(model)
    with torch.no_grad():
        loss_sum, n = head.loss_sum(model, inputs)
        head.remove()
        full = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits
    assert n == sum(
        e.n_answer for e in encoded
    )  # every answer token (the first one is predicted from the prompt's last)
    labels = inputs["labels"][:, 1:]
    logits = full[:, :-1]
    reference = torch.nn.functional.cross_entropy(logits[labels != -100], labels[labels != -100], reduction="sum")
    assert loss_sum.item() == pytest.approx(reference.item(), rel=1e-5)
    assert (inputs["labels"] == -100).sum() > n  # the prompts carry no loss


def test_packed_rows_give_each_example_its_own_logits(tiny_llama, tiny_qwen):
    from transformers import AutoModelForCausalLM

    for path in (tiny_llama, tiny_qwen):
        model = AutoModelForCausalLM.from_pretrained(path)
        ok, difference = check_packing(model, model.config.vocab_size, "cpu")
        assert ok and difference < 1e-4

    class Leaky(torch.nn.Module):
        """Attention that ignores position ids: packed examples would see each other."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, position_ids=None, use_cache=False):
            return self.inner(input_ids=input_ids, use_cache=False)

    ok, difference = check_packing(Leaky(model), model.config.vocab_size, "cpu")
    assert not ok and difference > 1e-2


def test_target_modules_are_detected_from_the_model(tiny_qwen):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen)
    assert detect_target_modules(model) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, tiny_llama):
    """Ctrl-C finishes the step and writes a checkpoint; a second Ctrl-C (or one raised inside the run)
    stops at once and leaves the last checkpoint. Either way --resume ends with the uninterrupted weights."""
    import os
    import signal

    from safetensors.torch import load_file

    examples = synthetic_examples()
    straight = train(examples, str(tiny_llama), tmp_path / "a", TrainConfig(**FAST), progress=False)

    def ctrl_c(info):
        if info.step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match=r"step 3 of 4; checkpoint in .*checkpoint-3\. .*--resume") as err:
        train(examples, str(tiny_llama), tmp_path / "b", TrainConfig(**FAST), progress=False, callback=ctrl_c)
    assert err.value.exit_code == 130
    assert ModelRegistry(tmp_path / "b").list() == []  # an interrupted run publishes nothing

    def crash(info):
        if info.step == 2:
            assert info.checkpoint is not None and info.checkpoint.is_dir()
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match=r"checkpoint-2\. .*--resume"):
        train(examples, str(tiny_llama), tmp_path / "c", TrainConfig(**FAST), progress=False, callback=crash)
    with pytest.raises(UsageError, match="no checkpoint of this run"):  # other settings: another run
        train(
            examples, str(tiny_llama), tmp_path / "c", TrainConfig(**{**FAST, "lr": 3e-3}, resume=True), progress=False
        )

    def losses(v):
        return [h["loss"] for h in v.meta["history"]["train"]]

    a = load_file(straight.path / "adapter_model.safetensors")
    for models, continued in (("b", [4]), ("c", [3, 4])):
        steps = []
        resumed = train(
            examples,
            str(tiny_llama),
            tmp_path / models,
            TrainConfig(**FAST, resume=True),
            progress=False,
            callback=lambda info, steps=steps: steps.append(info.step),
        )
        assert steps == continued  # continued after the checkpoint, did not start over
        b = load_file(resumed.path / "adapter_model.safetensors")
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
        assert losses(resumed) == pytest.approx(losses(straight), rel=1e-5)
        assert resumed.metrics["val_loss"] == pytest.approx(straight.metrics["val_loss"], rel=1e-5)
        assert resumed.metrics["supervised_tokens"] == straight.metrics["supervised_tokens"]  # counted across sessions
        assert not (tmp_path / models / ".runs").exists()  # checkpoints go once the version is written


def test_early_stopping_keeps_the_best_weights(tmp_path, tiny_llama, monkeypatch):
    """Validation gets worse after step 1 (its loss is scaled up from then on): training stops after
    ``patience`` worse evaluations and the saved adapter holds step 1's weights."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    real = train_module._RevbotTrainerMixin.compute_loss
    weights = {}

    def worse_after_step_1(self, model, inputs, *args, **kwargs):
        loss = real(self, model, inputs, *args, **kwargs)
        if model.training:
            return loss
        step = self.state.global_step
        weights.setdefault(step, {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()})
        return loss if step <= 1 else loss * 1.5

    monkeypatch.setattr(train_module._RevbotTrainerMixin, "compute_loss", worse_after_step_1)
    config = TrainConfig(max_steps=8, batch_size=2, max_length=512, eval_every=1, patience=2, quantize="none")
    version = train(synthetic_examples(), str(tiny_llama), tmp_path, config, progress=False)
    m = version.metrics
    history = version.meta["history"]["validation"]
    assert m["stopped_early"] and m["steps"] == 3 and [h["step"] for h in history] == [1, 2, 3]
    assert m["best_step"] == 1
    assert m["val_loss"] == pytest.approx(history[0]["loss"], rel=1e-6)  # the kept weights' loss, not re-measured
    saved = load_file(version.path / "adapter_model.safetensors")
    assert saved.keys() == weights[1].keys()
    for key, value in saved.items():
        torch.testing.assert_close(value, weights[1][key])
    assert any(not torch.equal(weights[3][k], weights[1][k]) for k in saved)  # training did move on after step 1


def test_a_failure_while_writing_publishes_nothing(tmp_path, tiny_llama, monkeypatch):
    def broken_plot(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(train_module, "plot_loss_curve", broken_plot)
    with pytest.raises(OSError, match="disk full"):
        train(synthetic_examples(), str(tiny_llama), tmp_path, TrainConfig(**{**FAST, "max_steps": 1}), progress=False)
    assert ModelRegistry(tmp_path).list() == [] and ModelRegistry(tmp_path).incoming() == []


def test_out_of_memory_names_the_knobs(tmp_path, tiny_llama, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_module._RevbotTrainerMixin, "compute_loss", oom)
    with pytest.raises(ModelError) as err:
        train(synthetic_examples(), str(tiny_llama), tmp_path, TrainConfig(**FAST), progress=False)
    message = str(err.value)
    for knob in ("--batch-size (now 2)", "--max-length (now 512)", "--gradient-checkpointing", "4-bit"):
        assert knob in message


def test_bad_inputs_are_clear_errors(tmp_path, tiny_llama):
    examples = synthetic_examples()
    with pytest.raises(DataError, match="dataset is empty"):
        train([], str(tiny_llama), tmp_path, TrainConfig(**FAST))
    with pytest.raises(DataError, match="dataset too small"):
        train(examples[:6], str(tiny_llama), tmp_path, TrainConfig(**FAST))
    with pytest.raises(UsageError, match="--batch-size"):
        train(examples, str(tiny_llama), tmp_path, TrainConfig(**{**FAST, "batch_size": 0}))
    with pytest.raises(ModelError, match="local path"):  # tests run with HF_HUB_OFFLINE=1
        train(examples, "no-such-org/no-such-model", tmp_path, TrainConfig(**FAST))
    with pytest.raises(UsageError, match=r"w_q not found.*q_proj"):
        train(examples, str(tiny_llama), tmp_path, TrainConfig(**{**FAST, "target_modules": ["w_q"]}))
    with pytest.raises(UsageError, match="lm_head is the output layer"):
        train(examples, str(tiny_llama), tmp_path, TrainConfig(**{**FAST, "target_modules": ["q_proj", "lm_head"]}))
    with pytest.raises(DataError, match="longer than --max-length"):
        train(examples, str(tiny_llama), tmp_path, TrainConfig(**{**FAST, "max_length": 16}))
    assert ModelRegistry(tmp_path).list() == []


def test_tokenizer_without_pad_token_pads_with_eos(tiny_llama):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.pad_token = None
    assert ensure_pad_token(tok) and tok.pad_token == tok.eos_token
    assert not ensure_pad_token(tok)
    tok.pad_token = None
    tok.eos_token = None
    with pytest.raises(ModelError, match="neither a pad token nor an eos token"):
        ensure_pad_token(tok)


def test_base_model_without_pad_token_trains_and_saves_one(tmp_path, tiny_llama):
    import shutil

    from transformers import AutoTokenizer

    base = tmp_path / "no-pad"
    shutil.copytree(tiny_llama, base)
    config_path = base / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text())
    tok_config.pop("pad_token", None)
    config_path.write_text(json.dumps(tok_config))
    assert AutoTokenizer.from_pretrained(base).pad_token is None
    version = train(
        synthetic_examples(), str(base), tmp_path / "m", TrainConfig(**{**FAST, "max_steps": 1}), progress=False
    )
    assert version.meta["pad_token_set_to_eos"] is True
    saved = AutoTokenizer.from_pretrained(version.path)
    assert saved.pad_token == saved.eos_token == "</s>"


def test_chat_model_trains_without_packing_and_serves(tmp_path, tiny_qwen):
    from adapters.model import BackendOptions, load_backend

    version = train(
        synthetic_examples(),
        str(tiny_qwen),
        tmp_path,
        TrainConfig(**{**FAST, "max_steps": 2, "packing": False}),
        progress=False,
    )
    assert version.metrics["packing"] is False and version.meta["chat_template"] is True
    backend = load_backend(BackendOptions(adapter=str(version.path)))
    assert backend.chat
    (gen,) = backend.generate([synthetic_examples(1, 1)[0].prompt_input()], max_new_tokens=3)
    assert gen.completion_tokens >= 1


def test_two_processes_train_one_version(tmp_path, tiny_llama):
    """The distributed path (what `accelerate launch` sets up on several GPUs), on two CPU processes
    over loopback: batches are shared out, one process writes the version and reports."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from adapters.files import write_examples

    data = tmp_path / "examples.jsonl"
    write_examples(data, synthetic_examples())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        "-m",
        "revbot",
        "train",
        "--data",
        str(data),
        "--model",
        str(tiny_llama),
        "--models-dir",
        str(tmp_path / "m"),
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--max-length",
        "512",
        "--quiet",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote v1") == 1 and "wrote v2" not in proc.stdout
    (version,) = ModelRegistry(tmp_path / "m").list()
    hyper = version.meta["hyperparameters"]
    assert hyper["world_size"] == 2
    assert version.metrics["epochs"] == pytest.approx(2 / hyper["steps_per_epoch"])
