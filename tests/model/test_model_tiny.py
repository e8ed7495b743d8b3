"""revbot.dev.tiny: tiny random models of real architectures that load through the ordinary HF classes."""

from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner

from bot.errors import UsageError
from bot.prompt import ANSWER_END
from revbot.dev.tiny import build_tiny_model, default_corpus, init_model_command


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "arch, model_class, chat", [("llama", "LlamaForCausalLM", False), ("qwen2", "Qwen2ForCausalLM", True)]
)
def test_both_archs_load_with_from_pretrained(request, arch, model_class, chat):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = request.getfixturevalue(f"tiny_{arch}")
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == model_class
    assert model.config.model_type == arch
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer) <= 2048
    for token in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(tokenizer, token) is not None, token
    assert bool(tokenizer.chat_template) is chat
    text = "def load(path):\n    return json.load(open(path))  # é ünïcode\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text  # byte-level: every string round-trips
    assert "random" in (path / "README.md").read_text().lower()


def test_chat_template_is_chatml_and_plain_model_adds_bos(tiny_llama, tiny_qwen2):
    from transformers import AutoTokenizer

    qwen = AutoTokenizer.from_pretrained(tiny_qwen2)
    rendered = qwen.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert rendered == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    assert qwen.convert_tokens_to_ids("<|im_end|>") == qwen.eos_token_id
    # The ChatML markers are single special tokens, not spelled out byte by byte.
    assert len(qwen("<|im_start|>user", add_special_tokens=False)["input_ids"]) == 2

    llama = AutoTokenizer.from_pretrained(tiny_llama)
    ids = llama("hello")["input_ids"]
    assert ids[0] == llama.bos_token_id


def test_prompt_contract_words_tokenize_compactly(tiny_llama):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    assert len(tok(ANSWER_END, add_special_tokens=False)["input_ids"]) <= 3
    assert len(tok("### Review", add_special_tokens=False)["input_ids"]) <= 3
    assert any(ANSWER_END in text for text in default_corpus())


def test_same_seed_same_model_other_seed_other_weights(tmp_path):
    a = build_tiny_model(tmp_path / "a", arch="qwen2", seed=7, hidden_size=32, num_layers=1)
    b = build_tiny_model(tmp_path / "b", arch="qwen2", seed=7, hidden_size=32, num_layers=1)
    c = build_tiny_model(tmp_path / "c", arch="qwen2", seed=8, hidden_size=32, num_layers=1)
    assert _digest(a / "model.safetensors") == _digest(b / "model.safetensors")
    assert _digest(a / "tokenizer.json") == _digest(b / "tokenizer.json")
    assert _digest(a / "model.safetensors") != _digest(c / "model.safetensors")


def test_custom_corpus_and_sizes(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    corpus = ["frobnicate the widget " * 20, "widget frobnicate " * 20]
    out = build_tiny_model(
        tmp_path / "m",
        arch="llama",
        corpus=corpus,
        vocab_size=300,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        max_position=512,
        chat_template=True,
    )
    cfg = AutoConfig.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.max_position_embeddings) == (
        32,
        1,
        2,
        512,
    )
    assert len(tok) <= 300
    assert tok.chat_template  # a chat Llama when asked for
    assert len(tok(" frobnicate", add_special_tokens=False)["input_ids"]) == 1  # merges learnt from the corpus


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"arch": "gpt2"}, "unknown architecture"),
        ({"hidden_size": 30, "num_heads": 4}, "multiple of the number of heads"),
        ({"vocab_size": 100}, "too small"),
        ({"corpus": ["", "  "]}, "corpus is empty"),
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path, kwargs, fragment):
    with pytest.raises(UsageError, match=fragment):
        build_tiny_model(tmp_path / "x", **kwargs)


def test_init_model_command(tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(init_model_command, ["--help"]).output
    assert "tests and the offline demo" in help_text
    assert "Qwen/Qwen2.5-Coder-1.5B-Instruct" in help_text

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def add(a, b):\n    return a + b\n" * 30)
    out = tmp_path / "tiny"
    result = runner.invoke(
        init_model_command,
        [
            str(out),
            "--arch",
            "qwen2",
            "--corpus",
            str(corpus),
            "--vocab-size",
            "400",
            "--hidden-size",
            "32",
            "--layers",
            "1",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "tiny random qwen2" in result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"]) == ("qwen2", 32, 1)
    assert (out / "chat_template.jinja").exists()

    again = runner.invoke(init_model_command, [str(out)])
    assert again.exit_code != 0 and "not empty" in again.output and "--force" in again.output
    forced = runner.invoke(init_model_command, [str(out), "--force", "--hidden-size", "32", "--layers", "1"])
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
    assert not (out / "chat_template.jinja").exists()  # nothing left over from the qwen2 build


def test_transformers_progress_bars_are_hidden_while_weights_are_written_then_restored_as_they_were(tmp_path):
    from transformers.utils import logging as hf_logging

    from adapters.logs import hf_progress_bars_off

    was = hf_logging.is_progress_bar_enabled()
    try:
        for before in (True, False):
            (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()
            with pytest.raises(RuntimeError, match="a failed load"), hf_progress_bars_off():
                assert not hf_logging.is_progress_bar_enabled()
                raise RuntimeError("a failed load")
            assert hf_logging.is_progress_bar_enabled() is before
            build_tiny_model(tmp_path / str(before), arch="qwen2", seed=1, hidden_size=32, num_layers=1)
            assert hf_logging.is_progress_bar_enabled() is before
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()
