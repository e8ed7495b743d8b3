"""QLoRA training: examples -> a new model version (peft adapter + tokenizer + revbot.json).

One loop that reads top to bottom: configure, split, load the base model (4-bit NF4 with double
quantisation through bot.model, the same loader review uses), attach LoRA to every attention and MLP
projection, pack the examples, then train with AdamW and a cosine schedule with warm-up, evaluating
validation loss as it goes (early stopping keeps the best weights) and checkpointing so ``resume``
continues exactly where an interrupted run stopped.

Loss is on the answer only, and only the hidden states that predict an answer token are projected
through the LM head: with vocabularies of 100k+ tokens the full logits tensor of a packed batch is
the largest thing in memory, and most of it would be thrown away by the -100 labels anyway.

Packing: examples share rows, kept apart by position ids that restart at each example. Where the
model uses sdpa (or eager) attention, each example attends on its own (finetune/attention.py);
otherwise transformers' block-diagonal masks do it. Either way ``check_packing`` first compares packed
and separate logits on the real model, and a model that fails gets batches grouped by length.

Several GPUs: the loop is written against ``accelerate.Accelerator``, so the same command runs under
``accelerate launch`` (each process loads its own 4-bit copy of the base on its own GPU and takes
every k-th batch; gradients are averaged by DDP; only the main process writes checkpoints and the
version)::

    accelerate launch --multi_gpu --num_processes 4 -m revbot train --base-model Qwen/Qwen2.5-Coder-7B-Instruct

(``torchrun --nproc_per_node N -m revbot train ...`` works too, on CPU processes as well.)

Resuming: checkpoints live in ``models/.runs/<run key>/``, where the key is a hash of the base
model, the data and every setting that changes the result; ``resume=True`` with the same inputs
restores adapter weights, optimiser, schedule, RNG states and history, and finishes with the same
weights as an uninterrupted run (to within floating-point noise).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bot.errors import DataError, ModelError, RevbotError, UsageError
from bot.examples import Example, fingerprint, write_examples
from bot.prompt import PROMPT_FORMAT_VERSION
from bot.versions import META_FILE, ModelRegistry, ModelVersion, now_iso, write_json_atomic
from finetune.attention import register as register_segment_attention
from finetune.data import (
    Batch, Encoded, Splits, encode_examples, make_batches, padding_share, split_examples,
)

log = logging.getLogger(__name__)

RUNS_DIR = ".runs"
CHECKPOINT_PREFIX = "checkpoint-"
KEEP_CHECKPOINTS = 2
LOSS_CURVE_FILE = "loss_curve.png"
DATA_DIR = "data"
# Linear layers of attention and MLP blocks across the common decoder families; the ones a model
# actually has are picked up by name (see detect_target_modules).
_KNOWN_PROJECTIONS = (
    "q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "gate_proj", "up_proj", "down_proj", "gate_up_proj",
    "c_attn", "c_proj", "c_fc", "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h",
    "Wqkv", "out_proj", "fc1", "fc2", "w1", "w2", "w3",
)
_NEVER_TARGET = ("lm_head", "embed_tokens", "wte", "wpe", "score", "classifier", "embed_out")
OOM_HINT = (
    "lower --batch-size (now {batch_size}) or --max-length (now {max_length}), turn on --gradient-checkpointing"
    "{gc}, and keep 4-bit loading on (drop --no-quantize){quant}"
)


class TrainingInterrupted(RevbotError):
    """The run was stopped (Ctrl-C); a checkpoint was written so ``--resume`` continues it."""

    exit_code = 130


PRECISIONS = ("auto", "bf16", "fp32")
CPU_DEFAULT_PRECISION = "bf16"
CPU_LORA_LAYERS = 8


def mixed_precision(precision: str, on_cuda: bool, cuda_bf16: bool) -> str:
    """accelerate's mixed_precision value for a TrainConfig.precision."""
    if precision == "fp32":
        return "no"
    if precision == "bf16":
        return "bf16"
    if on_cuda:
        return "bf16" if cuda_bf16 else "no"
    return "bf16" if CPU_DEFAULT_PRECISION == "bf16" else "no"


@dataclass
class TrainConfig:
    """Every knob of a training run. The defaults are the usual QLoRA recipe."""

    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs
    batch_size: int = 4  # rows per step (a packed row holds several examples)
    max_length: int | None = None  # tokens per row, longer examples skipped and counted; None: 2048 on a GPU, 1024 on CPU
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    target_modules: list[str] | None = None  # None: every attention and MLP projection found
    quantize: bool = True  # 4-bit NF4 + double quantisation (QLoRA); False: plain LoRA
    gradient_checkpointing: bool = False
    lora_layers: int | None = None  # LoRA on the last N blocks; 0: every block; None: every block on a GPU, CPU_LORA_LAYERS on CPU
    precision: str = "auto"  # "bf16" autocast or "fp32"; auto: bf16 on CUDA with bf16, CPU_DEFAULT_PRECISION on CPU
    packing: bool | None = None  # None: pack when the model's attention keeps examples apart
    seed: int = 0
    test_fraction: float = 0.1
    val_fraction: float = 0.1
    min_train: int = 10
    min_val: int = 2
    min_test: int = 2
    eval_every: int | None = None  # steps; None: about ten evaluations a run, at least one per epoch
    save_every: int | None = None  # steps; None: at every evaluation
    patience: int = 3  # evaluations without improvement before stopping early (0: never stop early)
    resume: bool = False

    # settings that do not change the trained weights, left out of the run key
    _NOT_IN_KEY = ("resume", "save_every")

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise UsageError(message)

        need(self.epochs > 0, f"--epochs must be positive, got {self.epochs}")
        need(self.max_steps is None or self.max_steps > 0, f"--max-steps must be positive, got {self.max_steps}")
        need(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        need(self.max_length is None or self.max_length >= 16, f"--max-length must be at least 16 tokens, got {self.max_length}")
        need(self.lr > 0, f"--lr must be positive, got {self.lr}")
        need(0 <= self.warmup_ratio < 1, f"warm-up ratio must be in [0, 1), got {self.warmup_ratio}")
        need(self.lora_r >= 1, f"--lora-r must be at least 1, got {self.lora_r}")
        need(self.lora_alpha > 0, f"--lora-alpha must be positive, got {self.lora_alpha}")
        need(0 <= self.lora_dropout < 1, f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        need(self.patience >= 0, f"patience must be >= 0, got {self.patience}")
        for name in ("eval_every", "save_every"):
            value = getattr(self, name)
            need(value is None or value >= 1, f"{name} must be at least 1, got {value}")
        if self.target_modules is not None:
            need(bool(self.target_modules), "--target-modules must name at least one module")
        need(self.lora_layers is None or self.lora_layers >= 0,
             f"--lora-layers must be 0 (every block) or more, got {self.lora_layers}")
        need(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def for_device(self, on_cuda: bool) -> "TrainConfig":
        """The settings left open (None) filled in for the device: a GPU takes the usual recipe; on a
        CPU, rows of 1024 tokens and LoRA on the last CPU_LORA_LAYERS blocks keep a 135M model's step
        near 20 s and its memory under 8 GB (tests/bench/bench_cpu_training.py)."""
        return replace(
            self,
            max_length=self.max_length or (2048 if on_cuda else 1024),
            lora_layers=self.lora_layers if self.lora_layers is not None else (0 if on_cuda else CPU_LORA_LAYERS),
        )

    def key_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in self._NOT_IN_KEY}


@dataclass
class StepInfo:
    """What a step callback sees (progress reporting, tests that simulate a crash)."""

    step: int
    total_steps: int
    loss: float
    val_loss: float | None
    checkpoint: Path | None


# --------------------------------------------------------------------------- model set-up


def resolve_base_model(name: str) -> str:
    """The base model as revbot.json records it: an absolute path for a local directory (so the
    version loads from any working directory), a hub id unchanged."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def ensure_pad_token(tokenizer: Any) -> bool:
    """Give a tokenizer without a pad token its eos token as pad (saved with the adapter, so review
    pads the same way). Returns True when it changed anything. Padding is never trained on."""
    if tokenizer.pad_token_id is not None:
        return False
    if tokenizer.eos_token is None:
        raise ModelError("the tokenizer has neither a pad token nor an eos token; add one to the base model's "
                         "tokenizer (tokenizer_config.json) before training")
    tokenizer.pad_token = tokenizer.eos_token
    log.info("the tokenizer has no pad token; using its eos token %r for padding", tokenizer.eos_token)
    return True


def detect_target_modules(model: Any) -> list[str]:
    """Names of the linear layers in the model's attention and MLP blocks (q, k, v, o, gate, up, down
    for Llama/Qwen-style models), in the order they first appear."""
    import torch

    found: list[str] = []
    for name, module in model.named_modules():
        parts = name.split(".")
        leaf = parts[-1]
        if not isinstance(module, torch.nn.Linear) or leaf in _NEVER_TARGET or leaf in found:
            continue
        in_block = any(part.isdigit() for part in parts[:-1])  # inside a numbered decoder layer
        if leaf in _KNOWN_PROJECTIONS or in_block:
            found.append(leaf)
    if not found:
        raise ModelError("found no attention or MLP projection layers to attach LoRA to; name them with --target-modules")
    return found


def _linear_leaf_names(model: Any) -> set[str]:
    import torch

    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


@contextmanager
def quiet_library_warnings() -> Iterator[None]:
    """peft calls a transformers method that warns it is deprecated, on every load; users cannot act
    on that, so it is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
        yield


def keep_4bit_differentiable(model: Any) -> None:
    """Stop bitsandbytes from repacking 4-bit weights into its CPU inference layout.

    On CPUs with AVX512-BF16, a Linear4bit called in eval mode without gradients (the packing check,
    every validation pass) converts its weight in place to a layout served by an inference-only
    kernel that has no backward; later training steps would then silently get no gradient through
    those layers. Training keeps the ordinary layout throughout."""
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


def check_packing(model: Any, vocab_size: int, device: Any) -> tuple[bool, float]:
    """Whether packed rows give each example the logits it gets alone (no attention across examples).

    transformers derives a block-diagonal causal mask from position ids that restart at 0 when no
    attention mask is passed, for attention implementations that build masks through masking_utils;
    others silently attend across examples. This runs two short random sequences both ways and
    compares; returns (supported, relative mean difference)."""
    import torch

    gen = torch.Generator().manual_seed(1234)
    high = max(4, min(vocab_size, 1000))
    a = torch.randint(3, high, (1, 13), generator=gen)
    b = torch.randint(3, high, (1, 9), generator=gen)
    packed = torch.cat([a, b], dim=1)
    positions = torch.cat([torch.arange(13), torch.arange(9)]).unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = torch.cat([
                model(input_ids=a.to(device), use_cache=False).logits[0].float(),
                model(input_ids=b.to(device), use_cache=False).logits[0].float(),
            ])
            together = model(input_ids=packed.to(device), position_ids=positions.to(device),
                             use_cache=False).logits[0].float()
    finally:
        model.train(was_training)
    scale = alone.abs().mean().clamp_min(1e-6)
    difference = ((together - alone).abs().mean() / scale).item()
    return difference < 1e-2, difference


class _AnswerHead:
    """Projects only the hidden states that predict a supervised token through the LM head.

    A forward pre-hook on the output embedding swaps its (rows, width, hidden) input for the selected
    (1, n, hidden) states, so the model call (and DDP around it) stays untouched."""

    def __init__(self, model: Any):
        head = model.get_output_embeddings()
        self.index = None
        self.handle = head.register_forward_pre_hook(self._hook) if head is not None else None

    def _hook(self, module: Any, args: tuple) -> tuple | None:
        if self.index is None or not args:
            return None
        return (args[0][self.index].unsqueeze(0), *args[1:])

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()


def _loss_sum(model: Any, head: _AnswerHead, tensors: dict[str, Any], device: Any) -> tuple[Any, int]:
    """Sum of token cross-entropies over the answer tokens of one batch, and their count."""
    import torch
    import torch.nn.functional as F

    labels = tensors["labels"].to(device)
    shifted = labels[:, 1:]
    supervised = shifted != -100
    select = torch.zeros_like(labels, dtype=torch.bool)
    select[:, :-1] = supervised
    targets = shifted[supervised]
    inputs = {k: v.to(device) for k, v in tensors.items() if k != "labels"}
    head.index = select if head.handle is not None else None
    try:
        logits = model(**inputs, use_cache=False).logits
    finally:
        head.index = None
    if logits.dim() == 3 and logits.shape[0] == 1 and logits.shape[1] == targets.numel() and head.handle is not None:
        logits = logits[0]
    else:  # a model that called its head some other way: select from the full logits
        logits = logits[select]
    return F.cross_entropy(logits.float(), targets, reduction="sum"), int(targets.numel())


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text
        or "failed to allocate" in text
    )


def oom_error(config: TrainConfig) -> ModelError:
    return ModelError("ran out of memory while training; " + OOM_HINT.format(
        batch_size=config.batch_size, max_length=config.max_length,
        gc="" if not config.gradient_checkpointing else " (already on)",
        quant="" if config.quantize else " (now off)",
    ))


SIGNATURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "vocab_size")


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, MiB."""
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round((kib / 1024 if platform.system() != "Darwin" else kib / 2**20), 1)


def base_signature(config: Any) -> dict[str, Any]:
    """The shape of the base model, recorded so an adapter is never merged into another model."""
    return {k: getattr(config, k, None) for k in SIGNATURE_KEYS}


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("revbot", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "tokenizers", "trl"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------- the run


def run_key(base_model: str, data_fingerprint: str, config: TrainConfig, world_size: int) -> str:
    blob = json.dumps({"base": base_model, "data": data_fingerprint, "config": config.key_fields(),
                       "world": world_size, "prompt": PROMPT_FORMAT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model: Any, state: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise ModelError(f"the checkpoint does not fit this model (unknown parameter {missing[0]}); "
                         "start without --resume")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def _rng_state() -> dict[str, Any]:
    import torch

    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def plot_loss_curve(history: dict[str, list], path: Path, title: str) -> None:
    """Training loss per step (and its moving average) with validation loss, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps = [h["step"] for h in history["train"]]
    losses = [h["loss"] for h in history["train"]]
    if steps:
        ax.plot(steps, losses, color="#9ecae1", linewidth=1, label="train loss (per step)")
        smooth, avg = [], None
        for value in losses:
            avg = value if avg is None else 0.9 * avg + 0.1 * value
            smooth.append(avg)
        ax.plot(steps, smooth, color="#3182bd", linewidth=2, label="train loss (moving average)")
    if history["validation"]:
        ax.plot([h["step"] for h in history["validation"]], [h["loss"] for h in history["validation"]],
                "o-", color="#e6550d", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@dataclass
class _Prepared:
    """The model ready for training, and what was decided on the way."""

    model: Any
    tokenizer: Any
    targets: list[str]
    packed: bool
    attention: str
    packing_difference: float | None
    pad_changed: bool


def prepare_model(base: str, config: TrainConfig, device: Any) -> _Prepared:
    """Load the base (through bot.model, as review does), choose how to batch, and attach LoRA."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from bot.model import LocalBackend

    backend = LocalBackend.load(base, quantize="4bit" if config.quantize else "none", device=str(device))
    model, tokenizer = backend.model, backend.tokenizer
    keep_4bit_differentiable(model)
    pad_changed = ensure_pad_token(tokenizer)

    targets = list(config.target_modules) if config.target_modules else detect_target_modules(model)
    linear = _linear_leaf_names(model)
    unknown = [t for t in targets if t not in linear]
    if unknown:
        available = ", ".join(sorted(linear - set(_NEVER_TARGET)))
        raise UsageError(f"--target-modules: {', '.join(unknown)} not found in {base}; its linear layers are: {available}")

    packed, difference = False, None
    if config.packing is not False:
        original = model.config._attn_implementation
        window = getattr(model.config, "sliding_window", None)
        windowed = bool(window) and getattr(model.config, "use_sliding_window", True) and window < (config.max_length or 2048)
        if original in ("sdpa", "eager") and not windowed:  # per-example kernels first (finetune/attention.py)
            model.set_attn_implementation(register_segment_attention())
            try:
                packed, difference = check_packing(model, len(tokenizer), device)
            except Exception as exc:  # an attention feature plain sdpa lacks (softcapping, say)
                log.debug("per-example attention does not suit this model: %s", exc)
                packed = False
            if not packed:
                model.set_attn_implementation(original)
        if not packed:
            packed, difference = check_packing(model, len(tokenizer), device)
        if config.packing and not packed:
            raise ModelError(f"this model's attention mixes packed examples (difference {difference:.3g}); "
                             "train without packing")
        if not packed:
            log.warning("packing would let examples attend to each other in this model (difference %.3g); "
                        "batching by length instead", difference)

    gc_kwargs = {"use_reentrant": False}
    if config.quantize:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing, gradient_checkpointing_kwargs=gc_kwargs)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
        model.enable_input_require_grads()
    torch.manual_seed(config.seed)  # LoRA's A matrices are initialised from the global RNG
    layers = None
    if config.lora_layers:
        total = int(getattr(model.config, "num_hidden_layers", 0) or 0)
        if not total:
            raise UsageError(f"--lora-layers: {base} does not say how many layers it has (num_hidden_layers)")
        layers = list(range(max(0, total - config.lora_layers), total))
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM", layers_to_transform=layers)
    with quiet_library_warnings():
        model = get_peft_model(model, lora)
    return _Prepared(model, tokenizer, targets, packed, model.config._attn_implementation, difference, pad_changed)


@dataclass
class _State:
    """Everything about a run's progress that a checkpoint must carry."""

    step: int = 0
    history: dict[str, list] = field(default_factory=lambda: {"train": [], "validation": []})
    best_val: float | None = None
    best_step: int | None = None
    best_weights: dict[str, Any] | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    supervised_tokens: int = 0
    tokens: int = 0  # every real (non-padding) token the model was trained on, prompts included
    train_seconds: float = 0.0

    def record_validation(self, value: float, model: Any, patience: int) -> None:
        """Keep the best weights; stop after ``patience`` evaluations without improvement."""
        self.history["validation"].append({"step": self.step, "loss": value})
        if self.best_val is None or value < self.best_val - 1e-4:
            self.best_val, self.best_step, self.bad_evals = value, self.step, 0
            self.best_weights = _trainable_state(model)
            return
        self.bad_evals += 1
        if patience and self.bad_evals >= patience:
            self.stopped_early = True
            log.info("stopping early at step %d: validation loss has not improved for %d evaluations "
                     "(best %.4f at step %d)", self.step, self.bad_evals, self.best_val, self.best_step)


def train(
    examples: Sequence[Example] | Splits,
    base_model: str,
    models_dir: str | Path | None = None,
    config: TrainConfig | None = None,
    *,
    data_source: str | None = None,
    progress: bool = True,
    callback: Callable[[StepInfo], None] | None = None,
) -> ModelVersion:
    """Train an adapter on ``examples`` (or ready ``Splits``) and publish it as the next version in
    ``models_dir``. Does not promote it. Raises DataError, ModelError, UsageError with what to change,
    and TrainingInterrupted (after writing a checkpoint) on Ctrl-C."""
    config = config or TrainConfig()
    config.validate()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if isinstance(examples, Splits):
        splits = examples
    else:
        examples = list(examples)
        if not examples:
            raise DataError("no training examples: the dataset is empty (harvest reviews first: `revbot harvest`)")
        splits = split_examples(
            examples, config.seed, test_fraction=config.test_fraction, val_fraction=config.val_fraction,
            min_train=config.min_train, min_val=config.min_val, min_test=config.min_test,
        )
    data_fp = fingerprint(splits.train + splits.validation + splits.test)
    base = resolve_base_model(base_model)
    registry = ModelRegistry(models_dir)

    # -- set-up: one process per GPU under `accelerate launch`, bf16 autocast on CUDA
    import torch
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    on_cuda = torch.cuda.is_available()
    config = config.for_device(on_cuda)
    mixed = mixed_precision(config.precision, on_cuda, on_cuda and torch.cuda.is_bf16_supported())
    accelerator = Accelerator(mixed_precision=mixed, cpu=not on_cuda)  # cpu: several CPU processes use gloo
    main, world, rank, device = (accelerator.is_main_process, accelerator.num_processes,
                                 accelerator.process_index, accelerator.device)
    t0 = time.perf_counter()
    prepared = prepare_model(base, config, device)
    model, tokenizer, packed = prepared.model, prepared.tokenizer, prepared.packed
    timings["load_s"] = time.perf_counter() - t0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in model.parameters())

    # -- data: answer-only labels, packed rows (or batches grouped by length)
    t0 = time.perf_counter()
    encoded: dict[str, list[Encoded]] = {}
    too_long: dict[str, int] = {}
    for name, part in splits.items():
        encoded[name], skipped = encode_examples(part, tokenizer, config.max_length)
        too_long[name] = len(skipped)
    timings["tokenize_s"] = time.perf_counter() - t0
    if not encoded["train"]:
        raise DataError(f"all {len(splits.train)} training examples are longer than --max-length "
                        f"{config.max_length} tokens; raise --max-length")
    if sum(too_long.values()):
        log.warning("skipped examples longer than %d tokens: %s", config.max_length,
                    ", ".join(f"{k}={v}" for k, v in too_long.items() if v))

    def epoch_batches(epoch: int) -> list[Batch]:
        return make_batches(encoded["train"], config.batch_size, config.max_length, packed=packed,
                            seed=config.seed, epoch=epoch)

    first_epoch = epoch_batches(0)
    steps_per_epoch = max(1, math.ceil(len(first_epoch) / world))
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    eval_every = config.eval_every or max(1, min(steps_per_epoch, math.ceil(total_steps / 10)))
    save_every = config.save_every or eval_every
    warmup = int(round(config.warmup_ratio * total_steps))

    # -- optimiser, schedule, and the state of an interrupted run
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    head = _AnswerHead(unwrapped)
    pad_id = tokenizer.pad_token_id
    run_dir = registry.root / RUNS_DIR / run_key(base, data_fp, config, world)
    state = _State()
    torch.manual_seed(config.seed + 1)
    random.seed(config.seed + 1)
    if config.resume:
        checkpoint = _latest_checkpoint(run_dir)
        if checkpoint is None:
            raise UsageError(
                f"--resume: no checkpoint of this run in {run_dir} (the base model, the data and the training "
                f"settings must match the interrupted run); run again without --resume"
            )
        state = _load_checkpoint(checkpoint, unwrapped, optimizer, scheduler)
        log.info("resuming from %s (step %d of %d)", checkpoint, state.step, total_steps)

    def mean_loss(name: str) -> float | None:
        """Mean answer-token loss over a held-out split (all processes together)."""
        if not encoded[name]:
            return None
        batches = make_batches(encoded[name], config.batch_size, config.max_length, packed=packed,
                               seed=config.seed, epoch=0, shuffle=False)
        model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=device)
        with torch.no_grad():
            for batch in batches[rank::world]:
                loss_sum, n = _loss_sum(model, head, batch.tensors(pad_id), device)
                total += torch.tensor([loss_sum.item(), n], dtype=torch.float64, device=device)
        model.train()
        if world > 1:
            total = accelerator.reduce(total, reduction="sum")
        return (total[0] / total[1]).item() if total[1] > 0 else None

    def save_checkpoint(rng: dict[str, Any] | None = None) -> Path | None:
        if not main:
            return None
        return _save_checkpoint(run_dir, state, unwrapped, optimizer, scheduler, rng or _rng_state())

    # -- the loop
    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=state.step, desc="train", unit="step", dynamic_ncols=True)
    cache: dict[int, list[Batch]] = {0: first_epoch}
    last_saved = state.step
    step_rng: dict[str, Any] | None = None
    ema: float | None = None
    model.train()
    t_loop = time.perf_counter()
    try:
        while state.step < total_steps and not state.stopped_early:
            epoch, index = divmod(state.step, steps_per_epoch)
            if epoch not in cache:
                cache = {epoch: epoch_batches(epoch)}
            batches = cache[epoch]
            batch = batches[(index * world + rank) % len(batches)]
            step_rng = _rng_state()  # what a checkpoint of this step's start must restore
            optimizer.zero_grad(set_to_none=True)
            loss_sum, n = _loss_sum(model, head, batch.tensors(pad_id), device)
            loss = loss_sum / max(n, 1)
            accelerator.backward(loss)
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            state.step += 1
            step_rng = None
            value = loss.item()
            ema = value if ema is None else 0.9 * ema + 0.1 * value
            state.supervised_tokens += n
            state.tokens += batch.n_real
            state.history["train"].append({"step": state.step, "loss": value, "lr": scheduler.get_last_lr()[0]})
            current_val = None
            if state.step % eval_every == 0 or state.step == total_steps:
                current_val = mean_loss("validation")
                if current_val is not None:
                    state.record_validation(current_val, unwrapped, config.patience)
            checkpoint = None
            if state.step % save_every == 0 and state.step < total_steps and not state.stopped_early:
                now = time.perf_counter()
                state.train_seconds += now - t_loop
                t_loop = now
                checkpoint = save_checkpoint()
                last_saved = state.step
            if bar is not None:
                postfix = {"loss": f"{ema:.4f}"}
                if state.best_val is not None:
                    postfix["val"] = f"{state.best_val:.4f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
            if callback is not None:
                callback(StepInfo(state.step, total_steps, value, current_val, checkpoint))
        state.train_seconds += time.perf_counter() - t_loop
        final_val = None  # the validation loss of the weights we keep, if already measured on them
        if state.best_weights is not None and state.best_step != state.step:
            _load_trainable(unwrapped, state.best_weights)  # early stopping: the best, not the last
            final_val = state.best_val
        elif state.history["validation"] and state.history["validation"][-1]["step"] == state.step:
            final_val = state.history["validation"][-1]["loss"]
        t0 = time.perf_counter()
        if final_val is None:
            final_val = mean_loss("validation")
        test_loss = mean_loss("test")
        timings["final_eval_s"] = time.perf_counter() - t0
    except KeyboardInterrupt:
        state.train_seconds += time.perf_counter() - t_loop
        where = run_dir
        if 0 < state.step and state.step > last_saved:
            where = save_checkpoint(step_rng) or run_dir
        raise TrainingInterrupted(
            f"interrupted at step {state.step} of {total_steps}; checkpoint in {where}. Run the same command "
            f"with --resume to continue"
        ) from None
    except Exception as exc:
        if _is_oom(exc):
            raise oom_error(config) from None
        raise
    finally:
        if bar is not None:
            bar.close()
        head.remove()
    timings["train_s"] = state.train_seconds

    # -- the version: written to a temporary directory, renamed to vN when complete
    train_losses = [h["loss"] for h in state.history["train"]]
    tail = train_losses[-max(1, min(len(train_losses), steps_per_epoch)):]
    metrics = {
        "train_loss": sum(tail) / len(tail) if tail else None,
        "val_loss": final_val,
        "test_loss": test_loss,
        "best_step": state.best_step if state.best_step is not None else state.step,
        "steps": state.step,
        "epochs": state.step / steps_per_epoch,
        "stopped_early": state.stopped_early,
        "padding_share": padding_share(first_epoch),
        "packing": packed,
        "attention": prepared.attention,
        "supervised_tokens": state.supervised_tokens,
        "supervised_tokens_per_s": state.supervised_tokens / state.train_seconds if state.train_seconds else None,
        "tokens": state.tokens,
        "tokens_per_s": state.tokens / state.train_seconds if state.train_seconds else None,
        "peak_rss_mb": peak_rss_mb(),  # of the whole process, loading and evaluation included
    }
    hyper = {k: v for k, v in config.to_dict().items() if k != "resume"}
    hyper.update({
        "target_modules": prepared.targets, "total_steps": total_steps, "warmup_steps": warmup,
        "steps_per_epoch": steps_per_epoch, "eval_every": eval_every, "save_every": save_every, "world_size": world,
        "mixed_precision": mixed, "quantization": "4-bit NF4, double quantisation" if config.quantize else "none",
        "trainable_parameters": trainable, "total_parameters": total_params,
        "packing_check_difference": prepared.packing_difference,
    })
    version: ModelVersion | None = None
    if main:
        t0 = time.perf_counter()
        with registry.new_version() as pending:
            out = pending.path
            unwrapped.save_pretrained(out, save_embedding_layers=False)
            tokenizer.save_pretrained(out)
            (out / DATA_DIR).mkdir()
            for name, part in splits.items():
                write_examples(out / DATA_DIR / f"{name}.jsonl", part)
            plot_loss_curve(state.history, out / LOSS_CURVE_FILE, f"{Path(base).name} + LoRA r={config.lora_r}")
            timings["save_s"] = time.perf_counter() - t0
            timings["total_s"] = time.perf_counter() - started
            write_json_atomic(out / META_FILE, {
                "base_model": base,
                "prompt_format_version": PROMPT_FORMAT_VERSION,
                "adapter": "peft-lora",
                "created_at": now_iso(),
                "base_config": base_signature(unwrapped.get_base_model().config),
                "chat_template": bool(getattr(tokenizer, "chat_template", None)),
                "pad_token_set_to_eos": prepared.pad_changed,
                "data": {
                    "source": str(data_source) if data_source else None,
                    "fingerprint": data_fp,
                    "counts": splits.counts(),
                    "too_long": too_long,
                    "split": {**splits.settings, "time_ordered": splits.time_ordered},
                },
                "hyperparameters": hyper,
                "libraries": library_versions(),
                "metrics": metrics,
                "history": state.history,
                "timings": {k: round(v, 3) for k, v in timings.items()},
                "device": str(device),
            })
        version = pending.version
        shutil.rmtree(run_dir, ignore_errors=True)  # the checkpoints served their purpose
        if run_dir.parent.is_dir() and not any(run_dir.parent.iterdir()):
            run_dir.parent.rmdir()
    accelerator.wait_for_everyone()
    if version is None:  # the other processes of a multi-GPU run: the main one published it
        version = registry.latest()
    assert version is not None
    return version


# --------------------------------------------------------------------------- checkpoints


def _latest_checkpoint(run_dir: Path) -> Path | None:
    if not run_dir.is_dir():
        return None
    found = []
    for p in run_dir.iterdir():
        if p.name.startswith(CHECKPOINT_PREFIX) and (p / "state.pt").is_file():
            try:
                found.append((int(p.name[len(CHECKPOINT_PREFIX):]), p))
            except ValueError:
                continue
    return max(found)[1] if found else None


def _save_checkpoint(run_dir: Path, state: _State, model: Any, optimizer: Any, scheduler: Any,
                     rng: dict[str, Any]) -> Path:
    """Everything the loop needs to continue bit for bit, written to a temp dir then renamed."""
    import torch

    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / f"{CHECKPOINT_PREFIX}{state.step}"
    tmp = run_dir / f".tmp-{CHECKPOINT_PREFIX}{state.step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    payload = {
        "state": {k: v for k, v in asdict(state).items() if k != "best_weights"},
        "weights": _trainable_state(model),
        "best_weights": state.best_weights,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
    }
    torch.save(payload, tmp / "state.pt")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    older = sorted((p for p in run_dir.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and p != target),
                   key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]) if p.name[len(CHECKPOINT_PREFIX):].isdigit() else -1)
    for stale in older[:-(KEEP_CHECKPOINTS - 1)] if KEEP_CHECKPOINTS > 1 else older:
        shutil.rmtree(stale, ignore_errors=True)
    return target


def _load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> _State:
    import torch

    try:
        payload = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ModelError(f"cannot read the checkpoint {path}: {exc}; delete it and resume from an earlier one") from None
    _load_trainable(model, payload["weights"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    _set_rng_state(payload["rng"])
    saved = payload["state"]
    state = _State(**{k: v for k, v in saved.items() if k in {f.name for f in fields(_State)}})
    state.best_weights = payload.get("best_weights")
    return state
