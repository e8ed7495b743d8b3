"""Benchmark: review quality on real reviews, with the embedded real model. Not a test: run it in the
background (``nohup python tests/bench/bench_quality.py > quality.log 2>&1 &``) and read the log.

Imports crc-py (../shared/data/crc-py/reviews.jsonl: review comments from CPython, Django, pandas,
keras and others) with harvest's crc importer, which drops comments stamped by AI review tools,
splits it by PR and by time (the newest PRs are the test set), fine-tunes SmolLM2-135M-Instruct
with QLoRA for a stated budget, and evaluates on the same test hunks, with the same generation
settings: the tuned model, the base model without the adapter (prompted fairly: its chat template,
the instructions and worked examples), the retrieval baseline (BM25 over training hunks) and the
most frequent comment. Metrics are computed as published (BLEU-4 as CodeReviewer's evaluator, with
and without stop words; ROUGE-L as rouge-score), plus review_f1 and the parse-failure rate.

Two properties of crc-py to read the table by: every hunk is GitHub's ``diff_hunk``, which ends at
the commented line, so line placement is always right for any system that comments on the last
line; and it holds no negative examples, so silence on negatives is undefined.

    python tests/bench/bench_quality.py                                 # defaults: SmolLM2, CPU
    python tests/bench/bench_quality.py --keep-review-tool-comments             # the same, AI-bot comments kept
    python tests/bench/bench_quality.py --data FILE --format codereviewer
    python tests/bench/bench_quality.py --base-model Qwen/Qwen2.5-Coder-1.5B-Instruct --lora-layers 0  # GPU

Last line: ``RESULT`` with every figure of the table, the training budget and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CRC = ROOT.parent / "shared" / "data" / "crc-py" / "reviews.jsonl"
SYSTEMS = ("tuned", "base", "retrieval", "most-frequent")
FIGURES = ("bleu4", "bleu4_no_stop", "rouge_l", "review_f1", "exact_match", "parse_failure_rate")


def main() -> None:
    parser = argparse.ArgumentParser(description="quality on real reviews: tuned vs base vs retrieval vs most-frequent")
    parser.add_argument("--data", default=str(CRC), help="dataset file (default: crc-py)")
    parser.add_argument("--format", dest="fmt", default="crc", help="its format (crc, codereviewer, jsonl, ...)")
    parser.add_argument(
        "--keep-review-tool-comments", action="store_true", help="keep comments stamped by AI review tools"
    )
    parser.add_argument("--base-model", default="smollm2-135m", help="base model (default: the embedded SmolLM2-135M)")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the training split (default 1)")
    parser.add_argument("--steps", type=int, default=0, help="optimiser steps (overrides --epochs when > 0)")
    parser.add_argument("--batch-size", type=int, default=4, help="packed rows per step (default 4)")
    parser.add_argument("--max-length", type=int, default=1024, help="tokens per row; longer examples are skipped")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-layers", type=int, default=8, help="LoRA on the last N blocks (0: every block)")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    parser.add_argument(
        "--quantize",
        choices=("4bit", "none"),
        default=None,
        help="4bit: QLoRA, none: plain LoRA (default: revbot's default for the device)",
    )
    parser.add_argument("--eval-every", type=int, default=0, help="steps between validation passes (0: ~5 a run)")
    parser.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test hunks (0: all)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_out", help="also write the whole report as JSON here")
    args = parser.parse_args()

    from adapters.files import read_dataset
    from finetune.data import split_examples
    from finetune.evaluate import evaluate
    from finetune.train import TrainConfig, train

    started = time.perf_counter()
    imported = read_dataset(args.data, args.fmt, keep_tool_comments=args.keep_tool_comments)
    print(imported.text().splitlines()[0])
    print(f"AI review tool comments dropped: {dict(imported.tool_comments) or 'none'}")
    splits = split_examples(
        imported.examples, args.seed, test_fraction=0.1, val_fraction=0.05, min_train=1, min_val=1, min_test=1
    )
    counts = splits.counts()
    print(
        "split: "
        + ", ".join(f"{k} {v['examples']} examples / {v['prs']} PRs" for k, v in counts.items())
        + f"; time-ordered: {splits.time_ordered}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            max_steps=args.steps or None,
            epochs=args.epochs,
            batch_size=args.batch_size,
            max_length=args.max_length,
            lr=args.lr,
            lora_r=args.lora_r,
            lora_alpha=2 * args.lora_r,
            lora_layers=args.lora_layers or None,
            precision=args.precision,
            quantize=args.quantize,
            seed=args.seed,
            min_train=1,
            min_val=1,
            min_test=1,
            eval_every=args.eval_every or None,
            patience=0,
        )
        print(f"training {args.base_model}: {json.dumps({k: v for k, v in config.to_dict().items() if v is not None})}")
        version = train(splits, args.base_model, Path(tmp) / "models", config, data_source=args.data, progress=True)
        m, timings = version.metrics, version.meta["timings"]
        print(
            f"trained {m['steps']} steps ({m['epochs']:.2f} epochs, {m['tokens']} tokens) in {timings['train_s']:.0f}s: "
            f"{m['tokens_per_s']:.0f} tokens/s, validation loss {m['val_loss']:.3f}, test loss {m['test_loss']:.3f}, "
            f"peak RSS {m['peak_rss_mb'] / 1024:.1f} GiB; too long (skipped): {version.meta['data']['too_long']}"
        )
        test = splits.test[: args.test_limit] if args.test_limit else splits.test
        t0 = time.perf_counter()
        report = evaluate(version, test, splits.train, max_new_tokens=args.max_new_tokens, out_dir=Path(tmp) / "eval")
        eval_s = time.perf_counter() - t0
        print()
        print(report.table())
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(report.to_dict(predictions=True), indent=1))
        total = time.perf_counter() - started
        print(f"\n(evaluation {eval_s:.0f}s, total {total:.0f}s)")
        figures = {}
        for system in SYSTEMS:
            for figure in FIGURES:
                value = report.metric(system, figure)
                figures[f"{system.replace('-', '_')}_{figure}"] = "nan" if value is None else f"{value:.4g}"
        tuned, retrieval = report.metric("tuned", "bleu4_no_stop"), report.metric("retrieval", "bleu4_no_stop")
        ratio = tuned / retrieval if tuned is not None and retrieval else None
        figures["tuned_over_retrieval_bleu4_no_stop"] = "nan" if ratio is None else f"{ratio:.3f}"
        tr, rr = report.metric("tuned", "rouge_l"), report.metric("retrieval", "rouge_l")
        figures["tuned_over_retrieval_rouge_l"] = "nan" if tr is None or not rr else f"{tr / rr:.3f}"
        figures.update(
            {
                "test_hunks": len(test),
                "steps": m["steps"],
                "epochs": f"{m['epochs']:.2f}",
                "train_tokens": m["tokens"],
                "train_s": f"{timings['train_s']:.0f}",
                "peak_rss_gib": f"{m['peak_rss_mb'] / 1024:.2f}",
                "eval_s": f"{eval_s:.0f}",
                "wall_s": f"{total:.0f}",
            }
        )
        print("RESULT " + " ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
