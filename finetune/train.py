"""QLoRA training on TRL's SFTTrainer: examples -> a new model version (peft adapter + tokenizer + revbot.json).

The recipe is the one every user of the field knows, run by ``trl.SFTTrainer``: the base model in 4-bit
NF4 with double quantisation (loaded through adapters.model, as review loads it), LoRA on every attention
and MLP projection, AdamW with a cosine schedule and warm-up, examples packed best-fit-decreasing
(``packing_strategy="bfd"``) into padding-free batches, loss on the answer only
(``completion_only_loss``), validation loss as it goes, ``EarlyStoppingCallback`` with
``load_best_model_at_end`` keeping the best weights, checkpoints and ``resume_from_checkpoint``, and the
loss curve from the trainer's ``state.log_history``.

revbot adds only what the library lacks:
* the data: each example becomes prompt-completion token ids through the prompt contract, exactly as
  review encodes its prompts (finetune/data.py); examples that do not fit a row are skipped and counted,
  never cut;
* on CPU/sdpa, attention that keeps packed examples apart at their own cost, registered through
  transformers' attention registry (finetune/attention.py), and the answer-only LM head
  (finetune/loss.py, whose loss evaluation measures too);
  both earn their place in tests/bench/bench_train.py;
* the version registry and its metadata (revbot.json), Ctrl-C that leaves a checkpoint, and errors
  that say what to change.

Several GPUs, DeepSpeed, FSDP: the trainer runs under ``accelerate launch`` unchanged (one process per
GPU, each with its own copy of the base; only the main process writes checkpoints and the version)::

    accelerate launch --multi_gpu --num_processes 4 -m revbot train --model Qwen/Qwen2.5-Coder-7B-Instruct
    accelerate launch --config_file zero2.yaml -m revbot train --model ...   # DeepSpeed ZeRO-2; fsdp2.yaml: FSDP
    torchrun --nproc_per_node 2 -m revbot train ...    # CPU processes too (gloo over loopback)

The DeepSpeed or FSDP settings come from the accelerate config file (``accelerate config`` writes one;
TRL ships ready ones in ``trl/accelerate_configs``: zero1/2/3, fsdp1/2, multi_gpu).

Resuming: checkpoints live in ``models/.runs/<run key>/``, where the key is a hash of the base model,
the data and every setting that changes the result; ``resume=True`` with the same inputs hands the last
checkpoint to ``trainer.train(resume_from_checkpoint=...)``, which restores adapter, optimiser,
schedule, RNG states and log history and skips the batches already seen, so the run finishes with the
weights of an uninterrupted one (to within floating-point noise).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.files import atomic_write_json, write_examples
from adapters.versions import META_FILE, ModelRegistry, ModelVersion, now_iso
from bot.anchoring import Calibration
from bot.errors import DataError, ModelError, RevbotError, UsageError
from bot.examples import Example, fingerprint
from bot.prompt import PROMPT_FORMAT_VERSION
from finetune.attention import SEGMENT_ATTENTION
from finetune.attention import register as register_segment_attention
from finetune.config import CPU_DEFAULT_PRECISION, TrainConfig
from finetune.data import Splits, answer_format_for, encode_examples, prompt_completion_dataset, split_as_configured
from finetune.frozen_cache import frozen_blocks_cached
from finetune.loss import AnswerHead, DecisionWeights
from finetune.retrieval import build_index, exemplars_for

log = logging.getLogger(__name__)

RUNS_DIR = ".runs"
# validation passes a run makes by default (at least one an epoch): each costs a pass over the validation
# split, which with exemplars in every prompt is minutes on a CPU; four still let early stopping and the
# best-weights restore work
EVALS_PER_RUN = 4
KEEP_CHECKPOINTS = 2
LOSS_CURVE_FILE = "loss_curve.png"
DATA_DIR = "data"
# Linear layers of attention and MLP blocks across the common decoder families; the ones a model
# actually has are picked up by name (see detect_target_modules).
_KNOWN_PROJECTIONS = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "qkv_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "gate_up_proj",
    "c_attn",
    "c_proj",
    "c_fc",
    "query_key_value",
    "dense",
    "dense_h_to_4h",
    "dense_4h_to_h",
    "Wqkv",
    "out_proj",
    "fc1",
    "fc2",
    "w1",
    "w2",
    "w3",
)
_NEVER_TARGET = ("lm_head", "embed_tokens", "wte", "wpe", "score", "classifier", "embed_out")
OOM_HINT = (
    "lower --batch-size (now {batch_size}) or --max-length (now {max_length}), turn on --gradient-checkpointing"
    "{gc}, and keep 4-bit loading on (not --quantize none){quant}"
)


class TrainingInterrupted(RevbotError):
    """The run was stopped (Ctrl-C); a checkpoint was written so ``--resume`` continues it."""

    exit_code = 130


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
        raise ModelError(
            "the tokenizer has neither a pad token nor an eos token; add one to the base model's "
            "tokenizer (tokenizer_config.json) before training"
        )
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
        raise ModelError(
            "found no attention or MLP projection layers to attach LoRA to; name them with --target-modules"
        )
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
            alone = torch.cat(
                [
                    model(input_ids=a.to(device), use_cache=False).logits[0].float(),
                    model(input_ids=b.to(device), use_cache=False).logits[0].float(),
                ]
            )
            together = (
                model(input_ids=packed.to(device), position_ids=positions.to(device), use_cache=False).logits[0].float()
            )
    finally:
        model.train(was_training)
    scale = alone.abs().mean().clamp_min(1e-6)
    difference = ((together - alone).abs().mean() / scale).item()
    return difference < 1e-2, difference


# Token counts the trainer adds to every training log entry, cumulative over the run (and over an
# interrupted run's earlier sessions: they come back with the log history on resume).
COUNTS = ("tokens", "supervised_tokens", "token_slots")


class _RevbotTrainerMixin:
    """What revbot's SFTTrainer adds: the answer-only head on the CPU, and token counts in the log."""

    def __init__(self, *args: Any, answer_head: bool = False, decision_weight: float = 1.0, **kwargs: Any):
        self.answer_head: AnswerHead | None = None
        self.decisions: DecisionWeights | None = None
        self._pending = [0, 0, 0]  # COUNTS since the last log, this process
        self._totals: list[int] | None = None  # COUNTS so far, all processes
        self.session_start_counts = dict.fromkeys(COUNTS, 0)
        super().__init__(*args, **kwargs)
        if decision_weight != 1.0:  # weighted decisions need the per-token losses: revbot's head on any device
            self.decisions = DecisionWeights(self.processing_class, decision_weight)
        if answer_head or self.decisions is not None:
            self.answer_head = AnswerHead(self.model)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if model.training:
            mask = inputs.get("attention_mask")
            slots = inputs["input_ids"].numel()
            self._pending[0] += int(mask.sum()) if mask is not None else slots  # padding-free: no padding
            self._pending[1] += int((inputs["labels"][:, 1:] != -100).sum())
            self._pending[2] += slots
        if self.answer_head is None or return_outputs:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        loss_sum, n = self.answer_head.loss_sum(model, inputs, self.decisions if model.training else None)
        if num_items_in_batch is None:
            return loss_sum / max(n, 1)
        # as SFTTrainer does: num_items_in_batch counts every process's tokens and DDP averages gradients
        loss = loss_sum / num_items_in_batch
        if self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes
        return loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:  # a training step's entry: add the counts, all processes together
            import torch

            if self._totals is None:  # first log of this session: continue an interrupted run's counts
                earlier = [h for h in self.state.log_history if COUNTS[0] in h]
                self._totals = [int(earlier[-1][k]) for k in COUNTS] if earlier else [0, 0, 0]
                self.session_start_counts = dict(zip(COUNTS, self._totals))
            pending = torch.tensor(self._pending, dtype=torch.int64, device=self.args.device)
            if self.accelerator.num_processes > 1:
                pending = self.accelerator.reduce(pending, reduction="sum")
            self._totals = [t + int(p) for t, p in zip(self._totals, pending.tolist())]
            self._pending = [0, 0, 0]
            logs.update(zip(COUNTS, self._totals))
        super().log(logs, *args, **kwargs)


_TRAINER_CLASS: type | None = None


def trainer_class() -> type:
    """``trl.SFTTrainer`` with revbot's additions (built on first use: importing trl is slow)."""
    global _TRAINER_CLASS
    if _TRAINER_CLASS is None:
        from trl import SFTTrainer

        _TRAINER_CLASS = type("RevbotSFTTrainer", (_RevbotTrainerMixin, SFTTrainer), {"__module__": __name__})
    return _TRAINER_CLASS


class _Interrupt:
    """Ctrl-C during training: finish the step, write a checkpoint, stop. A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: Any) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            log.warning("stopping after this step to write a checkpoint (Ctrl-C again to stop at once)")

        signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


_MALLOC_TRIM: Any = None


def release_freed_memory() -> None:
    """Hand back to the system what the C allocator keeps after a step. glibc holds on to the freed
    chunks of the differently shaped tensors every packed batch allocates, so resident memory grows step
    by step until it is trimmed (measured in docs/benchmarks.md). A no-op without glibc."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


def _callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class _StepReporter:
    """A TrainerCallback (see ``_reporter``): the progress bar, the caller's per-step callback (called once
    the step's logging, evaluation and checkpoint are done), and a requested stop."""

    def __init__(
        self,
        callback: Callable[[StepInfo], None] | None,
        progress: bool,
        interrupt: _Interrupt,
        world_size: int,
        final_checkpoint: bool,
    ):
        self.callback, self.progress, self.interrupt, self.world_size = callback, progress, interrupt, world_size
        self.final_checkpoint = final_checkpoint
        self.pending: StepInfo | None = None
        self.bar: Any = None
        self.ema: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress and state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc="train", unit="step", dynamic_ncols=True
            )

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        release_freed_memory()
        self.pending = StepInfo(state.global_step, state.max_steps, float("nan"), None, None)
        if state.global_step >= state.max_steps and not self.final_checkpoint:
            control.should_save = False  # the run is complete: a checkpoint of it would be deleted unread
        if self._stop_requested(args):
            control.should_save = True
            control.should_training_stop = True

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.pending is None or not logs:
            return
        if "loss" in logs:
            self.pending.loss = float(logs["loss"])
        if "eval_loss" in logs:
            self.pending.val_loss = float(logs["eval_loss"])

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.pending is not None:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            self.pending.checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flush()
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _flush(self) -> None:
        info, self.pending = self.pending, None
        if info is None:
            return
        if self.bar is not None:
            self.ema = info.loss if self.ema is None else 0.9 * self.ema + 0.1 * info.loss
            postfix = {"loss": f"{self.ema:.4f}"}
            if info.val_loss is not None:
                postfix["val"] = f"{info.val_loss:.4f}"
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(info.step - self.bar.n)
        if self.callback is not None:
            self.callback(info)

    def _stop_requested(self, args: Any) -> bool:
        if self.world_size == 1:
            return self.interrupt.requested
        import torch
        from accelerate.utils import reduce

        # every process must stop at the same step, whichever of them saw the Ctrl-C first
        flag = torch.tensor([1 if self.interrupt.requested else 0], device=args.device)
        return bool(reduce(flag, reduction="sum").item())


def _reporter(*args: Any) -> Any:
    """A _StepReporter that is also a transformers TrainerCallback (imported on first use)."""
    cls = type("StepReporter", (_StepReporter, _callback_base()), {})
    return cls(*args)


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError)
        or "out of memory" in text
        or "can't allocate memory" in text
        or "failed to allocate" in text
    )


def oom_error(config: TrainConfig) -> ModelError:
    return ModelError(
        "ran out of memory while training; "
        + OOM_HINT.format(
            batch_size=config.batch_size,
            max_length=config.max_length,
            gc="" if not config.gradient_checkpointing else " (already on)",
            quant="" if config.quantized else " (now off)",
        )
    )


SIGNATURE_KEYS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
)


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
    blob = json.dumps(
        {
            "base": base_model,
            "data": data_fingerprint,
            "config": config.key_fields(),
            "world": world_size,
            "prompt": PROMPT_FORMAT_VERSION,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
        ax.plot(
            [h["step"] for h in history["validation"]],
            [h["loss"] for h in history["validation"]],
            "o-",
            color="#e6550d",
            label="validation loss",
        )
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
    """Load the base (through adapters.model, as review does), choose how to batch, and attach LoRA."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from adapters.model import BackendOptions, LocalBackend

    backend = LocalBackend.load(BackendOptions(base, quantize=config.quantize, device=str(device)))
    model, tokenizer = backend.model, backend.tokenizer
    keep_4bit_differentiable(model)
    pad_changed = ensure_pad_token(tokenizer)

    targets = list(config.target_modules) if config.target_modules else detect_target_modules(model)
    linear = _linear_leaf_names(model)
    unknown = [t for t in targets if t not in linear]
    if unknown:
        available = ", ".join(sorted(linear - set(_NEVER_TARGET)))
        raise UsageError(
            f"--target-modules: {', '.join(unknown)} not found in {base}; its linear layers are: {available}"
        )
    head = model.get_output_embeddings()
    head_name = next((n.rsplit(".", 1)[-1] for n, m in model.named_modules() if m is head and n), None)
    if head_name in targets:
        raise UsageError(
            f"--target-modules: {head_name} is the output layer, which SFTTrainer cannot train through "
            "LoRA (it scores with the layer's own weight); name the attention and MLP projections only"
        )

    packed, difference, attention = False, None, "sdpa"
    if config.packing is not False:
        window = getattr(model.config, "sliding_window", None)
        windowed = (
            bool(window) and getattr(model.config, "use_sliding_window", True) and window < (config.max_length or 2048)
        )
        if not windowed:  # per-example attention first (finetune/attention.py)
            model.set_attn_implementation(register_segment_attention())
            try:
                packed, difference = check_packing(model, len(tokenizer), device)
                attention = SEGMENT_ATTENTION
            except Exception as exc:  # an attention feature plain sdpa lacks (softcapping, say)
                log.debug("per-example attention does not suit this model: %s", exc)
                packed = False
            if not packed:
                attention = _library_attention(model)
        if not packed:  # transformers' own masks from the position ids, where the model builds them
            packed, difference = check_packing(model, len(tokenizer), device)
        if config.packing and not packed:
            raise ModelError(
                f"this model's attention mixes packed examples (difference {difference:.3g}); train without packing"
            )
        if not packed:
            log.warning(
                "packing would let examples attend to each other in this model (difference %.3g); "
                "batching by length instead",
                difference,
            )

    if config.quantized:  # gradient checkpointing, if asked for, is switched on by the trainer
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    torch.manual_seed(config.seed)  # LoRA's A matrices are initialised from the global RNG
    layers = None
    if config.lora_layers:
        total = int(getattr(model.config, "num_hidden_layers", 0) or 0)
        if not total:
            raise UsageError(f"--lora-layers: {base} does not say how many layers it has (num_hidden_layers)")
        layers = list(range(max(0, total - config.lora_layers), total))
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
        layers_to_transform=layers,
    )
    with quiet_library_warnings():
        model = get_peft_model(model, lora)
    return _Prepared(model, tokenizer, targets, packed, attention, difference, pad_changed)


def calibrate_trained(
    model: Any,
    tokenizer: Any,
    base: str,
    validation: Sequence[Example],
    shown: dict[str, Any],
    config: TrainConfig,
    index: Any,
    version: int = PROMPT_FORMAT_VERSION,
) -> Calibration:
    """The comment threshold for the trained ``model``, on the validation split's prompts as review
    will render them (``finetune.calibrate``)."""
    from adapters.model import LocalBackend
    from bot.anchoring import calibrate
    from finetune.calibrate import calibrate_on
    from finetune.retrieval import prompt_inputs

    if not validation:
        return calibrate([], [], min_precision=config.min_precision)
    was_training = model.training
    model.eval()
    # Packed training may leave the model on the segment attention (finetune.attention). Review serves
    # the saved version under the library's attention: calibrate under that one, so the threshold is
    # chosen on the very scores review computes. (Under the segment attention, prompts continued
    # from the cached prefix once scored as noise: a threshold chosen on noise.)
    _library_attention(model)
    try:
        backend = LocalBackend(model, tokenizer, name=base, prompt_format_version=version)
        backend.exemplars, backend.exemplar_k, backend.exemplar_max_length = index, config.exemplars, config.max_length
        return calibrate_on(backend, prompt_inputs(validation, shown), validation, min_precision=config.min_precision)
    finally:
        model.train(was_training)


def version_extras(out: Path, index: Any, config: TrainConfig, calibration: Calibration) -> dict[str, Any]:
    """What a v3 version keeps beside its adapter: the exemplar index (saved, hashed) and the
    calibration (with its precision–recall plot)."""
    from adapters.exemplars import save_index
    from finetune.calibrate import PR_CURVE_FILE, plot_pr_curve

    extra: dict[str, Any] = {"calibration": calibration.to_dict()}
    extra["exemplars"] = save_index(index, out, config.exemplars, config.max_length) if index is not None else None
    title = "comment threshold on validation" + ("" if calibration.threshold is not None else ": none calibrated")
    plot_pr_curve(calibration, out / PR_CURVE_FILE, title)
    return extra


def _library_attention(model: Any) -> str:
    """Back to transformers' sdpa (or eager, for a model without sdpa); the name it runs under."""
    try:
        model.set_attn_implementation("sdpa")
        return "sdpa"
    except ValueError:
        model.set_attn_implementation("eager")
        return "eager"


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
    and TrainingInterrupted (after writing a checkpoint) on Ctrl-C.

    The steps: split; set up the trainer's arguments; load the model; encode the data (with leak-free
    exemplars); build the trainer and its schedule; train; read what the run measured; calibrate the
    comment threshold on validation; publish the version."""
    config = config or TrainConfig()
    config.validate()
    run = _Run(time.perf_counter(), _splits_of(examples, config), resolve_base_model(base_model))
    registry = ModelRegistry(models_dir)
    import torch

    on_cuda = torch.cuda.is_available()
    config = config.for_device(on_cuda)
    mixed = mixed_precision(config.precision, on_cuda, on_cuda and torch.cuda.is_bf16_supported())
    args = _sft_args(config, registry, on_cuda, mixed, bool(run.splits.validation))
    world = args.world_size
    run_dir = registry.root / RUNS_DIR / run_key(run.base, run.data_fp, config, world)
    args.output_dir = str(run_dir)
    resume_from = _resume_point(config, run_dir)

    t0 = time.perf_counter()
    prepared = prepare_model(run.base, config, args.device)
    run.timings["load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    datasets, fitted, index, shown, version = _datasets(run.splits, prepared.tokenizer, config)
    trainer, reporter, interrupt, has_val = _build_trainer(
        prepared, datasets, args, config, run_dir, callback, progress, mixed
    )
    run.timings["tokenize_s"] = time.perf_counter() - t0
    schedule = _schedule(trainer, config, world, has_val, args)
    # packed rows keep examples apart, so the frozen blocks' output per example can be kept (finetune.frozen_cache)
    again = schedule["total_steps"] > schedule["steps_per_epoch"]  # training examples come back: keep theirs too
    with frozen_blocks_cached(trainer.model, prepared.packed and bool(config.lora_layers), again) as frozen_use:
        output = _fit(trainer, reporter, interrupt, resume_from, schedule["total_steps"], run_dir, config)
        run.timings["train_s"] = output.metrics["train_runtime"]
        history, counts = _history(trainer.state)
        t0 = time.perf_counter()
        final_val, test_loss, best_step = _final_losses(trainer, history, has_val, datasets)
        run.timings["final_eval_s"] = time.perf_counter() - t0
    metrics = _metrics(trainer, history, counts, schedule, run.timings["train_s"], prepared)
    metrics["frozen_block_cache"] = frozen_use or None
    metrics.update(val_loss=final_val, test_loss=test_loss, best_step=best_step)
    hyper = _hyperparameters(config, prepared, schedule, world, mixed)
    t0 = time.perf_counter()
    calibration = calibrate_trained(
        trainer.model, prepared.tokenizer, run.base, run.splits.validation, shown, config, index, version
    )
    run.timings["calibrate_s"] = time.perf_counter() - t0
    meta = {
        "prompt_format_version": version,
        "pad_token_set_to_eos": prepared.pad_changed,
        "data": {
            "source": str(data_source) if data_source else None,
            "fingerprint": run.data_fp,
            "counts": run.splits.counts(),
            "too_long": fitted["too_long"],
            "exemplars_trimmed": fitted["exemplars_trimmed"],
            "split": {**run.splits.settings, "time_ordered": run.splits.time_ordered},
        },
        "hyperparameters": hyper,
        "metrics": metrics,
        "history": history,
        "device": str(args.device),
    }
    return _publish(
        registry, run, trainer.model, prepared.tokenizer, meta, config, index, calibration, args.should_save, run_dir
    )


@dataclass
class _Run:
    """What a training run carries from step to step: when it started, the data, the base model."""

    started: float
    splits: Splits
    base: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def data_fp(self) -> str:
        return fingerprint(self.splits.train + self.splits.validation + self.splits.test)


def _splits_of(examples: Sequence[Example] | Splits, config: TrainConfig) -> Splits:
    if isinstance(examples, Splits):
        return examples
    examples = list(examples)
    if not examples:
        raise DataError("no training examples: the dataset is empty (harvest reviews first: `revbot harvest`)")
    return split_as_configured(examples, config)


def _sft_args(config: TrainConfig, registry: ModelRegistry, on_cuda: bool, mixed: str, has_val: bool) -> Any:
    """TRL's SFTConfig for this run (the output folder needs the world size: the caller sets it)."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(registry.root / RUNS_DIR / "pending"),
        use_cpu=not on_cuda,
        bf16=mixed == "bf16",
        fp16=False,
        seed=config.seed,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        lr_scheduler_type="cosine",
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        max_length=config.max_length,
        completion_only_loss=True,
        packing_strategy="bfd",
        logging_strategy="steps",
        logging_steps=1,
        eval_strategy="steps" if has_val else "no",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        save_total_limit=KEEP_CHECKPOINTS,
        load_best_model_at_end=has_val,
        metric_for_best_model="eval_loss" if has_val else None,
        greater_is_better=False if has_val else None,
        restore_callback_states_from_checkpoint=True,
        report_to="none",
        disable_tqdm=True,
        # validation needs the loss only: SFTTrainer then asks compute_loss for no outputs, so the answer-only
        # head serves evaluation too, instead of logits for every position (4 x 1024 x 49k is 0.8 GB in fp32)
        prediction_loss_only=True,
        dataloader_pin_memory=False,
        ddp_find_unused_parameters=False,
    )


def _resume_point(config: TrainConfig, run_dir: Path) -> str | None:
    if not config.resume:
        return None
    from transformers.trainer_utils import get_last_checkpoint

    resume_from = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    if resume_from is None:
        raise UsageError(
            f"--resume: no checkpoint of this run in {run_dir} (the base model, the data and the training "
            f"settings must match the interrupted run); run again without --resume"
        )
    return str(resume_from)


def _datasets(
    splits: Splits, tokenizer: Any, config: TrainConfig
) -> tuple[dict[str, Any], dict[str, dict[str, int]], Any, dict[str, Any], int]:
    """Prompt-completion token ids per split (with each example's leak-free exemplars, the least similar
    dropped where a row would be too long), skipping and counting what does not fit a row even without
    exemplars; the counts (``too_long`` and ``exemplars_trimmed`` per split), the exemplar index and
    what each example was shown; and the prompt format trained on (``finetune.data.answer_format_for``)."""
    version = answer_format_for(splits.train)
    log.info(
        "training on prompt format %d (%s)",
        version,
        "answers name the line by label" if version < 4 else "answers quote the line",
    )
    datasets: dict[str, Any] = {}
    counts: dict[str, dict[str, int]] = {"too_long": {}, "exemplars_trimmed": {}}
    index = build_index(splits.train) if config.exemplars else None
    shown = exemplars_for(index, splits.train + splits.validation + splits.test, config.exemplars)
    assert config.max_length is not None  # for_device filled it in
    for name, part in splits.items():
        encoded, skipped = encode_examples(part, tokenizer, config.max_length, shown, version)
        counts["too_long"][name] = len(skipped)
        counts["exemplars_trimmed"][name] = sum(1 for e in encoded if e.exemplars_dropped)
        datasets[name] = prompt_completion_dataset(encoded) if encoded else None
    if datasets["train"] is None:
        raise DataError(
            f"all {len(splits.train)} training examples are longer than --max-length "
            f"{config.max_length} tokens; raise --max-length"
        )
    for key, message in (
        ("exemplars_trimmed", "examples shown fewer exemplars to fit %d tokens: %s"),
        ("too_long", "skipped examples longer than %d tokens even without exemplars: %s"),
    ):
        if sum(counts[key].values()):
            log.warning(message, config.max_length, ", ".join(f"{k}={v}" for k, v in counts[key].items() if v))
    return datasets, counts, index, shown, version


def _build_trainer(
    prepared: _Prepared,
    datasets: dict[str, Any],
    args: Any,
    config: TrainConfig,
    run_dir: Path,
    callback: Callable[[StepInfo], None] | None,
    progress: bool,
    mixed: str,
) -> tuple[Any, Any, _Interrupt, bool]:
    """The SFTTrainer with revbot's callbacks; (trainer, reporter, interrupt, has validation)."""
    import torch
    from accelerate import PartialState
    from transformers import EarlyStoppingCallback, PrinterCallback

    has_val = datasets["validation"] is not None
    if not has_val and args.load_best_model_at_end:  # every validation example was too long
        args.eval_strategy, args.load_best_model_at_end, args.metric_for_best_model = "no", False, None
    packed = prepared.packed
    args.packing = args.padding_free = packed  # bfd rows flattened into one: the attention sees position ids
    args.train_sampling_strategy = "random" if packed else "group_by_length"  # unpacked: little padding
    interrupt = _Interrupt()
    reporter = _reporter(callback, progress, interrupt, args.world_size, has_val)  # the best weights may be the last
    callbacks = [reporter]
    if has_val and config.patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.patience, early_stopping_threshold=1e-4))
    if args.should_save and not config.resume:
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh start: an older run's checkpoints would mix in
    PartialState().wait_for_everyone()
    with quiet_library_warnings(), _quiet_datasets():
        trainer = trainer_class()(
            model=prepared.model,
            args=args,
            train_dataset=datasets["train"],
            eval_dataset=datasets["validation"],
            processing_class=prepared.tokenizer,
            callbacks=callbacks,
            answer_head=not str(args.device).startswith("cuda"),
            decision_weight=config.decision_weight,
        )
    trainer.remove_callback(PrinterCallback)  # the progress bar (or nothing) instead of a dict per step
    if mixed == "no":  # TRL keeps a 4-bit model's LoRA weights in bf16 (as the QLoRA paper did); fp32 asked for fp32
        for param in trainer.model.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()
    return trainer, reporter, interrupt, has_val


def _schedule(trainer: Any, config: TrainConfig, world: int, has_val: bool, args: Any) -> dict[str, int]:
    """Steps, validation and checkpoint intervals, warm-up: they depend on how many rows packing made."""
    steps_per_epoch = max(1, math.ceil(math.ceil(len(trainer.train_dataset) / config.batch_size) / world))
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    eval_every = config.eval_every or max(1, min(steps_per_epoch, math.ceil(total_steps / EVALS_PER_RUN)))
    save_every = config.save_every or eval_every
    if has_val and save_every % eval_every:
        raise UsageError(
            f"save_every ({save_every}) must be a multiple of eval_every ({eval_every}): the best "
            "weights are kept from the checkpoint written with each evaluation"
        )
    warmup = int(round(config.warmup_ratio * total_steps))
    args.eval_steps, args.save_steps, args.warmup_steps = eval_every, save_every, warmup
    return {
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "eval_every": eval_every,
        "save_every": save_every,
        "warmup_steps": warmup,
    }


def _fit(
    trainer: Any,
    reporter: Any,
    interrupt: _Interrupt,
    resume_from: str | None,
    total_steps: int,
    run_dir: Path,
    config: TrainConfig,
) -> Any:
    """``trainer.train``, with Ctrl-C leaving a checkpoint and out-of-memory saying what to change."""
    try:
        with interrupt.installed():
            output = trainer.train(resume_from_checkpoint=resume_from)
    except KeyboardInterrupt as exc:  # a second Ctrl-C, or one raised by a callback: the last checkpoint stands
        reporter.close()
        raise TrainingInterrupted(_interrupted(trainer.state.global_step, total_steps, run_dir)) from exc
    except Exception as exc:
        reporter.close()
        if _is_oom(exc):
            raise oom_error(config) from exc
        raise
    finally:
        if trainer.answer_head is not None:
            trainer.answer_head.remove()
    if interrupt.requested and trainer.state.global_step < total_steps:
        raise TrainingInterrupted(_interrupted(trainer.state.global_step, total_steps, run_dir))
    return output


def _history(state: Any) -> tuple[dict[str, list], dict[str, int]]:
    """Training and validation losses per step, and the token counts, from the trainer's log."""
    history: dict[str, list] = {"train": [], "validation": []}
    counts = dict.fromkeys(COUNTS, 0)
    for entry in state.log_history:
        if "loss" in entry:
            history["train"].append({"step": entry["step"], "loss": entry["loss"], "lr": entry.get("learning_rate")})
            counts = {k: entry.get(k, counts[k]) for k in COUNTS}
        elif "eval_loss" in entry:
            history["validation"].append({"step": entry["step"], "loss": entry["eval_loss"]})
    return history, counts


def _final_losses(
    trainer: Any, history: dict[str, list], has_val: bool, datasets: dict[str, Any]
) -> tuple[float | None, float | None, int]:
    """(validation loss of the weights we keep, measured already where possible; test loss; best step)."""
    from transformers import EarlyStoppingCallback

    state = trainer.state
    final_val = None
    best_step = state.best_global_step or state.global_step
    if has_val:
        if best_step != state.global_step:  # load_best_model_at_end put the best weights back
            final_val = state.best_metric
        elif history["validation"] and history["validation"][-1]["step"] == state.global_step:
            final_val = history["validation"][-1]["loss"]
        else:
            final_val = trainer.evaluate()["eval_loss"]
    test_loss = None
    if datasets["test"] is not None:
        trainer.remove_callback(EarlyStoppingCallback)  # it would look for eval_loss among the test metrics
        with quiet_library_warnings(), _quiet_datasets():
            test_loss = trainer.evaluate(datasets["test"], metric_key_prefix="test")["test_loss"]
    return final_val, test_loss, best_step


def _metrics(
    trainer: Any,
    history: dict[str, list],
    counts: dict[str, int],
    schedule: dict[str, int],
    train_seconds: float,
    prepared: _Prepared,
) -> dict[str, Any]:
    state, session = trainer.state, trainer.session_start_counts
    train_losses = [h["loss"] for h in history["train"]]
    tail = train_losses[-max(1, min(len(train_losses), schedule["steps_per_epoch"])) :]
    return {
        "train_loss": sum(tail) / len(tail) if tail else None,
        "steps": state.global_step,
        "epochs": state.global_step / schedule["steps_per_epoch"],
        "stopped_early": state.global_step < schedule["total_steps"],
        "padding_share": 1 - counts["tokens"] / counts["token_slots"] if counts["token_slots"] else 0.0,
        "packing": prepared.packed,
        "attention": prepared.attention,
        "supervised_tokens": counts["supervised_tokens"],
        "supervised_tokens_per_s": (counts["supervised_tokens"] - session["supervised_tokens"]) / train_seconds
        if train_seconds
        else None,
        "tokens": counts["tokens"],
        "tokens_per_s": (counts["tokens"] - session["tokens"]) / train_seconds if train_seconds else None,
        "peak_rss_mb": peak_rss_mb(),  # of the whole process, loading and evaluation included
    }


def _hyperparameters(
    config: TrainConfig, prepared: _Prepared, schedule: dict[str, int], world: int, mixed: str
) -> dict[str, Any]:
    model = prepared.model
    hyper = {k: v for k, v in config.to_dict().items() if k != "resume"}
    hyper.update(schedule)
    hyper.update(
        {
            "target_modules": prepared.targets,
            "world_size": world,
            "mixed_precision": mixed,
            "quantization": "4-bit NF4, double quantisation" if config.quantized else "none",
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_parameters": sum(p.numel() for p in model.parameters()),
            "packing_check_difference": prepared.packing_difference,
            "trainer": "trl.SFTTrainer",
            "packing_strategy": "bfd" if prepared.packed else None,
            "answer_head": "trl fused" if str(model.device).startswith("cuda") else "revbot (CPU)",
        }
    )
    return hyper


def _publish(
    registry: ModelRegistry,
    run: _Run,
    model: Any,
    tokenizer: Any,
    meta: dict[str, Any],
    config: TrainConfig,
    index: Any,
    calibration: Calibration,
    main: bool,
    run_dir: Path,
) -> ModelVersion:
    """Write the version into a temporary folder and rename it to vN when complete (the main process
    of a multi-process run; the others wait and return what it published)."""
    from accelerate import PartialState

    version: ModelVersion | None = None
    if main:
        t0 = time.perf_counter()
        with registry.new_version() as pending:
            out = pending.path
            model.save_pretrained(out, save_embedding_layers=False)
            tokenizer.save_pretrained(out)
            (out / DATA_DIR).mkdir()
            for name, part in run.splits.items():
                write_examples(out / DATA_DIR / f"{name}.jsonl", part)
            plot_loss_curve(meta["history"], out / LOSS_CURVE_FILE, f"{Path(run.base).name} + LoRA r={config.lora_r}")
            extra = version_extras(out, index, config, calibration)
            run.timings["save_s"] = time.perf_counter() - t0
            run.timings["total_s"] = time.perf_counter() - run.started
            atomic_write_json(
                out / META_FILE,
                {
                    "base_model": run.base,
                    "prompt_format_version": meta.pop("prompt_format_version", PROMPT_FORMAT_VERSION),
                    "adapter": "peft-lora",
                    "created_at": now_iso(),
                    "base_config": base_signature(model.get_base_model().config),
                    "chat_template": bool(getattr(tokenizer, "chat_template", None)),
                    **meta,
                    "libraries": library_versions(),
                    "timings": {k: round(v, 3) for k, v in run.timings.items()},
                    **extra,
                },
            )
        version = pending.version
        shutil.rmtree(run_dir, ignore_errors=True)  # the checkpoints served their purpose
        if run_dir.parent.is_dir() and not any(run_dir.parent.iterdir()):
            run_dir.parent.rmdir()
    PartialState().wait_for_everyone()
    if version is None:  # the other processes of a multi-process run: the main one published it
        version = registry.latest()
    assert version is not None
    return version


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No "Packing train dataset: 100%" bars while the trainer prepares the data: it takes a moment."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _interrupted(step: int, total: int, run_dir: Path) -> str:
    from transformers.trainer_utils import get_last_checkpoint

    where = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    if where is None:
        return f"interrupted at step {step} of {total}, before the first checkpoint; run the command again"
    return (
        f"interrupted at step {step} of {total}; checkpoint in {where}. Run the same command with --resume to continue"
    )
