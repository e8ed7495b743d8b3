"""Model backends behind one interface: ``generate(list[PromptInput]) -> list[Generation]``.

Two implementations:
  LocalBackend   transformers (+ a peft adapter, + bitsandbytes NF4 4-bit) in this process; batched,
                 greedy by default, stops each answer at bot.prompt.ANSWER_END.
  OpenAIBackend  any OpenAI-compatible HTTP server (vLLM, Ollama, TGI) for scale; a vLLM LoRA is
                 selected by its served name, which is just the request's ``model`` field.

The review pipeline, evaluation and the webhook worker only see ``Backend``. torch and transformers
are imported when a local model is loaded, never at import time, so code that only talks to a
server (or a test double) does not pay for them.

Prompt format versions: an adapter directory records the bot.prompt.PROMPT_FORMAT_VERSION it was
trained with (``revbot.json``), and loading refuses a mismatch. A remote server cannot tell us, so
the user asserts the version of the model it serves (``prompt_format_version``, default: current).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from functools import cache
from pathlib import Path
from typing import Any

from adapters.decoding import find_answer_end as find_answer_end  # re-exported: the end marker's one reader
from adapters.decoding import trim_answer
from adapters.embedded import resolve as resolve_embedded
from adapters.logs import hf_progress_bars_off
from adapters.prefix_cache import PrefixCache, PromptStates, batch_layout, supports_prefix_cache
from adapters.versions import META_FILE, check_prompt_format, read_meta
from bot.config import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS
from bot.errors import ModelError
from bot.prompt import ANSWER_END, PROMPT_FORMAT_VERSION, PromptInput, for_model, prompt_text
from bot.secrets import scrub_text

log = logging.getLogger(__name__)

ADAPTER_META_FILE = META_FILE  # written next to every adapter: base_model, prompt_format_version, ...
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
QUANTIZE_CHOICES = ("4bit", "none")
DEFAULT_REMOTE_CONTEXT = 8192
CHARS_PER_TOKEN = 4  # the usual rough ratio for code and English under BPE tokenizers

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


@dataclass
class Generation:
    """One answer. ``text`` ends before ANSWER_END; ``finish_reason`` is "stop" (the answer ended, or
    end of sequence) or "length" (cut off by max_new_tokens or the context)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass(frozen=True)
class BackendOptions:
    """Which model backend to get and how: one value that the CLI, evaluation, retraining and the
    webhook worker build once and pass down (``load_backend``), instead of the same keywords at each
    layer.

    kind "local" (``LocalBackend.load``): ``model`` (hub id, local path or embedded name) and/or
    ``adapter`` (a revbot adapter directory); ``quantize`` None (4-bit NF4 on CUDA, full precision on
    CPU), "4bit" or "none"; ``device`` (default: CUDA when there is one); ``batch_size`` prompts per
    micro-batch; ``temperature``/``seed`` (greedy when None); ``allow_base_mismatch`` with an adapter
    and another base model; ``few_shot`` (default: only without an adapter).

    kind "openai" (``OpenAIBackend``): ``base_url`` and ``api_model`` (default: ``model``), the served
    name, which for vLLM can be a LoRA served with --lora-modules NAME=DIR; ``mode`` "chat" or
    "completions"; ``max_concurrency`` requests in flight; ``prompt_format_version`` the served model
    was trained with; ``max_context``; ``tokenizer`` a local tokenizer of the served model for exact
    counts; the timeouts and retries of each request. ``temperature`` and ``few_shot`` apply too.
    """

    model: str | None = None
    adapter: str | None = None
    kind: str = "local"
    # the local backend
    quantize: str | None = None
    device: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    temperature: float | None = None
    seed: int | None = None
    allow_base_mismatch: bool = False
    few_shot: bool | None = None
    # an OpenAI-compatible server
    base_url: str | None = None
    api_model: str | None = None
    mode: str = "chat"
    max_concurrency: int = 8
    prompt_format_version: int | None = None
    max_context: int | None = None
    tokenizer: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 120.0
    max_retries: int = 4

    def replace(self, **changes: Any) -> BackendOptions:
        """A copy with ``changes`` (field names)."""
        return replace(self, **changes)


class Backend(ABC):
    """A model that answers prompt-contract inputs. Subclasses set ``name``, ``prompt_format_version``
    and ``max_context`` (tokens the model takes, prompt and answer together). ``few_shot``: the model
    was not trained on the format, so every prompt carries bot.prompt's worked examples."""

    name: str
    prompt_format_version: int
    max_context: int
    few_shot: bool = False
    # what a version trained on prompt format v3 brings (``attach_version``): its exemplar index
    # (bot.exemplars.ExemplarIndex), how many exemplars a prompt shows, the row length its training
    # fitted them to (exemplars never make a prompt longer: bot.exemplars.fit_prompt), and its
    # calibrated threshold
    exemplars: Any = None
    exemplar_k: int = 0
    exemplar_max_length: int | None = None
    threshold: float | None = None

    def prepare(self, inp: PromptInput) -> PromptInput:
        """``inp`` (rendered in the current format) as this model must see it."""
        return for_model(inp, self.prompt_format_version, few_shot=self.few_shot)

    @abstractmethod
    def generate(self, inputs: list[PromptInput], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[Generation]:
        """One Generation per input, in input order."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (exact for local models; an estimate where documented)."""

    def count_prompt_tokens(self, inp: PromptInput) -> int:
        """Tokens the prompt for ``inp`` takes, for budgeting a review against ``max_context``."""
        return self.count_tokens(inp.plain_text())

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What is being served, for /healthz and reports; never holds a secret."""


# --------------------------------------------------------------------------- answer end


class StopTracker:
    """Decides, token by token, when each sequence of a batch has finished its answer.

    Works on plain lists of token ids so it can be tested without a model. Only generated tokens are
    looked at (the system prompt itself mentions ANSWER_END), and only a short tail of them each step:
    enough tokens to spell a newline plus the marker. ``stopped_at[i]`` is the total sequence length
    (prompt included) at which row i finished, or None while it runs.
    """

    def __init__(self, decode: Callable[[list[int]], str], eos_ids: Iterable[int], prompt_len: int, batch_size: int):
        self.decode = decode
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        self.prompt_len = prompt_len
        self.window = len(("\n" + ANSWER_END).encode("utf-8")) + 1  # every token decodes to >= 1 char
        self.stopped_at: list[int | None] = [None] * batch_size

    def window_start(self, cur_len: int) -> int:
        return max(self.prompt_len, cur_len - self.window)

    def update(self, tails: Sequence[Sequence[int]], cur_len: int) -> list[bool]:
        """``tails[i]`` holds row i's tokens from ``window_start(cur_len)`` to ``cur_len``."""
        at_answer_start = self.window_start(cur_len) == self.prompt_len
        for i, tail in enumerate(tails):
            if self.stopped_at[i] is not None or not tail:
                continue
            if int(tail[-1]) in self.eos_ids:
                self.stopped_at[i] = cur_len
                continue
            text = self.decode([int(t) for t in tail])
            if ("\n" + ANSWER_END) in text or (at_answer_start and text.startswith(ANSWER_END)):
                self.stopped_at[i] = cur_len
        return [s is not None for s in self.stopped_at]


@cache
def _stopping_criteria_class():
    """A transformers StoppingCriteria around StopTracker (defined lazily: transformers is heavy)."""
    import torch
    from transformers import StoppingCriteria

    class AnswerEndCriteria(StoppingCriteria):
        def __init__(self, tracker: StopTracker):
            self.tracker = tracker

        def __call__(self, input_ids, scores, **kwargs):
            cur_len = input_ids.shape[1]
            tails = input_ids[:, self.tracker.window_start(cur_len) :].tolist()
            done = self.tracker.update(tails, cur_len)
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return AnswerEndCriteria


def _resolve_adapter(options: BackendOptions) -> tuple[str, Path | None, dict[str, Any], bool]:
    """(base model, adapter folder, its revbot.json, whether the base model came from it): the adapter
    checked (format version, files, base model) before any weight is read."""
    model, adapter = options.model, options.adapter
    adapter_dir: Path | None = None
    meta: dict[str, Any] = {}
    from_meta = False
    if adapter is not None:
        adapter_dir = Path(adapter).expanduser()
        meta = read_adapter_meta(adapter_dir)
        check_prompt_format(meta["prompt_format_version"], f"the adapter in {adapter_dir}")
        recorded = meta["base_model"]
        if model is None:
            model, from_meta = recorded, True
        elif not _same_model(model, recorded) and not options.allow_base_mismatch:
            raise ModelError(
                f"the adapter in {adapter_dir} was trained on {recorded}, not {model}; leave the model out to "
                "use the recorded one, or allow the mismatch explicitly if it is the same model elsewhere"
            )
        _check_adapter_files(adapter_dir)
    if model is None:
        raise ModelError("no model given: pass a hub id or a local model path (or an adapter directory)")
    return model, adapter_dir, meta, from_meta


def _load_weights(
    source: _Source, adapter_dir: Path | None, device: str, quantize: str | None
) -> tuple[Any, Any, str, Any]:
    """(model in eval mode with the adapter applied, tokenizer, quantization used, dtype). None
    quantization: 4-bit NF4 on CUDA, full precision on a CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    on_cuda = device.startswith("cuda")
    quantize = quantize or ("4bit" if on_cuda else "none")
    if on_cuda:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantize == "4bit":
        try:
            import bitsandbytes  # noqa: F401  (fail here with a clear message, not deep in transformers)
            from transformers import BitsAndBytesConfig
        except ImportError as exc:
            raise ModelError(f"4-bit loading needs bitsandbytes ({exc}); pass quantize='none'") from exc
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": device}
    tokenizer_source = source
    if adapter_dir is not None and (adapter_dir / "tokenizer_config.json").is_file():
        tokenizer_source = _Source(str(adapter_dir), "tokenizer_config.json")  # saved by training
    with hf_progress_bars_off():
        tokenizer = tokenizer_source.load(AutoTokenizer.from_pretrained, "tokenizer")
        lm = source.load(AutoModelForCausalLM.from_pretrained, "model", **kwargs)
        if quantize != "4bit":
            lm = lm.to(device)
        if adapter_dir is not None:
            lm = _with_adapter(lm, adapter_dir)
    lm.eval()
    return lm, tokenizer, quantize, dtype


def _with_adapter(lm: Any, adapter_dir: Path) -> Any:
    try:
        from peft import PeftModel

        with warnings.catch_warnings():  # peft asks transformers a deprecated question on load
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return PeftModel.from_pretrained(lm, str(adapter_dir), is_trainable=False)
    except _LOAD_ERRORS as exc:
        raise ModelError(f"could not load the adapter in {adapter_dir}: {_first_line(exc)}") from exc


def attach_version(backend: Backend, version_dir: Path, meta: dict[str, Any]) -> None:
    """Give ``backend`` what its version recorded beside the adapter: the exemplar index (checked
    against its hash) with the number of exemplars it was trained with and the row length training
    fitted them to (absent in versions trained before it was recorded: the context alone bounds
    them), and the calibrated threshold.
    A version without them (v1/v2 adapters) is served as before: no exemplars, no threshold."""
    from adapters.exemplars import load_index

    entry = meta.get("exemplars")
    backend.exemplars = load_index(version_dir, entry)
    backend.exemplar_k = int(entry.get("k", 0)) if isinstance(entry, dict) and backend.exemplars is not None else 0
    length = entry.get("max_length") if isinstance(entry, dict) and backend.exemplars is not None else None
    backend.exemplar_max_length = length if isinstance(length, int) and not isinstance(length, bool) else None
    calibration = meta.get("calibration")
    value = calibration.get("threshold") if isinstance(calibration, dict) else None
    backend.threshold = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- local models


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return scrub_text(text[0][:limit]) if text else type(exc).__name__


def _hub_offline() -> bool:
    from adapters.settings import Settings

    if Settings.from_env(only=("hf_hub_offline", "transformers_offline")).hub_offline:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - a dependency of transformers
        return False


def _looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and ".." not in name and not name.startswith(".")


def _hub_unreachable(model: str, detail: str = "") -> ModelError:
    hint = f" ({detail})" if detail else ""
    return ModelError(
        f"could not load {model}: not a local directory and the hub is unreachable{hint}; pass a local path "
        "(see `revbot dev init-model` for a tiny test model) or set HF_HUB_OFFLINE=0 with network"
    )


def read_adapter_meta(adapter: str | Path) -> dict[str, Any]:
    """The adapter's ``revbot.json``, checked: it exists, is a JSON object, names a base model and an
    integer prompt format version."""
    directory = Path(adapter)
    if not directory.is_dir():
        raise ModelError(f"no adapter at {directory}: not a directory")
    meta = read_meta(directory, what="a revbot adapter", hint=" (train one with `revbot train`)")
    meta_path = directory / ADAPTER_META_FILE
    if not isinstance(meta.get("base_model"), str) or not meta["base_model"]:
        raise ModelError(f"{meta_path}: 'base_model' is missing; it names the model the adapter was trained on")
    version = meta.get("prompt_format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelError(f"{meta_path}: 'prompt_format_version' is missing or not an integer")
    return meta


def _same_model(a: str, b: str) -> bool:
    if a.rstrip("/") == b.rstrip("/"):
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _check_adapter_files(adapter: Path) -> None:
    missing = [] if (adapter / ADAPTER_CONFIG_FILE).is_file() else [ADAPTER_CONFIG_FILE]
    if not any((adapter / name).is_file() for name in ADAPTER_WEIGHT_FILES):
        missing.append(" or ".join(ADAPTER_WEIGHT_FILES))
    if missing:
        raise ModelError(f"{adapter} holds no adapter: {', '.join(missing)} missing")


_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, ImportError)


class _Source:
    """Where a model comes from: an existing local directory or a hub id (tried cache-first)."""

    def __init__(self, model: str, marker: str = "config.json"):
        self.name = model
        path = Path(model).expanduser()
        if path.is_dir():
            if not (path / marker).is_file():
                raise ModelError(f"{model} is not a model directory: {marker} is missing")
            self.local, self.ref = True, str(path)
        elif path.exists():
            raise ModelError(f"no model at {model}: it is a file, not a model directory")
        elif _looks_like_hub_id(model):
            self.local, self.ref = False, model
        else:
            raise ModelError(f"no model at {model}")

    def load(self, loader: Callable[..., Any], what: str, **kwargs: Any) -> Any:
        """``loader.from_pretrained`` with every failure turned into a ModelError."""
        if self.local:
            try:
                return loader(self.ref, **kwargs)
            except _LOAD_ERRORS as exc:  # unknown architecture, corrupt weights, missing extra package...
                raise ModelError(f"could not load the {what} from {self.name}: {_first_line(exc)}") from exc
        try:  # the local cache first: no network, and it answers at once
            return loader(self.ref, local_files_only=True, **kwargs)
        except _LOAD_ERRORS as exc:
            if _hub_offline():
                raise _hub_unreachable(self.name) from exc
            log.debug("%s is not in the local hub cache (%s); trying the hub", self.name, _first_line(exc))
        try:
            return loader(self.ref, **kwargs)
        except Exception as exc:  # the HTTP stack's errors are not all OSErrors; none may escape as a traceback
            raise _hub_unreachable(self.name, _first_line(exc, 160)) from exc


def model_source(model: str, marker: str = "config.json") -> _Source:
    """Where ``model`` (an embedded name, a local directory or a hub id) loads from; errors are
    ModelErrors that say what to do."""
    return _Source(resolve_embedded(model), marker) if marker == "config.json" else _Source(model, marker)


def _resolve_device(device: str | None) -> str:
    import torch

    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(f"device {device!r} asked for, but no CUDA device is available; use device='cpu'")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class LocalBackend(Backend):
    """A transformers causal LM in this process (optionally with a peft adapter and 4-bit weights).

    Build one with ``LocalBackend.load(...)``; the constructor takes already-loaded objects (tests and
    callers that share a model use it directly). Inputs are processed in micro-batches of
    ``batch_size``, sorted by length to cut padding; prompts are left-padded so every row's answer
    starts at the same position, which keeps greedy outputs identical to one-at-a-time generation.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        adapter: str | None = None,
        prompt_format_version: int = PROMPT_FORMAT_VERSION,
        quantized: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        temperature: float | None = None,
        seed: int | None = None,
        few_shot: bool = False,
        prefix_cache: bool = True,
    ):
        if batch_size < 1:
            raise ModelError(f"batch size must be at least 1, got {batch_size}")
        if temperature is not None and temperature < 0:
            raise ModelError(f"temperature must be >= 0, got {temperature}")
        self.model, self.tokenizer = model, tokenizer
        self.name, self.adapter = name, adapter
        self.prompt_format_version = prompt_format_version
        self.quantized = quantized
        self.batch_size = batch_size
        self.temperature = temperature
        self.seed = seed
        self.few_shot = few_shot
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = tokenizer.eos_token_id
            log.debug("tokenizer of %s has no pad token; padding with its eos token %r", name, tokenizer.eos_token)
        if self.pad_id is None:
            raise ModelError(f"the tokenizer of {name} has neither a pad nor an eos token; cannot batch prompts")
        self.eos_ids = self._eos_ids()
        self.max_context = self._max_context()
        self._lock = threading.Lock()  # one generate() at a time: callers may share a backend across threads
        # the prompt prefix every hunk shares, run through the model once (adapters.prefix_cache)
        self.prefix_cache = PrefixCache(model) if prefix_cache and supports_prefix_cache(model) else None
        # scored prompts' states, reused by the bodies' generation (adapters.prefix_cache.PromptStates)
        self.prompt_states = PromptStates(model) if prefix_cache and supports_prefix_cache(model) else None

    # -- loading

    @classmethod
    def load(cls, options: BackendOptions) -> LocalBackend:
        """Load ``options.model`` (hub id or local path) and optionally the peft ``options.adapter``
        directory (the local fields of ``BackendOptions``; its server fields are not read).

        ``quantize``: None = 4-bit NF4 on CUDA and full precision on CPU; "4bit" forces NF4 (works on
        CPU too with bitsandbytes >= 0.49); "none" turns it off. With an adapter, ``model`` defaults to
        the base model recorded in its revbot.json, and another base model is refused unless
        ``allow_base_mismatch`` (the adapter's weights only fit the model they were trained on).
        ``model`` may name an embedded model (adapters.embedded, e.g. ``smollm2-135m``). ``few_shot``
        (default: only without an adapter) shows the prompt format's worked examples to a model that
        was not trained on it.
        """
        quantize = options.quantize
        if quantize not in (None, *QUANTIZE_CHOICES):
            raise ModelError(f"unknown quantization {quantize!r}; choose one of: {', '.join(QUANTIZE_CHOICES)}")
        model, adapter_dir, meta, from_meta = _resolve_adapter(options)
        try:
            source = _Source(resolve_embedded(model))
        except ModelError as exc:
            if not from_meta:
                raise
            raise ModelError(f"{exc} (the base_model recorded in {adapter_dir / ADAPTER_META_FILE})") from exc
        device = _resolve_device(options.device)
        lm, tokenizer, quantize, dtype = _load_weights(source, adapter_dir, device, quantize)
        log.info(
            "loaded %s%s on %s (%s)",
            model,
            f" + adapter {adapter_dir}" if adapter_dir else "",
            device,
            "4-bit NF4" if quantize == "4bit" else str(dtype).replace("torch.", ""),
        )
        backend = cls(
            lm,
            tokenizer,
            name=model,
            adapter=str(adapter_dir) if adapter_dir else None,
            prompt_format_version=meta.get("prompt_format_version", PROMPT_FORMAT_VERSION),
            quantized="4bit" if quantize == "4bit" else None,
            batch_size=options.batch_size,
            temperature=options.temperature,
            seed=options.seed,
            few_shot=adapter_dir is None if options.few_shot is None else options.few_shot,
        )
        if adapter_dir is not None:
            attach_version(backend, adapter_dir, meta)
        return backend

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        for value in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if item is not None and int(item) not in ids:
                    ids.append(int(item))
        return ids

    def _max_context(self) -> int:
        limits = [getattr(self.model.config, "max_position_embeddings", None)]
        tok_limit = getattr(self.tokenizer, "model_max_length", None)
        limits.append(tok_limit if isinstance(tok_limit, int) and tok_limit < 10_000_000 else None)
        valid = [int(x) for x in limits if isinstance(x, int) and x > 0]
        return min(valid) if valid else 2048

    # -- prompts and tokens

    def render_prompt(self, inp: PromptInput) -> str:
        """The text the model reads: its chat template when it has one, else the plain format."""
        return prompt_text(self.prepare(inp), self.tokenizer)

    def _encode_prompt(self, inp: PromptInput) -> list[int]:
        # A chat template writes its own special tokens; plain prompts get the tokenizer's (e.g. <s>).
        # An answer prefix is encoded on its own, as training encodes the answer apart from the prompt.
        prefix = inp.answer_prefix
        ids = list(
            self.tokenizer(self.render_prompt(replace(inp, answer_prefix="")), add_special_tokens=not self.chat)[
                "input_ids"
            ]
        )
        return ids + (list(self.tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else [])

    def analyse(
        self,
        inputs: list[PromptInput],
        candidates: list[list[str]],
        choose: Callable[[int, list[float]], list[int]],
        *,
        max_new_tokens: int,
        free: bool = False,
    ) -> list[Any]:
        """One pass per prompt (``adapters.decoding.analyse_prompt``): the probability of each candidate
        answer start, a body after each candidate ``choose(input index, probabilities)`` picks, and with
        ``free`` the answer the model writes on its own. A prompt that does not fit is silence."""
        from adapters.decoding import Analysis, Continuation, analyse_prompt

        def decode(ids: list[int]) -> str:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))

        out: list[Any] = []
        with self._lock:
            for i, (ids, texts) in enumerate(zip(self._encode_observed(inputs), candidates)):
                cands = [list(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
                if len(ids) + max(len(c) for c in cands) + 1 >= self.max_context:
                    silent = Analysis([1.0] + [0.0] * (len(cands) - 1))
                    silent.free = Continuation("", len(ids), 0, "length") if free else None
                    out.append(silent)
                    continue
                out.append(
                    analyse_prompt(
                        self.model,
                        decode,
                        self.eos_ids,
                        ids,
                        cands,
                        lambda probs, i=i: choose(i, probs),
                        prefixes=texts,
                        max_new_tokens=max_new_tokens,
                        free=free,
                        prefix_cache=self.prefix_cache,
                    )
                )
        return out

    def score_answers(self, inputs: list[PromptInput], candidates: list[list[str]]) -> list[list[float]]:
        """For each input, the probability of each candidate answer start (``bot.anchoring``). Inside
        ``reusing_prompts`` each prompt's states stay for the generation that follows."""
        from adapters.decoding import score_with_states

        out = []
        with self._lock:
            for ids, texts in zip(self._encode_observed(inputs), candidates):
                cands = [list(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
                if len(ids) + max(len(c) for c in cands) >= self.max_context:
                    out.append([1.0] + [0.0] * (len(cands) - 1))  # does not fit: silence
                    continue
                probs, cache = score_with_states(self.model, ids, cands, self.prefix_cache)
                if self.prompt_states is not None:
                    self.prompt_states.keep(ids, cache)
                out.append(probs)
        return out

    def reusing_prompts(self) -> Any:
        """A context in which scored prompts' states are kept for the bodies' generation
        (``adapters.prefix_cache.PromptStates``); leaving it frees them."""
        return self.prompt_states.keeping() if self.prompt_states is not None else contextlib.nullcontext()

    def _encode_observed(self, inputs: list[PromptInput]) -> list[list[int]]:
        """The prompts' token ids, their shared prefix shown to the prefix cache (call under the lock):
        each prompt's own pass then starts from its cached states."""
        encoded = [self._encode_prompt(inp) for inp in inputs]
        if self.prefix_cache is not None:
            self.prefix_cache.observe(encoded)
        return encoded

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_prompt_tokens(self, inp: PromptInput) -> int:
        return len(self._encode_prompt(inp))

    def describe(self) -> dict[str, Any]:
        device = getattr(self.model, "device", None)
        return {
            "kind": "local",
            "model": self.name,
            "adapter": self.adapter,
            "prompt_format_version": self.prompt_format_version,
            "few_shot": self.few_shot,
            "quantized": self.quantized,
            "device": str(device) if device is not None else None,
            "dtype": str(getattr(self.model, "dtype", "")).replace("torch.", "") or None,
            "chat_template": self.chat,
            "max_context": self.max_context,
            "batch_size": self.batch_size,
            "exemplars": {
                "k": self.exemplar_k,
                "documents": len(self.exemplars),
                "max_length": self.exemplar_max_length,
            }
            if self.exemplars is not None
            else None,
            "threshold": self.threshold,
            "sampling": {"temperature": self.temperature} if self.temperature else "greedy",
        }

    # -- generation

    def generate(self, inputs: list[PromptInput], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[Generation]:
        if max_new_tokens < 1:
            raise ModelError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        encoded = [self._encode_prompt(inp) for inp in inputs]
        for i, ids in enumerate(encoded):
            if len(ids) >= self.max_context:
                raise ModelError(
                    f"input {i} is {len(ids)} tokens but {self.name} takes at most {self.max_context}; "
                    "split the hunk or lower the review's token budget"
                )
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
        results: list[Generation | None] = [None] * len(encoded)
        with self._lock:
            if self.prefix_cache is not None:  # shared-prefix cache hook
                self.prefix_cache.observe(encoded)
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                prefixes = [inputs[i].answer_prefix for i in chunk]
                for i, gen in zip(chunk, self._generate_batch([encoded[i] for i in chunk], max_new_tokens, prefixes)):
                    results[i] = gen
        return results  # type: ignore[return-value]

    def _generate_batch(
        self, batch: list[list[int]], max_new_tokens: int, prefixes: list[str] | None = None
    ) -> list[Generation]:
        import torch
        from transformers import StoppingCriteriaList

        from adapters.decoding import DegenerationGuard, guard_criteria_class, trim_degenerate

        device = self.model.device
        # every answer starts at column ``width``: rows padded on the left, or laid out after the cached shared prefix
        laid_out = self.prompt_states.layout(batch, self.pad_id) if self.prompt_states is not None else None
        input_ids, attention, cached = laid_out or batch_layout(batch, self.pad_id, self.prefix_cache)
        width = input_ids.shape[1]
        budget = min(max_new_tokens, self.max_context - width)

        def decode(ids: list[int]) -> str:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))

        tracker = StopTracker(decode, self.eos_ids, width, len(batch))
        guard = DegenerationGuard(decode, width, prefixes or [""] * len(batch))
        options: dict[str, Any] = {
            "max_new_tokens": budget,
            "pad_token_id": self.pad_id,
            "eos_token_id": self.eos_ids or None,
            "num_beams": 1,
            "repetition_penalty": 1.0,  # a model's own generation_config must not bend greedy decoding
            "stopping_criteria": StoppingCriteriaList(
                [_stopping_criteria_class()(tracker), guard_criteria_class()(guard)]
            ),
        }
        if self.temperature:
            options.update(do_sample=True, temperature=self.temperature)
            if self.seed is not None:
                torch.manual_seed(self.seed)
        else:
            options.update(do_sample=False, temperature=1.0, top_p=1.0, top_k=50)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), **cached, **options
            )
        output = output.cpu()
        results = []
        for row, ids in enumerate(batch):
            end = tracker.stopped_at[row] or output.shape[1]
            generated = output[row, width:end].tolist()
            text, _ = trim_answer(self.tokenizer.decode(generated, skip_special_tokens=True))
            text = trim_degenerate(text, guard.prefixes[row])
            results.append(
                Generation(
                    text=text,
                    prompt_tokens=len(ids),
                    completion_tokens=len(generated),
                    finish_reason="stop" if tracker.stopped_at[row] is not None or guard.cut[row] else "length",
                )
            )
        return results

    def __repr__(self) -> str:
        return f"LocalBackend(model={self.name!r}, adapter={self.adapter!r}, quantized={self.quantized!r})"


# --------------------------------------------------------------------------- OpenAI-compatible servers


class _RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


class OpenAIBackend(Backend):
    """An OpenAI-compatible server (vLLM, Ollama, TGI...). One request per input, up to
    ``max_concurrency`` in flight; retries with exponential backoff on connection errors, timeouts,
    429 and 5xx, honouring Retry-After (capped at ``max_backoff_s``).

    mode "chat" posts ``messages()`` to {base_url}/chat/completions (the server applies the model's
    chat template); mode "completions" posts ``plain_text()`` to {base_url}/completions.

    The API key comes from ``api_key`` or the settings (REVBOT_OPENAI_API_KEY, then OPENAI_API_KEY)
    and is sent only in the Authorization header: never logged, never in repr or describe().

    ``count_tokens`` is an estimate, ceil(len(text) / 4), unless ``tokenizer`` names a local tokenizer
    (path or cached hub id) of the served model. ``prompt_format_version`` is the version the served
    model was trained with, as asserted by the user; it must match this revbot's.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        mode: str = "chat",
        api_key: str | None = None,
        prompt_format_version: int | None = None,
        max_context: int | None = None,
        max_concurrency: int = 8,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        temperature: float = 0.0,
        tokenizer: str | None = None,
        few_shot: bool = False,
    ):
        if not base_url or not re.match(r"^https?://", base_url):
            raise ModelError(
                f"base URL {scrub_text(base_url)!r} must start with http:// or https:// "
                "(for example http://127.0.0.1:8000/v1)"
            )
        if not model:
            raise ModelError("no served model name: pass the server's model (or vLLM LoRA) name")
        if mode not in ("chat", "completions"):
            raise ModelError(f"unknown API mode {mode!r}; choose 'chat' or 'completions'")
        if max_concurrency < 1 or max_retries < 0:
            raise ModelError("max_concurrency must be >= 1 and max_retries >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = model
        self.mode = mode
        self.prompt_format_version = PROMPT_FORMAT_VERSION if prompt_format_version is None else prompt_format_version
        check_prompt_format(self.prompt_format_version, f"the served model {model!r}")
        self.max_context = max_context or DEFAULT_REMOTE_CONTEXT
        self.max_concurrency = max_concurrency
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.temperature = temperature
        self.few_shot = few_shot
        if not api_key:
            from adapters.settings import Settings

            api_key = Settings.from_env(only=("openai_api_key",)).secret("openai_api_key")
        self._api_key = api_key
        self._local = threading.local()
        self._tokenizer = None
        self.tokenizer_path = tokenizer
        if tokenizer:
            from transformers import AutoTokenizer

            self._tokenizer = _Source(tokenizer, "tokenizer_config.json").load(
                AutoTokenizer.from_pretrained, "tokenizer"
            )

    @property
    def url(self) -> str:
        return f"{self.base_url}/{'chat/completions' if self.mode == 'chat' else 'completions'}"

    def _safe_url(self) -> str:
        return scrub_text(self.url) or ""

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def count_prompt_tokens(self, inp: PromptInput) -> int:
        inp = self.prepare(inp)
        if self.mode == "chat":  # a few tokens of role markers per message on top of the content
            return sum(self.count_tokens(m["content"]) + 6 for m in inp.messages())
        return self.count_tokens(inp.plain_text())

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "openai",
            "model": self.model,
            "adapter": None,
            "base_url": scrub_text(self.base_url),
            "mode": self.mode,
            "prompt_format_version": self.prompt_format_version,
            "few_shot": self.few_shot,
            "quantized": None,
            "max_context": self.max_context,
            "max_concurrency": self.max_concurrency,
            "api_key_set": self._api_key is not None,
            "token_counts": "tokenizer" if self._tokenizer is not None else f"estimate (chars/{CHARS_PER_TOKEN})",
        }

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={scrub_text(self.base_url)!r}, model={self.model!r}, mode={self.mode!r})"

    # -- requests

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = self._local.session = requests.Session()
        return session

    def _payload(self, inp: PromptInput, max_new_tokens: int) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_new_tokens,
            "temperature": self.temperature,
            "stop": [ANSWER_END],
        }
        inp = self.prepare(inp)
        if self.mode == "chat":
            payload["messages"] = inp.messages()
        else:
            payload["prompt"] = inp.plain_text()
        return payload

    def _post_once(self, payload: dict[str, Any]) -> dict[str, Any]:
        import requests

        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        url = self.url
        # The requests errors below end in from None on purpose: the base URL may carry credentials
        # (http://user:key@host/v1) and requests' errors quote the URL as given, at every layer of their
        # chain; the messages name the scrubbed URL (_safe_url) and the scrubbed first line of the error.
        try:
            resp = self._session().post(url, json=payload, headers=headers, timeout=self.timeout)
        except requests.Timeout as exc:
            kind = "connect" if isinstance(exc, requests.ConnectTimeout) else "read"
            limit = self.timeout[0] if kind == "connect" else self.timeout[1]
            raise _RetryableError(f"no answer from {self._safe_url()} within {limit:g}s ({kind} timeout)") from None
        except requests.ConnectionError as exc:
            detail = scrub_text(_first_line(exc, 200))
            raise _RetryableError(f"cannot connect to {self._safe_url()}: {detail}") from None
        except requests.RequestException as exc:
            raise ModelError(f"request to {self._safe_url()} failed: {scrub_text(_first_line(exc, 200))}") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _RetryableError(
                f"{self._safe_url()} answered HTTP {resp.status_code}: {scrub_text(resp.text[:200].strip())}",
                _retry_after(resp.headers.get("Retry-After")),
            )
        if resp.status_code >= 400:
            hint = " (check REVBOT_OPENAI_API_KEY)" if resp.status_code in (401, 403) else ""
            raise ModelError(
                f"{self._safe_url()} refused the request with HTTP {resp.status_code}{hint}: "
                f"{scrub_text(resp.text[:300].strip())}"
            )
        try:
            data = resp.json()
        except ValueError as exc:
            raise ModelError(
                f"{self._safe_url()} answered with something that is not JSON: {scrub_text(resp.text[:200])!r}"
            ) from exc
        if not isinstance(data, dict):
            raise ModelError(f"{self._safe_url()} answered with unexpected JSON (not an object)")
        return data

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            log.debug("POST %s (attempt %d of %d)", self._safe_url(), attempt, attempts)
            try:
                return self._post_once(payload)
            except _RetryableError as exc:
                if attempt == attempts:
                    raise ModelError(f"{exc} (gave up after {attempts} attempts)") from exc
                delay = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
                if exc.retry_after is not None:
                    delay = min(max(delay, exc.retry_after), self.max_backoff_s)
                log.info("%s; retrying in %.2fs", exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _generate_one(self, inp: PromptInput, max_new_tokens: int) -> Generation:
        data = self._post(self._payload(inp, max_new_tokens))
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ModelError(f"{self._safe_url()} answered without choices: {scrub_text(json.dumps(data)[:200])}")
        choice = choices[0]
        if self.mode == "chat":
            message = choice.get("message") or {}
            raw = message.get("content") if isinstance(message, dict) else None
        else:
            raw = choice.get("text")
        if not isinstance(raw, str):
            raw = ""
        text, _ = trim_answer(raw)  # servers drop the stop string; some do not
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        return Generation(
            text=text,
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else self.count_prompt_tokens(inp),
            completion_tokens=completion_tokens if isinstance(completion_tokens, int) else self.count_tokens(raw),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        )

    def generate(self, inputs: list[PromptInput], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[Generation]:
        if max_new_tokens < 1:
            raise ModelError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if not inputs:
            return []
        if len(inputs) == 1 or self.max_concurrency == 1:
            return [self._generate_one(inp, max_new_tokens) for inp in inputs]
        with ThreadPoolExecutor(
            max_workers=min(self.max_concurrency, len(inputs)), thread_name_prefix="revbot-openai"
        ) as pool:
            futures = [pool.submit(self._generate_one, inp, max_new_tokens) for inp in inputs]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise


# --------------------------------------------------------------------------- factory


def load_backend(options: BackendOptions) -> Backend:
    """The backend the CLI, evaluation, retraining and the webhook worker use (``BackendOptions``
    says which: kind "local" loads ``model`` and/or ``adapter`` here, kind "openai" talks to
    ``base_url``)."""
    if options.kind == "local":
        if options.base_url or options.api_model:
            raise ModelError("base_url/api_model are for kind='openai'; the local backend loads the model itself")
        return LocalBackend.load(options)
    if options.kind == "openai":
        if options.adapter:
            raise ModelError(
                "an adapter directory is loaded by the local backend; to use it through a server, serve it "
                "there (vLLM: --lora-modules NAME=DIR) and pass api_model=NAME"
            )
        if not options.base_url:
            raise ModelError("the openai backend needs a base URL, for example http://127.0.0.1:8000/v1")
        return OpenAIBackend(
            options.base_url,
            options.api_model or options.model or "",
            mode=options.mode,
            prompt_format_version=options.prompt_format_version,
            max_context=options.max_context,
            max_concurrency=options.max_concurrency,
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            max_retries=options.max_retries,
            temperature=options.temperature or 0.0,
            tokenizer=options.tokenizer,
            few_shot=bool(options.few_shot),
        )
    raise ModelError(f"unknown backend kind {options.kind!r}; choose 'local' or 'openai'")
