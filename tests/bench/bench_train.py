"""Benchmark: revbot's trainer against the common tutorial recipe, same model, same examples.

Model: a tiny Llama of a few million parameters (bot.tiny: hidden 256, 4 layers, tokenizer trained
locally), loaded in 4-bit NF4 with double quantisation by both, with the same LoRA (r=16, alpha=32,
dropout 0.1 on q,k,v,o,gate,up,down). Examples: the first N crc-py reviews
(../shared/data/crc-py/reviews.jsonl, read with harvest's crc importer) whose text fits 2,048 tokens
in both formats; one epoch each.

  tutorial  trl's SFTTrainer over Alpaca-style text ("### Instruction / ### Input / ### Response"),
            loss on the whole sequence, padded batches of 4, no packing, max length 2048, no
            gradient checkpointing (off on both sides, so neither recomputes anything).
  revbot    finetune.train: the prompt contract, loss on the answer only with only the answer
            positions projected through the LM head, examples packed into rows of up to 2048
            tokens without cross-example attention, 2 rows a step.

Supervised tokens are the answer tokens (the review comment, its end marker and eos), counted once
with revbot's tokenisation and used as the numerator for both, so the speed ratio is a ratio of
training-loop times (Trainer's train_runtime; revbot's loop time, no validation or checkpoints on
either side). Peak memory is the peak resident set size during the run (model loading included)
minus the resident size after imports, sampled every 5 ms by a thread; each side runs in its own
fresh subprocess with the same number of CPU threads (1 by default: on a shared 2-core machine,
OpenMP's second thread mostly waits, and timings swing by 3x).

    python tests/bench/bench_train.py                          # about 1.5 minutes on 2 CPU cores
    python tests/bench/bench_train.py --repeat 2               # alternate runs, keep each side's best
    python tests/bench/bench_train.py --examples 16 --no-quantize   # quicker, plain LoRA
Last line: RESULT tokens_per_s_ratio=... memory_ratio=... padding_share=...
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

CRC = ROOT.parent / "shared" / "data" / "crc-py" / "reviews.jsonl"
MAX_LENGTH = 2048
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_R, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.1
ALPACA = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}"
)


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRSS:
    """Peak resident set size above the size at entry, sampled in a background thread."""

    def __init__(self, interval: float = 0.005):
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def delta(self) -> int:
        return self.peak - self.baseline


def load_crc_examples():
    """crc-py through harvest's importer; without harvest, the minimal conversion of the tests."""
    try:
        from harvest.formats import read_dataset
    except ImportError:
        from tests.finetune.helpers import crc_examples

        return crc_examples(CRC, negatives_every=0)
    return read_dataset(CRC, "crc").examples


def alpaca_text(example) -> str:
    inp = example.prompt_input()
    return ALPACA.format(instruction=inp.system, input=inp.user, output=example.answer())


# --------------------------------------------------------------------------- workers (subprocesses)


def _imports() -> None:
    """What both sides import before the memory baseline, so imports cost neither side."""
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import finetune.train  # noqa: F401


def worker_revbot(model: str, data: str, out: str, quantize: bool) -> None:
    from bot.examples import read_examples
    from finetune.data import Splits
    from finetune.train import TrainConfig, train

    examples = list(read_examples(data))
    config = TrainConfig(epochs=1, batch_size=2, max_length=MAX_LENGTH, lr=2e-4, save_every=10**9, patience=0, seed=0,
                         quantize=quantize, lora_r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules=TARGETS)
    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as mem:
        version = train(Splits(examples, [], []), model, tmp, config, progress=False)
    metrics = version.metrics
    Path(out).write_text(json.dumps({
        "seconds": version.meta["timings"]["train_s"], "peak_rss_delta": mem.delta, "peak_rss": mem.peak,
        "steps": metrics["steps"], "padding_share": metrics["padding_share"],
        "supervised_tokens": metrics["supervised_tokens"], "packing": metrics["packing"],
    }))


def worker_tutorial(model: str, data: str, out: str, quantize: bool) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from bot.examples import read_examples

    examples = list(read_examples(data))
    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as mem:
        tokenizer = AutoTokenizer.from_pretrained(model)
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.float32)
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, quantization_config=bnb if quantize else None)
        for module in lm.modules():  # as revbot does: keep 4-bit weights in the differentiable layout on CPU
            if getattr(module, "support_avx512bf16_for_cpu", False):
                module.support_avx512bf16_for_cpu = False
        dataset = Dataset.from_dict({"text": [alpaca_text(e) for e in examples]})
        args = SFTConfig(
            output_dir=tmp, per_device_train_batch_size=4, num_train_epochs=1, max_length=MAX_LENGTH, packing=False,
            learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=10**6,
            save_strategy="no", report_to=[], bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
            dataset_text_field="text", completion_only_loss=False, seed=0, disable_tqdm=True,
            dataloader_num_workers=0,
        )
        lora = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules=TARGETS,
                          task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=lm, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
        result = trainer.train()
    pad = real = 0
    for batch in trainer.get_train_dataloader():
        mask = batch["attention_mask"]
        real += int(mask.sum())
        pad += mask.numel() - int(mask.sum())
    Path(out).write_text(json.dumps({
        "seconds": result.metrics["train_runtime"], "peak_rss_delta": mem.delta, "peak_rss": mem.peak,
        "steps": result.global_step, "padding_share": pad / (pad + real) if pad + real else 0.0,
    }))


# --------------------------------------------------------------------------- driver


def run_worker(kind: str, model: Path, data: Path, out: Path, quantize: bool, threads: int) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--model", str(model), "--data", str(data), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run(command + ([] if quantize else ["--no-quantize"]), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"the {kind} worker failed (exit {proc.returncode})")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description="revbot's trainer vs the SFTTrainer tutorial recipe")
    parser.add_argument("--examples", type=int, default=48, help="crc-py examples to train on (default 48)")
    parser.add_argument("--no-quantize", action="store_true", help="plain LoRA on both sides instead of 4-bit QLoRA")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per side (default 1: steadier timings on a shared machine)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each side N times, alternating, and keep each side's fastest run (a busy machine)")
    parser.add_argument("--worker", choices=["revbot", "tutorial"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _imports()
        (worker_revbot if args.worker == "revbot" else worker_tutorial)(args.model, args.data, args.out,
                                                                         not args.no_quantize)
        return

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bot.examples import write_examples
    from bot.tiny import build_tiny_model
    from finetune.data import encode_example

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model = build_tiny_model(tmp_path / "tiny", arch="llama", hidden_size=256, num_layers=4, num_heads=8,
                                 intermediate_size=1024, seed=0)
        params = AutoModelForCausalLM.from_pretrained(model).num_parameters()
        tokenizer = AutoTokenizer.from_pretrained(model)
        chosen, answer_tokens = [], 0
        for ex in sorted(load_crc_examples(), key=lambda e: e.id):
            enc = encode_example(ex, tokenizer)
            if len(enc) <= MAX_LENGTH and len(tokenizer(alpaca_text(ex))["input_ids"]) + 1 <= MAX_LENGTH:
                chosen.append(ex)
                answer_tokens += enc.n_answer
            if len(chosen) == args.examples:
                break
        data = tmp_path / "examples.jsonl"
        write_examples(data, chosen)
        weights = "full-precision" if args.no_quantize else "4-bit NF4"
        print(f"model: tiny llama, {params / 1e6:.1f}M parameters, {weights} + LoRA r={LORA_R} on {len(TARGETS)} "
              f"projections; {args.threads} CPU thread(s) per side")
        print(f"examples: {len(chosen)} crc-py reviews that fit {MAX_LENGTH} tokens, one epoch; "
              f"{answer_tokens} supervised (answer) tokens")
        results: dict[str, dict] = {}
        runs: dict[str, list[float]] = {"tutorial": [], "revbot": []}
        for _ in range(max(1, args.repeat)):
            for kind in ("tutorial", "revbot"):
                r = run_worker(kind, model, data, tmp_path / f"{kind}.json", not args.no_quantize, args.threads)
                runs[kind].append(r["seconds"])
                if kind not in results or r["seconds"] < results[kind]["seconds"]:
                    results[kind] = r
        if args.repeat > 1:
            print("  runs (s): " + "; ".join(f"{k} " + ", ".join(f"{t:.1f}" for t in v) for k, v in runs.items()))
        for kind in ("tutorial", "revbot"):
            r = results[kind]
            print(f"  {kind:8s} {r['steps']:4d} steps {r['seconds']:8.1f}s {answer_tokens / r['seconds']:8.1f} answer tokens/s"
                  f"   peak RSS +{r['peak_rss_delta'] / 2**20:7.1f} MiB   padding {100 * r['padding_share']:5.1f}%")
        rev, tut = results["revbot"], results["tutorial"]
        if rev["supervised_tokens"] != answer_tokens:
            print(f"  note: revbot trained on {rev['supervised_tokens']} supervised tokens")
        speed = tut["seconds"] / rev["seconds"]
        memory = rev["peak_rss_delta"] / tut["peak_rss_delta"] if tut["peak_rss_delta"] else float("nan")
        print(f"answer tokens/s, revbot / tutorial: {speed:.2f}x (goal >= 2x)")
        print(f"peak memory, revbot / tutorial:     {memory:.2f}x (goal <= 1x)")
        print(f"RESULT tokens_per_s_ratio={speed:.2f} memory_ratio={memory:.2f} padding_share={rev['padding_share']:.3f}")


if __name__ == "__main__":
    main()
