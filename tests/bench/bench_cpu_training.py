"""Benchmark: which CPU training configuration of the embedded SmolLM2-135M is fastest, measured side
by side in one process so the machine's noise hits every configuration alike.

Each configuration is prepared with revbot's own ``finetune.train.prepare_model`` (the product's
loading, packing check and LoRA attachment), then the configurations take turns: one optimiser step
each on the same packed batch of real review examples (crc-py), round after round. Per configuration: median
seconds per step, tokens per second, its ratio to the first (the product's former default: LoRA on
every block, fp32), and tokens/s as a share of the machine's fp32 peak (2 FLOPs per parameter per
token forward; 2 more per parameter backward through each block LoRA reaches, activations only,
the frozen weights get no gradient; the peak from the CPU's vector width, cores and clock).

Peak memory per configuration is measured first, in a fresh child process each (RSS cannot be told
apart inside one process, and the timing process holds every configuration at once).

    python tests/bench/bench_cpu_training.py [--rounds 4] [--rows 4] [--length 1024]

Last line: ``RESULT`` with each configuration's tokens/s, ratio and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CRC = ROOT.parent / "shared" / "data" / "crc-py" / "reviews.jsonl"
CONFIGS = {  # the first is the baseline every ratio is against: the usual QLoRA recipe, as it ran before
    "all-4bit-fp32": {"lora_layers": 0, "precision": "fp32", "quantize": "4bit"},
    "last8-4bit-bf16": {"lora_layers": 8, "precision": "bf16", "quantize": "4bit"},
    "last8-fp32": {"lora_layers": 8, "precision": "fp32", "quantize": "none"},
    "last8-bf16": {"lora_layers": 8, "precision": "bf16", "quantize": "none"},
    # the product's default since the frozen-block cache: the same, with the 22 frozen blocks' output kept per
    # example (finetune.frozen_cache); timed warm, as every epoch after the first runs
    "last8-bf16-cached": {"lora_layers": 8, "precision": "bf16", "quantize": "none", "frozen_cache": True},
}


def real_batch(tokenizer, rows: int, length: int):
    """Packed rows of real review examples (crc-py), encoded as training encodes them and batched by TRL's
    padding-free collator (the first ``rows`` best-fit-decreasing rows of ``length`` tokens)."""
    from trl import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from adapters.files import read_dataset
    from finetune.data import encode_examples

    examples = read_dataset(CRC, "crc").examples
    encoded, _ = encode_examples(examples, tokenizer, length)
    packed = pack_dataset(_labelled(encoded), length, "bfd")
    collate = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    batch = collate([packed[i] for i in range(min(rows, len(packed)))])
    batch["n_real"] = batch["input_ids"].numel()
    return batch


def _labelled(encoded):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [list(e.ids) for e in encoded], "labels": [e.labels() for e in encoded]})


def prepared(name: str, rows: int, length: int):
    import torch

    from finetune.frozen_cache import FrozenPrefixCache
    from finetune.train import TrainConfig, prepare_model

    settings = {k: v for k, v in CONFIGS[name].items() if k != "frozen_cache"}
    config = TrainConfig(batch_size=rows, max_length=length, **settings)
    prep = prepare_model("smollm2-135m", config, torch.device("cpu"))
    if CONFIGS[name].get("frozen_cache") and FrozenPrefixCache.install(prep.model) is None:
        raise SystemExit(f"{name}: the frozen-block cache refused the model")
    params = [p for p in prep.model.parameters() if p.requires_grad]
    return prep, config, torch.optim.AdamW(params, lr=1e-4)


def step(prep, config, optimizer, batch) -> float:
    import torch

    from finetune.loss import AnswerHead

    head = getattr(prep, "_head", None) or AnswerHead(prep.model)
    prep._head = head
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
        loss_sum, n = head.loss_sum(prep.model, {k: v for k, v in batch.items() if k != "n_real"})
    (loss_sum / max(n, 1)).backward()
    optimizer.step()
    return time.perf_counter() - t0


def peak_child(name: str, rows: int, length: int) -> float:
    """Peak RSS (GiB) of a fresh process that prepares ``name`` and takes two steps."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, "--rows", str(rows), "--length", str(length)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_gib"]


def fp32_peak_gflops() -> float:
    """2 cores' worth of AVX-512 FMA: 2 units x 16 floats x 2 FLOPs per cycle per core, at the clock."""
    cores = os.cpu_count() or 1
    mhz = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz = max(mhz, float(line.split(":")[1]))
    except OSError:
        pass
    return cores * 2 * 16 * 2 * (mhz or 2000.0) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--only", nargs="*", default=list(CONFIGS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    from finetune.train import peak_rss_mb

    if args.child:
        prep, config, opt = prepared(args.child, args.rows, args.length)
        batch = real_batch(prep.tokenizer, args.rows, args.length)
        for _ in range(2):
            step(prep, config, opt, batch)
        print(json.dumps({"peak_gib": peak_rss_mb() / 1024}))
        return

    import torch

    names = [n for n in CONFIGS if n in args.only]
    memory = {name: peak_child(name, args.rows, args.length) for name in names}
    print("peak RSS (GiB): " + ", ".join(f"{n} {memory[n]:.1f}" for n in names), flush=True)
    models = {name: prepared(name, args.rows, args.length) for name in names}
    batch = real_batch(models[names[0]][0].tokenizer, args.rows, args.length)
    n_params = sum(p.numel() for p in models[names[0]][0].model.parameters() if not p.requires_grad)
    layers = models[names[0]][0].model.config.num_hidden_layers
    n_real, n_supervised = batch["n_real"], int((batch["labels"][:, 1:] != -100).sum())
    print(
        f"batch: {args.rows} rows, {n_real} real tokens ({n_supervised} supervised); "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for name in names:  # one warm-up step each
        step(*models[name], batch)
    times = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names:
            times[name].append(step(*models[name], batch))
        print(f"round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.1f}s" for n in names), flush=True)
    peak = fp32_peak_gflops()
    first = statistics.median(times[names[0]])
    result = []
    for name in names:
        median = statistics.median(times[name])
        reach = CONFIGS[name]["lora_layers"] or layers
        forward = reach / layers if CONFIGS[name].get("frozen_cache") else 1  # cached: the frozen blocks are skipped
        flops = n_real * n_params * (2 * forward + 2 * reach / layers)
        share = flops / median / 1e9 / peak
        vs_default = (
            f", x{statistics.median(times['last8-bf16']) / median:.2f} vs last8-bf16" if "last8-bf16" in times else ""
        )
        print(
            f"{name:>20}: {median:6.1f} s/step, {n_real / median:6.0f} tokens/s, x{first / median:.2f} "
            f"vs {names[0]}{vs_default}, {100 * share:.1f}% of fp32 peak ({peak:.0f} GFLOP/s), peak RSS {memory[name]:.1f} GiB"
        )
        key = name.replace("-", "_")
        result.append(
            f"{key}_tok_s={n_real / median:.0f} {key}_ratio={first / median:.2f} {key}_rss_gib={memory[name]:.1f}"
        )
    print("RESULT " + " ".join(result))


if __name__ == "__main__":
    main()
