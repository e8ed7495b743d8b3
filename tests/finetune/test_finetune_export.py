"""`export_merged`: the adapter merged at 16-bit gives the adapter's logits; the Modelfile follows
the prompt contract."""

from __future__ import annotations

import json

import pytest
import torch

from adapters.versions import ModelRegistry
from bot.errors import ModelError
from bot.prompt import ANSWER_END, SYSTEM_PROMPTS
from finetune.export import export_merged, ollama_template
from tests.finetune.helpers import run_cli


def test_merged_model_matches_base_plus_adapter(trained, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models, _ = trained
    version = ModelRegistry(models).get("v1")
    out = tmp_path / "merged"
    code, stdout, err = run_cli(
        ["export", "v1", "--merged", str(out), "--dtype", "bfloat16", "--models-dir", str(models)], capsys
    )
    assert code == 0, err
    assert {"config.json", "model.safetensors", "tokenizer.json", "Modelfile", "revbot-export.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not list(tmp_path.glob(".merged.incoming-*"))
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.dtype == torch.bfloat16
    assert not any("lora" in n for n, _ in merged.named_parameters())
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(version.base_model), str(version.path)
    ).eval()
    ids = AutoTokenizer.from_pretrained(out)("def load(path):\n    return open(path)", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = reference(input_ids=ids).logits
        got = merged.float()(input_ids=ids).logits
    assert (got - want).abs().max() < 0.05 * want.abs().max()  # bfloat16 rounding only
    meta = json.loads((out / "revbot-export.json").read_text())
    assert meta["version"] == "v1" and meta["base_model"] == version.base_model and meta["dtype"] == "bfloat16"
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./" in modelfile and f'PARAMETER stop "{ANSWER_END}"' in modelfile
    # the system text of the prompt format the version was trained on
    assert f'SYSTEM """{SYSTEM_PROMPTS[version.meta["prompt_format_version"]]}"""' in modelfile
    # refuses to overwrite, unless forced
    code, _, err = run_cli(["export", "v1", "--merged", str(out), "--models-dir", str(models)], capsys)
    assert code == 2 and "not empty" in err


def test_adapter_for_another_base_model_is_refused(trained, tiny_qwen, tmp_path):
    models, _ = trained
    with pytest.raises(ModelError, match="does not fit"):
        export_merged("v1", tmp_path / "x", base_model=str(tiny_qwen), models_dir=models)
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())


def test_ollama_template_renders_the_prompt_contract(tiny_llama, tiny_qwen):
    from transformers import AutoTokenizer

    plain = ollama_template(AutoTokenizer.from_pretrained(tiny_llama))
    assert plain == "{{ .System }}\n\n{{ .Prompt }}\n\n### Review\n"
    chat = ollama_template(AutoTokenizer.from_pretrained(tiny_qwen))
    assert chat == (
        "<|im_start|>system\n{{ .System }}<|im_end|>\n<|im_start|>user\n{{ .Prompt }}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
