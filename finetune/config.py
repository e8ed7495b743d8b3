"""Every knob of a training run and of an evaluation's generation, each stated once.

``TrainConfig`` is the one source of its fields' defaults and of the command-line options that set
them: a field with ``metadata=option(help, ...)`` becomes a `revbot train` / `revbot retrain` option
of the same name (``finetune.options`` builds them, the way a dataclass feeds an argument parser);
a field without it is a setting of the library only. Importing this module is cheap (no click, no
torch)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from bot.errors import UsageError
from bot.exemplars import DEFAULT_K

QUANTIZE_CHOICES = ("4bit", "none")  # the one spelling of every command and of BackendOptions

PRECISIONS = ("auto", "bf16", "fp32")
CPU_DEFAULT_PRECISION = "bf16"
CPU_LORA_LAYERS = 8
GPU_MAX_LENGTH, CPU_MAX_LENGTH = 2048, 1024  # tokens per row when --max-length is left out


def option(
    help: str,
    *,
    min: int | None = None,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    flag: str | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """A field's command-line option: its ``help``, and what the field's type does not say: the
    smallest whole number accepted (``min``), the ``choices`` of a string, the ``metavar``, the
    ``flag`` that turns a ``bool | None`` field off (``--no-packing``), or a ``kind`` the option
    builder knows by name (``quantize``: the one ``--quantize [4bit|none]`` of every command)."""
    return {"help": help, "min": min, "choices": choices, "metavar": metavar, "flag": flag, "kind": kind}


@dataclass
class TrainConfig:
    """Every knob of a training run. The defaults are the recipe tests/bench/bench_quality.py runs
    (a test ties the two): one epoch at lr 1e-3 with the team's k = 3 most similar earlier reviews
    in every prompt, LoRA r = 16 (on the last 8 blocks on a CPU)."""

    # schedule
    epochs: float = field(default=1.0, metadata=option("Passes over the training split."))
    max_steps: int | None = field(
        default=None, metadata=option("Stop after N optimiser steps (overrides --epochs).", min=1)
    )
    batch_size: int = field(
        default=4, metadata=option("Training rows per optimiser step; a packed row holds several examples.", min=1)
    )
    max_length: int | None = field(
        default=None,
        metadata=option(
            "Tokens per row; longer examples are skipped and counted. "
            f"[default: {GPU_MAX_LENGTH} on a GPU, {CPU_MAX_LENGTH} on CPU]",
            min=16,
        ),
    )
    lr: float = field(default=1e-3, metadata=option("Peak learning rate (cosine schedule with warm-up)."))
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_grad_norm: float = 1.0
    decision_weight: float = field(
        default=1.0,
        metadata=option(
            "Loss weight of the answer's decisions (its first token: comment or not; each anchor label: where) "
            "against 1 for the comment's words; 1: the plain loss."
        ),
    )
    # the adapter
    lora_r: int = field(default=16, metadata=option("LoRA rank.", min=1))
    lora_alpha: int = field(default=32, metadata=option("LoRA alpha (scale = alpha / r).", min=1))
    # 0: on crc-py's validation split as good as 0.1 (loss 2.6233 against 2.6254), and on a CPU peft's
    # dropout masks were a fifth of a warm step (docs/benchmarks.md)
    lora_dropout: float = field(default=0.0, metadata=option("Dropout on the LoRA input."))
    target_modules: list[str] | None = field(
        default=None,
        metadata=option(
            "Layer names to adapt, e.g. q_proj,v_proj (default: every attention and MLP projection found).",
            metavar="A,B,...",
        ),
    )
    lora_layers: int | None = field(
        default=None,
        metadata=option(
            "LoRA on the last N transformer blocks only (0: every block): backward stops there, so a CPU "
            f"step is about twice as fast. [default: every block on a GPU, the last {CPU_LORA_LAYERS} on CPU]",
            min=0,
        ),
    )
    # the base model and the step
    quantize: str | None = field(  # "4bit" (QLoRA), "none" (plain LoRA), None: 4bit on a GPU only
        default=None,
        metadata=option(
            "4bit: QLoRA on 4-bit weights; none: plain LoRA on full-precision weights. Default: 4bit on CUDA, "
            "none on a CPU (measured 4x faster there).",
            kind="quantize",
        ),
    )
    precision: str = field(
        default="auto",
        metadata=option(
            "bf16 autocast or fp32. auto: bf16 where the GPU has it, and on CPU the measured faster one.",
            choices=PRECISIONS,
        ),
    )
    gradient_checkpointing: bool = field(
        default=False, metadata=option("Recompute activations in backward: less memory, slower.")
    )
    packing: bool | None = field(  # None: pack when the model's attention keeps examples apart
        default=None,
        metadata=option("One example per row, batched by length, instead of packed rows.", flag="--no-packing"),
    )
    # the split
    seed: int = field(default=0, metadata=option("Seed of the split, the order and the LoRA init."))
    test_fraction: float = field(default=0.1, metadata=option("Share of examples held out for test."))
    val_fraction: float = field(default=0.1, metadata=option("Share held out for validation."))
    min_train: int = field(default=10, metadata=option("Fewest training examples accepted.", min=1))
    min_val: int = 2
    min_test: int = 2
    max_repo_share: float | None = field(
        default=None,
        metadata=option(
            "Balance a dataset pooled from many repositories: no repository gives more than this share of the "
            "training examples (whole PRs left out; validation and test untouched). See docs/data-filters.md."
        ),
    )
    # validation, early stopping, checkpoints
    eval_every: int | None = field(  # None: EVALS_PER_RUN evaluations a run, at least one per epoch
        default=None, metadata=option("Steps between validation passes.", min=1)
    )
    save_every: int | None = None  # steps; None: at every evaluation
    patience: int = field(
        default=3,
        metadata=option("Stop after N evaluations without a better validation loss (0: never stop early).", min=0),
    )
    # prompt format v3 and the comment threshold
    exemplars: int = field(
        default=DEFAULT_K,
        metadata=option(
            "The team's most similar earlier reviews shown with each hunk (prompt format v3); 0: none.", min=0
        ),
    )
    min_precision: float | None = field(
        default=None,
        metadata=option("Calibrate the comment threshold on validation for this precision (default: the best F1)."),
    )
    resume: bool = field(
        default=False, metadata=option("Continue the interrupted run with the same data and settings.")
    )

    # settings that do not change the trained weights, left out of the run key
    _NOT_IN_KEY = ("resume", "save_every", "min_precision")

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise UsageError(message)

        need(self.epochs > 0, f"--epochs must be positive, got {self.epochs}")
        need(
            self.max_repo_share is None or 0 < self.max_repo_share < 1,
            f"--max-repo-share must be between 0 and 1, got {self.max_repo_share}",
        )
        need(self.max_steps is None or self.max_steps > 0, f"--max-steps must be positive, got {self.max_steps}")
        need(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        need(
            self.max_length is None or self.max_length >= 16,
            f"--max-length must be at least 16 tokens, got {self.max_length}",
        )
        need(self.lr > 0, f"--lr must be positive, got {self.lr}")
        need(1 <= self.decision_weight <= 100, f"--decision-weight must be from 1 to 100, got {self.decision_weight}")
        need(0 <= self.warmup_ratio < 1, f"warm-up ratio must be in [0, 1), got {self.warmup_ratio}")
        need(self.lora_r >= 1, f"--lora-r must be at least 1, got {self.lora_r}")
        need(self.lora_alpha > 0, f"--lora-alpha must be positive, got {self.lora_alpha}")
        need(0 <= self.lora_dropout < 1, f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        need(self.patience >= 0, f"patience must be >= 0, got {self.patience}")
        need(0 <= self.exemplars <= 10, f"--exemplars must be from 0 to 10, got {self.exemplars}")
        need(
            self.min_precision is None or 0 < self.min_precision <= 1,
            f"--min-precision must be in (0, 1], got {self.min_precision}",
        )
        for name in ("eval_every", "save_every"):
            value = getattr(self, name)
            need(value is None or value >= 1, f"{name} must be at least 1, got {value}")
        if self.target_modules is not None:
            need(bool(self.target_modules), "--target-modules must name at least one module")
        need(
            self.lora_layers is None or self.lora_layers >= 0,
            f"--lora-layers must be 0 (every block) or more, got {self.lora_layers}",
        )
        need(
            self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
        )
        need(
            self.quantize in (None, *QUANTIZE_CHOICES),
            f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {self.quantize!r}",
        )

    @property
    def quantized(self) -> bool:
        """4-bit base weights (after ``for_device``, which decides what None means)."""
        return self.quantize == "4bit"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def for_device(self, on_cuda: bool) -> TrainConfig:
        """The settings left open (None) filled in for the device. A GPU takes the usual QLoRA recipe.
        A CPU takes LoRA on the last CPU_LORA_LAYERS blocks, bf16 autocast and full-precision base
        weights: bitsandbytes de-quantises every 4-bit weight on each CPU matmul, so there 4-bit costs
        time and, for a small model, saves no memory worth having (measured side by side by
        tests/bench/bench_cpu_training.py; the figures are in docs/benchmarks.md)."""
        return replace(
            self,
            max_length=self.max_length or (GPU_MAX_LENGTH if on_cuda else CPU_MAX_LENGTH),
            lora_layers=self.lora_layers if self.lora_layers is not None else (0 if on_cuda else CPU_LORA_LAYERS),
            quantize=self.quantize or ("4bit" if on_cuda else "none"),
        )

    def key_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in self._NOT_IN_KEY}
