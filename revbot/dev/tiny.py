"""Tiny randomly initialised models of real architectures, for tests and the offline demo ONLY.

No model hub is reachable in CI or in the offline demo, yet every code path (tokenizer loading,
chat templates, left-padded batched generation, 4-bit quantisation, peft adapters) must run against
the real transformers classes. A tiny Llama or Qwen2 with a byte-level BPE tokenizer trained here on
a small local corpus is enough for that, builds in about a second, and loads with the ordinary
``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``. Its output is noise
until it is trained; real users pass a hub id or a local path of a real model instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from adapters.logs import hf_progress_bars_off
from bot.errors import ModelError, UsageError

log = logging.getLogger(__name__)

ARCHS = ("llama", "qwen2")

# Special tokens. ChatML markers are added only for models that get a chat template.
UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

README_TEXT = """\
# Tiny random {arch} model (revbot test/demo fixture)

This directory was written by `revbot dev init-model` (`revbot.dev.tiny.build_tiny_model`). It is a
**randomly initialised** {arch} causal LM ({layers} layers, hidden size {hidden}, vocabulary of
{vocab} tokens) with a byte-level BPE tokenizer trained locally on a few kilobytes of code and review
text. It exists so that tests and the offline demo can exercise the real transformers, peft and
bitsandbytes code paths without downloading anything.

It knows nothing: its output is noise until it is fine-tuned, and even then it is far too small to
review code. For real reviews pass a hub id or the path of a real model, for example
`--model Qwen/Qwen2.5-Coder-1.5B-Instruct`.

Chat template: {chat}. Seed: {seed}.
"""

# A small built-in corpus: code in a few languages, unified-diff hunks and review comments, so the
# tokenizer learns merges for the text it will actually see. The prompt contract's own wording is
# added at build time (see _prompt_contract_text).
_CODE = [
    "def load_config(path):\n    with open(path) as handle:\n        return json.load(handle)\n",
    "import os\nimport sys\n\n\ndef main(argv=None):\n    args = parse_args(argv)\n    return run(args)\n",
    "class Cache:\n    def __init__(self, size=128):\n        self.size = size\n        self.items = {}\n\n"
    "    def get(self, key, default=None):\n        return self.items.get(key, default)\n",
    "for index, item in enumerate(items):\n    if item is None:\n        continue\n    total += item.value\n",
    "try:\n    response = session.get(url, timeout=10)\n    response.raise_for_status()\n"
    "except requests.RequestException as exc:\n    log.warning('request failed: %s', exc)\n    raise\n",
    "function fetchUser(id) {\n  return fetch(`/api/users/${id}`).then((res) => res.json());\n}\n",
    "const items = list.filter((x) => x !== null).map((x) => x.name);\nexport default items;\n",
    "func (s *Server) Handle(w http.ResponseWriter, r *http.Request) {\n\tif err := s.check(r); err != nil {\n"
    "\t\thttp.Error(w, err.Error(), http.StatusBadRequest)\n\t\treturn\n\t}\n}\n",
    "fn parse(input: &str) -> Result<Config, Error> {\n    let value = input.trim().parse::<u32>()?;\n"
    "    Ok(Config { value })\n}\n",
    "SELECT id, name FROM users WHERE created_at > ? ORDER BY id LIMIT 100;\n",
    "if (buffer == NULL) {\n    return -1;\n}\nmemcpy(dst, src, len);\nfree(buffer);\n",
    "    @property\n    def is_empty(self) -> bool:\n        return len(self.items) == 0\n",
    "assert result == expected, f'got {result!r}'\nself.assertEqual(len(rows), 3)\n",
]
_DIFFS = [
    "@@ -10,7 +10,8 @@ def load_config(path):\n     with open(path) as handle:\n-        return json.load(handle)\n"
    "+        data = json.load(handle)\n+        return validate(data)\n \n \n def main(argv=None):\n",
    "@@ -1,4 +1,5 @@\n import os\n+import re\n import sys\n \n \n",
    "@@ -42,6 +42,6 @@ class Cache:\n     def get(self, key, default=None):\n-        return self.items[key]\n"
    "+        return self.items.get(key, default)\n",
    "@@ -3,9 +3,7 @@ function fetchUser(id) {\n-  var res = fetch('/api/users/' + id);\n"
    "-  return res.json();\n+  return fetch(`/api/users/${id}`).then((res) => res.json());\n }\n",
    "diff --git a/src/app.py b/src/app.py\nindex 3b18e51..a9c4f02 100644\n--- a/src/app.py\n+++ b/src/app.py\n",
]
_REVIEWS = [
    "nit: please rename this variable, the name does not say what it holds.",
    "This can raise a KeyError when the key is missing; use .get() with a default.",
    "Consider adding a test for the empty list case.",
    "Why is the timeout hard-coded here? Read it from the config instead.",
    "The file handle is never closed; use a with block.",
    "This loop is quadratic in the number of items. A dict lookup would make it linear.",
    "Please add a docstring explaining why this is needed.",
    "Looks good to me, thanks!",
    "Should this be logged at debug level? It will be noisy in production.",
    "Typo in the error message.",
    "We already have a helper for this in utils; reuse it instead of duplicating the logic.",
    "This will break for negative numbers.",
    "Prefer f-strings over string concatenation here.",
    "Missing error handling: what happens if the request fails?",
    "LGTM",
    "Can we avoid the mutable default argument?",
    "No comment.",
]


# Everything a build may write; removed first when rebuilding into the same directory.
_WRITTEN_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "README.md",
    "revbot-tiny.json",
)


def _prompt_contract_text() -> list[str]:
    """The prompt contract's own words: a few rendered prompts and answers, so the format (anchor
    labels, headers, the end marker) tokenizes compactly."""
    from bot import prompt
    from bot.diff import LEFT, RIGHT, parse_hunk
    from bot.prompt import PromptComment

    samples = [
        ("src/app.py", _DIFFS[0], [PromptComment(12, RIGHT, _REVIEWS[1])]),
        ("pkg/cache.py", _DIFFS[2], [PromptComment(43, LEFT, _REVIEWS[0]), PromptComment(44, RIGHT, _REVIEWS[7])]),
        ("web/user.js", _DIFFS[3], []),
        ("setup.py", _DIFFS[1], [PromptComment(2, RIGHT, "Is this import used?\nIt looks unused.")]),
    ]
    texts = []
    for path, hunk_text, comments in samples:
        inp = prompt.render_input(path, parse_hunk(hunk_text))
        texts += [inp.plain_text(), prompt.render_answer(comments)]
    return texts


def default_corpus() -> list[str]:
    """The built-in tokenizer corpus: code, diffs, review comments and the prompt contract's words."""
    return _CODE + _DIFFS + _REVIEWS + _prompt_contract_text()


def _train_tokenizer(arch: str, corpus: Iterable[str], vocab_size: int, specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    if arch == "qwen2":
        # AutoTokenizer always loads a qwen2 checkpoint as Qwen2Tokenizer, which imposes its own
        # normaliser and pre-tokeniser; train with exactly those so the merges match what is loaded.
        from transformers import Qwen2Tokenizer

        reference = Qwen2Tokenizer()._tokenizer
        tokenizer.normalizer = reference.normalizer
        tokenizer.pre_tokenizer = reference.pre_tokenizer
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


def build_tiny_model(
    out_dir: str | Path,
    arch: str = "llama",
    corpus: Iterable[str] | None = None,
    vocab_size: int = 2048,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position: int = 2048,
    seed: int = 0,
    chat_template: bool | None = None,
) -> Path:
    """Write a tiny random ``arch`` model plus its tokenizer to ``out_dir`` (standard HF layout).

    ``vocab_size`` is an upper bound: BPE stops early on a small corpus and the model's embedding
    matches the tokenizer's real size. ``chat_template`` defaults to True for qwen2 (ChatML) and False
    for llama, so both the chat and the plain prompt paths get exercised. Same arguments and seed give
    byte-identical weights.
    """
    _check_shape(arch, vocab_size, hidden_size, num_layers, num_heads)
    if chat_template is None:
        chat_template = arch == "qwen2"
    tokenizer = _tokenizer(arch, corpus, vocab_size, chat_template, max_position)
    kv_heads = num_heads // 2 if num_heads % 2 == 0 else num_heads  # grouped-query attention, as the real ones
    eos_ids = (
        [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(EOS)]
        if chat_template
        else tokenizer.convert_tokens_to_ids(EOS)
    )
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    out = Path(out_dir)
    _save_random_model(out, arch, common, tokenizer, eos_ids, seed)
    (out / "README.md").write_text(
        README_TEXT.format(
            arch=arch,
            layers=num_layers,
            hidden=hidden_size,
            vocab=len(tokenizer),
            chat="ChatML (<|im_start|>/<|im_end|>)" if chat_template else "none (a plain model)",
            seed=seed,
        )
    )
    (out / "revbot-tiny.json").write_text(json.dumps({"tiny": True, "arch": arch, "seed": seed}, indent=2) + "\n")
    log.info("wrote a tiny random %s model (%d tokens) to %s", arch, len(tokenizer), out)
    return out


def _check_shape(arch: str, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int) -> None:
    if arch not in ARCHS:
        raise UsageError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    if hidden_size <= 0 or num_layers <= 0 or num_heads <= 0 or hidden_size % num_heads:
        raise UsageError(f"hidden size {hidden_size} must be a positive multiple of the number of heads {num_heads}")
    if (hidden_size // num_heads) % 2:
        raise UsageError(f"head size {hidden_size // num_heads} must be even (rotary embeddings)")
    if vocab_size < 300:
        raise UsageError(f"vocab size {vocab_size} is too small: the byte alphabet alone needs 256 tokens")


def _tokenizer(arch: str, corpus: Iterable[str] | None, vocab_size: int, chat_template: bool, max_position: int) -> Any:
    """A BPE tokenizer trained on ``corpus`` (default: the built-in one), wrapped for transformers;
    chat models get ChatML, plain ones a leading <s> like Llama's."""
    from transformers import PreTrainedTokenizerFast

    specials = [UNK, BOS, EOS, PAD] + ([IM_START, IM_END] if chat_template else [])
    texts = list(default_corpus() if corpus is None else corpus)
    if not any(t.strip() for t in texts):
        raise UsageError("the tokenizer corpus is empty")
    raw = _train_tokenizer(arch, texts, vocab_size, specials)
    if not chat_template:
        # Like real Llama tokenizers, prepend <s> to plain prompts (chat templates carry their own markers).
        from tokenizers import processors

        raw.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, raw.token_to_id(BOS))]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=BOS,
        eos_token=IM_END if chat_template else EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=max_position,
    )
    if chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _save_random_model(out: Path, arch: str, config: dict[str, Any], tokenizer: Any, eos_ids: Any, seed: int) -> None:
    """Initialise the model from ``seed`` (without disturbing the caller's RNG) and save it with the
    tokenizer, replacing what an earlier build left."""
    import torch

    if arch == "llama":
        from transformers import LlamaConfig as Config
        from transformers import LlamaForCausalLM as Model
    else:
        from transformers import Qwen2Config as Config
        from transformers import Qwen2ForCausalLM as Model
    out.mkdir(parents=True, exist_ok=True)
    for stale in _WRITTEN_FILES:  # a rebuild must not inherit, say, the chat template of the last one
        (out / stale).unlink(missing_ok=True)
    with hf_progress_bars_off():
        with torch.random.fork_rng(devices=[]):  # seed locally; never disturb the caller's RNG
            torch.manual_seed(seed)
            model = Model(Config(**config))
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        model.generation_config.eos_token_id = eos_ids
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)


def _read_corpus_files(paths: tuple[str, ...]) -> list[str]:
    texts = []
    for path in paths:
        try:
            texts.append(Path(path).read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            raise UsageError(f"cannot read corpus file {path}: {exc.strerror or exc}") from exc
    return texts


@click.command(
    "init-model",
    short_help="Build a tiny random model (for tests and the offline demo only).",
)
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option(
    "--arch",
    type=click.Choice(ARCHS),
    default="llama",
    show_default=True,
    help="Architecture: llama (plain prompts) or qwen2 (ChatML chat template).",
)
@click.option(
    "--corpus",
    "corpus_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Text file to train the tokenizer on (repeatable). Default: a built-in code/review corpus.",
)
@click.option("--vocab-size", default=2048, show_default=True, help="Upper bound on the tokenizer vocabulary.")
@click.option("--hidden-size", default=64, show_default=True, help="Model width.")
@click.option("--layers", default=2, show_default=True, help="Number of transformer layers.")
@click.option("--seed", default=0, show_default=True, help="Random seed; the same seed gives the same model.")
@click.option("--force", is_flag=True, help="Write into OUT_DIR even if it already holds files.")
def init_model_command(out_dir, arch, corpus_files, vocab_size, hidden_size, layers, seed, force):
    """Build a TINY RANDOM model in OUT_DIR, for tests and the offline demo only.

    The model has a real architecture (Llama or Qwen2) and a tokenizer trained locally, so every
    code path runs offline, but its weights are random: its reviews are noise. Real users do not
    need this command: pass a hub id or a local model path to review/train instead, for example
    `--model Qwen/Qwen2.5-Coder-1.5B-Instruct`.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not force:
        raise click.UsageError(f"{out} is not empty; pass --force to write the tiny model there anyway")
    try:
        path = build_tiny_model(
            out,
            arch=arch,
            corpus=_read_corpus_files(corpus_files) if corpus_files else None,
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            num_layers=layers,
            seed=seed,
        )
    except (UsageError, ModelError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote a tiny random {arch} model to {path} (for tests and the demo only; its output is noise)")
