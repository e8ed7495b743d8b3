"""Benchmark: an honest, repeatable quality table on real reviews.

Imports crc-py (../shared/data/crc-py/reviews.jsonl, 823 review comments on CPython, Django, pandas,
scikit-learn, keras and others) with harvest's crc importer, splits it by PR and by time (the newest
PRs are the test set), trains an adapter for a fixed budget, and evaluates on the same test hunks:
the tuned model, the base model without the adapter, the retrieval baseline (BM25 over training
hunks) and the most frequent comment.

By default the base model is a tiny random Llama built here (bot.tiny, 4.5M parameters): it cannot
learn to review in a few CPU minutes, so expect the baselines to win. The point is the pipeline and
a table that a real model fills with real numbers. Two properties of crc-py to read it by: every
hunk is GitHub's ``diff_hunk``, which ends at the commented line, so placing a comment on the last
line is always right (the baselines' perfect placement says nothing); and it holds no negative
examples, so silence on negatives is undefined ("–"). On a GPU with a real base model:

    python tests/bench/bench_quality.py --base-model Qwen/Qwen2.5-Coder-1.5B-Instruct \\
        --steps 0 --epochs 2 --batch-size 4 --eval-every 50 --test-limit 0 --max-new-tokens 256 --threads 0

    python tests/bench/bench_quality.py            # tiny model, CPU: a few minutes
Last line: RESULT tuned_bleu4=... base_bleu4=... retrieval_bleu4=... most_frequent_bleu4=... (BLEU-4
without stop words, the CodeReviewer paper's number).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

CRC = ROOT.parent / "shared" / "data" / "crc-py" / "reviews.jsonl"


def load_crc_examples():
    try:
        from harvest.formats import read_dataset
    except ImportError:
        from tests.finetune.helpers import crc_examples

        return crc_examples(CRC, negatives_every=0)
    return read_dataset(CRC, "crc").examples


def main() -> None:
    parser = argparse.ArgumentParser(description="quality table on crc-py: tuned vs base vs retrieval vs most-frequent")
    parser.add_argument("--base-model", help="hub id or path of a real model (default: a tiny random Llama, built here)")
    parser.add_argument("--steps", type=int, default=40, help="training steps (0: use --epochs; default 40)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--eval-every", type=int, default=10, help="steps between validation passes (default 10)")
    parser.add_argument("--test-limit", type=int, default=40, help="evaluate on the first N test hunks (0: all)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.base_model is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from bot.tiny import build_tiny_model
    from finetune.data import split_examples
    from finetune.evaluate import evaluate
    from finetune.train import TrainConfig, train

    started = time.perf_counter()
    examples = load_crc_examples()
    splits = split_examples(examples, args.seed, test_fraction=0.1, val_fraction=0.05)
    counts = splits.counts()
    print("crc-py: " + ", ".join(f"{k} {v['examples']} examples / {v['prs']} PRs" for k, v in counts.items())
          + f"; time-ordered split: {splits.time_ordered}")
    print(f"test PRs are the newest: first test comment {min(e.created_at for e in splits.test)}, "
          f"last training comment {max(e.created_at for e in splits.train)}")
    with tempfile.TemporaryDirectory() as tmp:
        base = args.base_model or str(build_tiny_model(Path(tmp) / "tiny", arch="llama", hidden_size=256, num_layers=4,
                                                        num_heads=8, intermediate_size=1024, max_position=4096, seed=0))
        config = TrainConfig(max_steps=args.steps or None, epochs=args.epochs, batch_size=args.batch_size,
                             max_length=args.max_length, seed=args.seed, min_train=1, min_val=1, min_test=1,
                             eval_every=args.eval_every)
        version = train(splits, base, Path(tmp) / "models", config, data_source=str(CRC), progress=True)
        m = version.metrics
        print(f"trained {m['steps']} steps in {version.meta['timings']['train_s']:.0f}s: validation loss "
              f"{m['val_loss']:.3f}, test loss {m['test_loss']:.3f}, padding {100 * m['padding_share']:.1f}%, "
              f"{m['attention']} attention")
        test = splits.test[:args.test_limit] if args.test_limit else splits.test
        report = evaluate(version, test, splits.train, max_new_tokens=args.max_new_tokens, batch_size=8,
                          out_dir=Path(tmp) / "eval")
        print()
        print(report.table())
        print(f"\n(total {time.perf_counter() - started:.0f}s)")
        values = {s.name: s.metrics.get("bleu4_no_stop") for s in report.systems}
        fmt = lambda v: "nan" if v is None else f"{v:.2f}"
        print("RESULT " + " ".join(f"{name.replace('-', '_')}_bleu4={fmt(values.get(name))}"
                                   for name in ("tuned", "base", "retrieval", "most-frequent")))


if __name__ == "__main__":
    main()
