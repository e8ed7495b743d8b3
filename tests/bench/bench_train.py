"""Benchmark: training throughput and memory of SFTTrainer set-ups side by side, same model, same examples.

Every configuration trains one epoch on the same rows: the first N crc-py reviews (../shared/data/crc-py,
read with harvest's importer) that fit --max-length, tokenised by revbot's prompt contract into TRL's
prompt-completion form (finetune/data.py); the same LoRA (r=16, alpha=32, dropout 0.1 on every attention
and MLP projection of the blocks revbot's CPU default reaches), the same 4-bit base (--no-quantize: plain
LoRA), bf16 autocast unless named otherwise, no gradient checkpointing, no evaluation, no checkpoints.

  tutorial        the seed's recipe: SFTTrainer without packing, padded batches of --batch-size examples,
                  loss on the whole sequence
  stock           SFTTrainer with packing="bfd" and padding_free, loss on the answer (completion_only_loss);
                  transformers' sdpa keeps packed examples apart with a block-diagonal mask, TRL's fused LM
                  head scores the supervised tokens (on the CPU: every position)
  stock+segments  stock with revbot's per-example attention registered (finetune/attention.py)
  stock+segments+head
                  the same with revbot's SFTTrainer subclass (finetune.train.trainer_class) and its
                  answer-only LM head (finetune.loss.AnswerHead): the head's own effect
  revbot          finetune.train.train, the product (model loading, packing check, version writing)
  revbot-fp32     revbot with --precision fp32 (no autocast)

Each configuration runs in its own fresh child process (--threads CPU threads), so its peak memory is its
own: the peak resident set size above the size after imports, sampled every 5 ms. The rounds alternate
the configurations (--repeat: keep each one's fastest run: a busy machine only ever slows a run down).
Tokens/s: the epoch's real (non-padding) tokens over the trainer's train_runtime; the same count for all.
Share of the fp32 peak: 2 FLOPs per parameter per token forward, 2 more backward through the blocks
LoRA reaches (activations only), over tests/bench/bench_cpu_training.fp32_peak_gflops().

Then two pieces alone, forward and backward in bf16 on the first training batch (the examples' real
lengths): "attention alone" at the model's head shape, transformers' block-diagonal mask against
finetune.attention's grouping (one call per distinct length, the default WASTE, one padded call); and
"LM head alone", a one-block model of the same configuration (random weights: no checkpoint is read),
TRL's fused head against AnswerHead. And the loss curves of bf16 autocast and fp32 side by side, their
gap against the curve's own step-to-step movement.

    python tests/bench/bench_train.py                               # tiny Llama, about 2 minutes on 2 CPU cores
    python tests/bench/bench_train.py --base-model smollm2-135m     # the embedded model (long: run it alone)
    python tests/bench/bench_train.py --repeat 2 --only stock revbot
    python tests/bench/bench_train.py --base-model smollm2-135m --only    # the two pieces alone, no training
Last line: RESULT tokens_per_s_ratio=... (revbot / tutorial) memory_ratio=... revbot_vs_stock=... ...
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
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
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

CRC = ROOT.parent / "shared" / "data" / "crc-py" / "reviews.jsonl"
CONFIGS = ("tutorial", "stock", "stock+segments", "stock+segments+head", "revbot", "revbot-fp32")
LORA_R, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.1


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

    def __enter__(self) -> PeakRSS:
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
        from adapters.files import read_dataset
    except ImportError:
        from tests.finetune.helpers import crc_examples

        return crc_examples(CRC, negatives_every=0)
    return read_dataset(CRC, "crc").examples


# --------------------------------------------------------------------------- workers (child processes)


def _imports() -> None:
    """What every configuration imports before the memory baseline, so imports cost none of them."""
    import datasets  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import finetune.train  # noqa: F401


def worker_sft(kind: str, job: dict) -> dict:
    """tutorial, stock, stock+segments(+head): TRL's SFTTrainer as its documentation sets it up."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from adapters.files import read_examples
    from finetune.attention import register
    from finetune.data import encode_examples, prompt_completion_dataset
    from finetune.train import keep_4bit_differentiable, trainer_class

    examples = list(read_examples(job["data"]))
    packed = kind != "tutorial"
    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as mem:
        tokenizer = AutoTokenizer.from_pretrained(job["model"])
        bnb = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
        lm = AutoModelForCausalLM.from_pretrained(
            job["model"], dtype=torch.float32, quantization_config=bnb if job["quantize"] == "4bit" else None
        )
        keep_4bit_differentiable(lm)  # as revbot does: 4-bit weights stay in the differentiable layout on CPU
        if kind.startswith("stock+segments"):
            lm.set_attn_implementation(register())
        encoded, _ = encode_examples(examples, tokenizer, job["max_length"])
        args = SFTConfig(
            output_dir=tmp,
            num_train_epochs=1,
            per_device_train_batch_size=job["batch_size"],
            max_length=job["max_length"],
            packing=packed,
            packing_strategy="bfd",
            padding_free=packed,
            completion_only_loss=packed,
            learning_rate=2e-4,
            lr_scheduler_type="cosine",
            warmup_steps=0.05,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            bf16=True,
            use_cpu=True,
            activation_checkpointing=False,
            seed=0,
            disable_tqdm=True,
            dataloader_pin_memory=False,
        )
        lora = LoraConfig(
            r=LORA_R,
            lora_alpha=LORA_ALPHA,
            lora_dropout=LORA_DROPOUT,
            target_modules=job["targets"],
            layers_to_transform=job["layers"],
            task_type="CAUSAL_LM",
        )
        head = {"answer_head": True} if kind.endswith("+head") else {}
        trainer = (trainer_class() if head else SFTTrainer)(
            model=lm,
            args=args,
            train_dataset=prompt_completion_dataset(encoded),
            processing_class=tokenizer,
            peft_config=lora,
            **head,
        )
        result = trainer.train()
    return {
        "seconds": result.metrics["train_runtime"],
        "peak_rss_delta": mem.delta,
        "steps": result.global_step,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
    }


def worker_revbot(kind: str, job: dict) -> dict:
    from adapters.files import read_examples
    from finetune.data import Splits
    from finetune.train import TrainConfig, train

    examples = list(read_examples(job["data"]))
    config = TrainConfig(
        epochs=1,
        batch_size=job["batch_size"],
        max_length=job["max_length"],
        lr=2e-4,
        patience=0,
        save_every=10**9,
        seed=0,
        quantize=job["quantize"],
        lora_r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=LORA_DROPOUT,
        target_modules=job["targets"],
        lora_layers=job["lora_layers"],
        precision="fp32" if kind == "revbot-fp32" else "bf16",
    )
    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as mem:
        version = train(Splits(examples, [], []), job["model"], tmp, config, progress=False)
    metrics = version.metrics
    return {
        "seconds": version.meta["timings"]["train_s"],
        "peak_rss_delta": mem.delta,
        "steps": metrics["steps"],
        "losses": [h["loss"] for h in version.meta["history"]["train"]],
        "padding_share": metrics["padding_share"],
        "tokens": metrics["tokens"],
        "attention": metrics["attention"],
    }


def run_worker(kind: str, job: dict, out: Path, threads: int) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--job", json.dumps(job), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"the {kind} worker failed (exit {proc.returncode})")
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- attention alone


def attention_alone(lengths: list[int], heads: int, kv_heads: int, dim: int, rounds: int) -> dict[str, float]:
    """Median seconds (forward + backward, bf16) of the ways to keep packed examples apart."""
    import torch
    import torch.nn.functional as F

    from finetune.attention import WASTE, segment_attention

    class Layer(torch.nn.Module):
        num_key_value_groups, is_causal = heads // kv_heads, True

    width = sum(lengths)
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    bounds = torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)
    segment = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    index = torch.arange(width)
    block = ((segment[:, None] == segment[None, :]) & (index[:, None] >= index[None, :]))[None, None]
    gen = torch.Generator().manual_seed(0)

    def make(h):
        return torch.randn(1, h, width, dim, generator=gen).to(torch.bfloat16)

    base = (make(heads), make(kv_heads), make(kv_heads))

    def masked(q, k, v):  # what transformers' sdpa builds from the position ids
        rep = heads // kv_heads
        return F.scaled_dot_product_attention(
            q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), attn_mask=block
        )

    ways = {"block-diagonal mask": masked}
    for name, waste in (
        ("one call per length", 1.0),
        (f"grouped (WASTE {WASTE})", WASTE),
        ("one padded call", math.inf),
    ):
        ways[name] = lambda q, k, v, w=waste: segment_attention(
            Layer(), q, k, v, None, position_ids=positions, cu_seq_lens_q=bounds, waste=w
        )[0]
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds + 1):  # the first round warms up
        for name, fn in ways.items():
            q, k, v = (t.clone().requires_grad_() for t in base)
            t0 = time.perf_counter()
            fn(q, k, v).float().sum().backward()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t[1:]) for name, t in times.items()}


def head_alone(config, row_lengths: list[int], answers: list[int], rounds: int) -> dict[str, float]:
    """Median seconds (forward + backward, bf16 autocast) of a one-block model of ``config`` scoring the
    answer tokens of one packed batch, with TRL's fused LM head and with revbot's AnswerHead."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from finetune.loss import AnswerHead

    small = copy.deepcopy(config)
    small.num_hidden_layers = 1
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(small)
    for param in model.parameters():  # frozen, as under LoRA; the block's output projection stands in for LoRA
        param.requires_grad_(False)
    next(m for n, m in model.named_modules() if n.endswith("o_proj")).weight.requires_grad_(True)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # what SFTTrainer installs
    width = sum(row_lengths)
    ids = torch.randint(0, config.vocab_size, (1, width), generator=torch.Generator().manual_seed(0))
    positions = torch.cat([torch.arange(n) for n in row_lengths])[None]
    labels = torch.full_like(ids, -100)
    start = 0
    for n, answer in zip(row_lengths, answers):  # the answer closes each example
        labels[0, start + n - answer : start + n] = ids[0, start + n - answer : start + n]
        start += n
    head = AnswerHead(model)
    inputs = {"input_ids": ids, "position_ids": positions, "labels": labels}
    ways = {
        "TRL fused head": lambda: model(**inputs, fused_lm_head=True).loss,
        "AnswerHead": lambda: (lambda s, n: s / n)(*head.loss_sum(model, inputs)),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds + 1):
        for name, fn in ways.items():
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = fn()
            loss.backward()
            model.zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - t0)
    head.remove()
    return {name: statistics.median(t[1:]) for name, t in times.items()}


# --------------------------------------------------------------------------- driver


def main() -> None:
    parser = argparse.ArgumentParser(description="SFTTrainer set-ups side by side: tokens/s and peak memory")
    parser.add_argument(
        "--base-model",
        default=None,
        help="model to train (default: a tiny random Llama built here; smollm2-135m: the embedded model)",
    )
    parser.add_argument("--examples", type=int, default=48, help="crc-py examples to train on (default 48)")
    parser.add_argument(
        "--max-length", type=int, default=1024, help="tokens per row (default 1024, revbot's CPU default)"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="rows (packed) or examples (tutorial) per step")
    parser.add_argument("--no-quantize", action="store_true", help="plain LoRA everywhere instead of 4-bit QLoRA")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads per child (default 1: steadier timings on a shared machine)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds over the configurations; each keeps its fastest run"
    )
    parser.add_argument("--only", nargs="*", choices=CONFIGS, default=list(CONFIGS), help="configurations to run")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _imports()
        job = json.loads(args.job)
        result = (worker_revbot if args.worker.startswith("revbot") else worker_sft)(args.worker, job)
        Path(args.out).write_text(json.dumps(result))
        return

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl import pack_dataset

    from adapters.embedded import resolve
    from adapters.files import write_examples
    from finetune.config import CPU_LORA_LAYERS
    from finetune.data import encode_example, prompt_completion_dataset
    from finetune.train import detect_target_modules
    from revbot.dev.tiny import build_tiny_model
    from tests.bench.bench_cpu_training import fp32_peak_gflops

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if args.base_model:
            model = Path(resolve(args.base_model))
            label = args.base_model
        else:
            model = build_tiny_model(
                tmp_path / "tiny",
                arch="llama",
                hidden_size=256,
                num_layers=4,
                num_heads=8,
                intermediate_size=1024,
                seed=0,
            )
            label = "tiny llama"
        config = AutoConfig.from_pretrained(model)
        with torch.device("meta"):  # the shape only: no weights read in this process
            skeleton = AutoModelForCausalLM.from_config(config)
        params, targets = skeleton.num_parameters(), detect_target_modules(skeleton)
        del skeleton
        layers = config.num_hidden_layers
        reach = min(CPU_LORA_LAYERS, layers)
        tokenizer = AutoTokenizer.from_pretrained(model)
        chosen, encoded = [], []
        for ex in sorted(load_crc_examples(), key=lambda e: e.id):
            enc = encode_example(ex, tokenizer)
            if len(enc) <= args.max_length:
                chosen.append(ex)
                encoded.append(enc)
            if len(chosen) == args.examples:
                break
        tokens, answer = sum(len(e) for e in encoded), sum(e.n_answer for e in encoded)
        data = tmp_path / "examples.jsonl"
        write_examples(data, chosen)
        job = {
            "model": str(model),
            "data": str(data),
            "quantize": "none" if args.no_quantize else "4bit",
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "targets": targets,
            "lora_layers": reach,
            "layers": list(range(layers - reach, layers)),
        }
        weights = "full-precision" if args.no_quantize else "4-bit NF4"
        peak = fp32_peak_gflops()
        flops_per_token = 2 * params + 2 * params * reach / layers
        print(
            f"model: {label}, {params / 1e6:.1f}M parameters, {weights} + LoRA r={LORA_R} on {len(targets)} projections "
            f"of the last {reach} of {layers} blocks; {args.threads} CPU thread(s) per configuration"
        )
        print(
            f"examples: {len(chosen)} crc-py reviews that fit {args.max_length} tokens, one epoch: {tokens} tokens, "
            f"{answer} of them answer tokens; machine fp32 peak {peak:.0f} GFLOP/s"
        )

        best: dict[str, dict] = {}
        runs: dict[str, list[float]] = {kind: [] for kind in args.only}
        for r in range(max(1, args.repeat) if args.only else 0):
            for kind in args.only:
                result = run_worker(kind, job, tmp_path / f"{kind}.json", args.threads)
                runs[kind].append(result["seconds"])
                if kind not in best or result["seconds"] < best[kind]["seconds"]:
                    best[kind] = result
            print(f"  round {r + 1}: " + ", ".join(f"{k} {runs[k][-1]:.1f}s" for k in args.only), flush=True)

        if args.only:
            print(
                f"\n  {'configuration':20s} {'steps':>5s} {'seconds':>8s} {'tokens/s':>9s} {'% fp32 peak':>11s} "
                f"{'peak RSS':>10s}"
            )
        speed = {}
        for kind in args.only:
            r = best[kind]
            speed[kind] = tokens / r["seconds"]
            share = 100 * speed[kind] * flops_per_token / 1e9 / peak
            print(
                f"  {kind:20s} {r['steps']:5d} {r['seconds']:8.1f} {speed[kind]:9.0f} {share:10.2f}% "
                f"{r['peak_rss_delta'] / 2**20:8.0f} MiB"
            )

        result_line: dict[str, str] = {}

        def ratio(a: str, b: str, what: str = "speed") -> float | None:
            if a not in best or b not in best:
                return None
            if what == "speed":
                return speed[a] / speed[b]
            return best[a]["peak_rss_delta"] / best[b]["peak_rss_delta"] if best[b]["peak_rss_delta"] else None

        print()
        for a, b, key, why in (
            ("revbot", "tutorial", "tokens_per_s_ratio", "revbot / the seed's padded recipe"),
            ("revbot", "stock", "revbot_vs_stock", "revbot / stock SFTTrainer with packing"),
            ("stock+segments", "stock", "segments_vs_mask", "per-example attention / block-diagonal mask"),
            ("stock+segments+head", "stock+segments", "head_vs_fused", "answer-only head / TRL's fused head"),
            ("revbot", "revbot-fp32", "bf16_vs_fp32", "bf16 autocast / fp32"),
        ):
            value = ratio(a, b)
            memory = ratio(a, b, "memory")
            if value is not None:
                print(
                    f"  tokens/s {why}: {value:.2f}x, peak memory {memory:.2f}x"
                    if memory
                    else f"  tokens/s {why}: {value:.2f}x"
                )
                result_line[key] = f"{value:.2f}"
                if key in ("tokens_per_s_ratio", "revbot_vs_stock", "head_vs_fused", "segments_vs_mask") and memory:
                    result_line[{"tokens_per_s_ratio": "memory_ratio"}.get(key, f"{key}_memory")] = f"{memory:.2f}"

        if "revbot" in best and "revbot-fp32" in best:
            bf16, fp32 = best["revbot"]["losses"], best["revbot-fp32"]["losses"]
            gap = statistics.mean(abs(a - b) for a, b in zip(bf16, fp32))
            movement = (
                statistics.mean(abs(a - b) for a, b in zip(fp32[1:], fp32[:-1])) if len(fp32) > 1 else float("nan")
            )
            print(
                f"  loss curves, bf16 vs fp32 over {len(fp32)} steps: mean |gap| {gap:.4f} against a mean step-to-step "
                f"movement of {movement:.4f}; final loss {bf16[-1]:.4f} vs {fp32[-1]:.4f}"
            )
            result_line["bf16_fp32_loss_gap"] = f"{gap:.4f}"
            result_line["loss_step_movement"] = f"{movement:.4f}"
        if "revbot" in best:
            result_line["padding_share"] = f"{best['revbot']['padding_share']:.3f}"
            result_line["revbot_tok_s"] = f"{speed['revbot']:.0f}"
            result_line["revbot_peak_share"] = f"{speed['revbot'] * flops_per_token / 1e9 / peak:.4f}"

        # the two pieces alone, on a training batch: bfd rows drawn as the trainer's shuffle draws them
        rows = pack_dataset(prompt_completion_dataset(encoded), args.max_length, "bfd")
        picked = random.Random(0).sample(range(len(rows)), min(args.batch_size, len(rows)))
        lengths, answers = [], []
        for row in rows.select(picked):
            start = 0
            for n in row["seq_lengths"]:
                lengths.append(n)
                answers.append(sum(row["completion_mask"][start : start + n]))
                start += n
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        rounds = 3 * max(1, args.repeat)
        timing = attention_alone(lengths, heads, kv_heads, dim, rounds)
        print(
            f"\n  attention alone (one layer, forward + backward, bf16): {len(lengths)} examples, {sum(lengths)} tokens, "
            f"{heads} heads ({kv_heads} key/value) of {dim}"
        )
        mask_time = timing["block-diagonal mask"]
        for name, seconds in timing.items():
            print(f"    {name:24s} {1000 * seconds:8.1f} ms   {mask_time / seconds:5.2f}x the mask's speed")
        grouped = next(v for k, v in timing.items() if k.startswith("grouped"))
        result_line["attention_grouped_vs_mask"] = f"{mask_time / grouped:.2f}"
        result_line["attention_grouped_vs_per_length"] = f"{timing['one call per length'] / grouped:.2f}"
        timing = head_alone(config, lengths, answers, rounds)
        print(
            f"  LM head alone (a one-block model, forward + backward, bf16 autocast): {sum(answers)} of {sum(lengths)} "
            f"tokens supervised, vocabulary {config.vocab_size}"
        )
        for name, seconds in timing.items():
            print(f"    {name:24s} {1000 * seconds:8.1f} ms")
        result_line["head_alone_speedup"] = f"{timing['TRL fused head'] / timing['AnswerHead']:.2f}"
        print("RESULT " + " ".join(f"{k}={v}" for k, v in result_line.items()))


if __name__ == "__main__":
    main()
