"""Export a version for serving without peft: the adapter merged into its base model at 16-bit, in
the Hugging Face layout, with an Ollama ``Modelfile`` whose template renders exactly the prompt
contract the adapter was trained on.

The Modelfile's TEMPLATE is derived, not hand-written: the prompt contract is rendered through the
tokenizer (its chat template, or the plain format) with marker strings in place of the system and
user text, and the markers are swapped for Ollama's ``{{ .System }}`` and ``{{ .Prompt }}``. So a chat
model gets its own chat markup, and a plain model the plain format, whatever the family.

Serving the adapter itself (no merge) with vLLM::

    vllm serve BASE_MODEL --enable-lora --lora-modules revbot=models/v3 --max-lora-rank 16
    revbot review --backend openai --base-url http://127.0.0.1:8000/v1 --api-model revbot
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from adapters.files import atomic_write_json
from adapters.logs import hf_progress_bars_off
from adapters.versions import ModelRegistry, ModelVersion, now_iso
from bot.errors import ModelError, UsageError
from bot.prompt import ANSWER_END, PROMPT_FORMAT_VERSION, SYSTEM_PROMPTS, PromptInput, prompt_text

log = logging.getLogger(__name__)

EXPORT_META_FILE = "revbot-export.json"
MODELFILE = "Modelfile"
DTYPES = ("auto", "float16", "bfloat16")
_SYSTEM_MARK = "@@REVBOT_SYSTEM@@"
_PROMPT_MARK = "@@REVBOT_PROMPT@@"


def ollama_template(tokenizer: Any) -> str:
    """The prompt contract as an Ollama (Go) template, rendered through ``tokenizer``.

    The template must produce the very tokens training saw. Training tokenised a chat template's text
    as it stands and let the tokenizer add its own special tokens only to plain prompts. Ollama adds
    a BOS token itself exactly when the tokenizer says so (``add_bos_token``), so a leading BOS is cut
    from the template only then; a template whose first token merely *is* the BOS token (ChatML's
    ``<|im_start|>`` in SmolLM2) keeps it."""
    rendered = prompt_text(PromptInput(_SYSTEM_MARK, _PROMPT_MARK), tokenizer)
    bos = getattr(tokenizer, "bos_token", None)
    if bos and getattr(tokenizer, "add_bos_token", False) and rendered.startswith(bos):
        rendered = rendered[len(bos) :]
    rendered = rendered.replace("{{", '{{"{{"}}')
    if _SYSTEM_MARK not in rendered:  # a chat template that drops system messages
        rendered = rendered.replace(_PROMPT_MARK, "{{ .System }}\n\n" + _PROMPT_MARK)
    return rendered.replace(_SYSTEM_MARK, "{{ .System }}").replace(_PROMPT_MARK, "{{ .Prompt }}")


def modelfile(tokenizer: Any, context: int | None = None, prompt_format_version: int = PROMPT_FORMAT_VERSION) -> str:
    template = ollama_template(tokenizer)
    system = SYSTEM_PROMPTS[prompt_format_version]
    if '"""' in template or '"""' in system:
        raise ModelError("the chat template contains triple quotes, which an Ollama Modelfile cannot hold")
    lines = [
        "# Ollama Modelfile written by `revbot export`: the merged model in this directory, prompted",
        f"# exactly as it was trained (revbot prompt format {prompt_format_version}).",
        "# Create and run:  ollama create revbot -f Modelfile",
        "FROM ./",
        f'TEMPLATE """{template}"""',
        f'SYSTEM """{system}"""',
        f'PARAMETER stop "{ANSWER_END}"',
        "PARAMETER temperature 0",
    ]
    if context:
        lines.append(f"PARAMETER num_ctx {int(context)}")
    return "\n".join(lines) + "\n"


def _torch_dtype(name: str, base_config: Any) -> Any:
    import torch

    if name == "float16":
        return torch.float16
    if name == "bfloat16":
        return torch.bfloat16
    if name != "auto":
        raise UsageError(f"unknown dtype {name!r}; choose one of: {', '.join(DTYPES)}")
    declared = str(getattr(base_config, "dtype", None) or getattr(base_config, "torch_dtype", None) or "")
    if "bfloat16" in declared or (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def export_merged(
    version: ModelVersion | str,
    out_dir: str | Path,
    *,
    dtype: str = "auto",
    base_model: str | None = None,
    force: bool = False,
    models_dir: str | Path | None = None,
) -> Path:
    """Merge ``version``'s adapter into its base model at 16-bit and write it (safetensors, config,
    tokenizer, Modelfile, revbot-export.json) to ``out_dir``, atomically. ``base_model`` overrides
    the recorded base (the same model moved elsewhere)."""
    if isinstance(version, str):
        version = ModelRegistry(models_dir).resolve(version)
    from adapters.model import check_prompt_format, read_adapter_meta

    meta = read_adapter_meta(version.path)
    check_prompt_format(meta["prompt_format_version"], f"version {version.name}")
    base = base_model or meta["base_model"]
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise UsageError(f"{out} exists and is not empty; choose another directory or pass --force")
    out.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.incoming-", dir=out.parent))
    try:
        with hf_progress_bars_off():
            merged, tokenizer, torch_dtype = _merge(version, meta, base, dtype)
            merged.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        context = getattr(merged.config, "max_position_embeddings", None)
        (tmp / MODELFILE).write_text(modelfile(tokenizer, context, meta["prompt_format_version"]), encoding="utf-8")
        atomic_write_json(
            tmp / EXPORT_META_FILE,
            {
                "merged_from": str(version.path),
                "version": version.name,
                "base_model": base,
                "prompt_format_version": meta["prompt_format_version"],
                "dtype": str(torch_dtype).replace("torch.", ""),
                "created_at": now_iso(),
            },
        )
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("merged %s into %s at %s", version.name, out, torch_dtype)
    return out


def _merge(version: ModelVersion, meta: dict[str, Any], base: str, dtype: str) -> tuple[Any, Any, Any]:
    """(merged model, tokenizer, torch dtype): the base at 16-bit with the adapter merged in, after
    checking the adapter was trained on a model of this shape."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from adapters.model import model_source
    from finetune.train import quiet_library_warnings

    source = model_source(base)
    config = source.load(AutoConfig.from_pretrained, "model config")
    recorded = meta.get("base_config") or {}
    found = {k: getattr(config, k, None) for k in recorded}
    if recorded and found != recorded:
        differs = ", ".join(f"{k} {found[k]} != {recorded[k]}" for k in recorded if found[k] != recorded[k])
        raise ModelError(
            f"the adapter of {version.name} does not fit {base}: it was trained on {meta['base_model']} ({differs})"
        )
    torch_dtype = _torch_dtype(dtype, config)
    model = source.load(AutoModelForCausalLM.from_pretrained, "model", dtype=torch_dtype)
    tokenizer = (
        model_source(str(version.path), "tokenizer_config.json").load(AutoTokenizer.from_pretrained, "tokenizer")
        if (version.path / "tokenizer_config.json").is_file()
        else source.load(AutoTokenizer.from_pretrained, "tokenizer")
    )
    try:
        with quiet_library_warnings():
            model = PeftModel.from_pretrained(model, str(version.path))
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"the adapter of {version.name} does not fit {base} (it was trained on {meta['base_model']}): {first}"
        ) from exc
    return model.merge_and_unload(), tokenizer, torch_dtype
