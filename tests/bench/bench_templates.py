"""Benchmark: what the data filters drop per repository, and what dropping templated comments and
balancing repositories does to the retrieval baseline on crc-py's newest pull requests.

    .venv/bin/python tests/bench/bench_templates.py [--data FILE --format crc] [--max-repo-share 0.25]

No model is trained: the retrieval baseline (finetune.baselines.RetrievalBaseline, BM25 over the
training hunks) and the most-frequent baseline answer the test hunks from each training set, scored
by finetune.evaluate.score (BLEU-4 as CodeReviewer computes it, ROUGE-L as rouge-score does).

One split for every configuration, so the figures compare: the newest PRs of the whole file
(bench_quality.py's fractions: 10% test, 5% validation) are the test set, and its templated
comments are left out of it (a tool's line is not what the team would write; kept, it inflates
BLEU-4 for whoever repeats the tool). The configurations differ only in their training examples:
  all             every comment but the review-bot stamped ones (what import kept before templates)
  no-templates    the templated comments dropped (the default now)
  balanced        no-templates, then no repository above --max-repo-share of training (bot.balance)
  all-balanced    every comment, balanced
The last line is machine-readable: ``RESULT k=v ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CRC = ROOT.parent / "shared" / "data" / "crc-py" / "reviews.jsonl"


def _ids(result) -> dict[str, str]:
    return {e.id: e.repo for e in result.examples}


def per_repo_drops(data: str, fmt: str) -> tuple[Counter, Counter, Counter]:
    """(records kept by no filter, dropped as review-bot stamped, dropped as templated), per repository."""
    from adapters.files import read_dataset

    everything = _ids(read_dataset(data, fmt, keep_tool_comments=True, keep_templates=True))
    no_bots = _ids(read_dataset(data, fmt, keep_templates=True))
    clean = _ids(read_dataset(data, fmt))
    total = Counter(everything.values())
    bots = Counter(repo for i, repo in everything.items() if i not in no_bots)
    templated = Counter(repo for i, repo in no_bots.items() if i not in clean)
    return total, bots, templated


def scores(train, test, templated_bodies: set[str]) -> dict[str, dict]:
    """Each baseline's metrics, and the share of its answers that repeat a templated comment."""
    from finetune.baselines import MostFrequentBaseline, RetrievalBaseline
    from finetune.evaluate import baseline_predictions, score

    out: dict[str, dict] = {}
    for baseline in (RetrievalBaseline(train), MostFrequentBaseline(train)):
        predictions = baseline_predictions(baseline, test)
        out[baseline.name] = score(test, predictions)
        out[baseline.name]["templated_answers"] = sum(
            any(c.body in templated_bodies for c in p.comments) for p in predictions
        ) / len(predictions)
        if isinstance(baseline, MostFrequentBaseline):
            out[baseline.name]["answer"] = baseline.comment
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(CRC))
    parser.add_argument("--format", dest="fmt", default="crc")
    parser.add_argument("--max-repo-share", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from adapters.files import read_dataset
    from bot.balance import balance_by_repo
    from finetune.data import split_examples

    total, bots, templated = per_repo_drops(args.data, args.fmt)
    print(f"{'repository':34s} {'records':>7s} {'bot-stamp':>9s} {'template':>8s}")
    for repo, n in total.most_common():
        if bots[repo] or templated[repo] or n >= 20:
            print(f"{repo:34s} {n:7d} {bots[repo]:9d} {templated[repo]:8d}")
    print(f"{'(all)':34s} {sum(total.values()):7d} {sum(bots.values()):9d} {sum(templated.values()):8d}")

    kept = read_dataset(args.data, args.fmt, keep_templates=True)
    clean_ids = {e.id for e in read_dataset(args.data, args.fmt).examples}
    splits = split_examples(kept.examples, args.seed, test_fraction=0.1, val_fraction=0.05, min_train=1, min_val=1)
    test = [e for e in splits.test if e.id in clean_ids]
    test_raw = splits.test
    train_all = splits.train
    train_clean = [e for e in train_all if e.id in clean_ids]
    templated_bodies = {c.body for e in kept.examples if e.id not in clean_ids for c in e.comments}
    balanced = balance_by_repo(train_clean, args.max_repo_share, args.seed)
    all_balanced = balance_by_repo(train_all, args.max_repo_share, args.seed)
    print(
        f"\ntest: the newest {len(test_raw)} examples ({len({(e.repo, e.pr) for e in test_raw})} PRs), "
        f"{len(test_raw) - len(test)} templated left out -> {len(test)}; repositories in test: "
        + ", ".join(f"{r} {n}" for r, n in Counter(e.repo for e in test).most_common(6))
    )
    print(
        f"balancing at {args.max_repo_share:.0%}: cap {balanced.cap} examples per repository; dropped "
        f"{dict(balanced.dropped)} (no-templates), {dict(all_balanced.dropped)} (all)"
    )
    configs = {
        "all": train_all,
        "no-templates": train_clean,
        "balanced": balanced.examples,
        "all-balanced": all_balanced.examples,
    }
    results = {name: scores(train, test, templated_bodies) for name, train in configs.items()}
    inflated = scores(train_all, test_raw, templated_bodies)["retrieval"]
    print(f"\n{'training set':14s} {'examples':>8s} {'top repo':>8s} {'BLEU-4':>7s} {'-stop':>6s} {'ROUGE-L':>7s} "
          f"{'F1':>6s} {'tmpl':>5s}  most-frequent answer (BLEU-4 -stop)")  # fmt: skip
    for name, train in configs.items():
        top = Counter(e.repo for e in train).most_common(1)[0][1] / len(train)
        r, mf = results[name]["retrieval"], results[name]["most-frequent"]
        print(
            f"{name:14s} {len(train):8d} {top:8.0%} {r['bleu4']:7.2f} {r['bleu4_no_stop']:6.2f} {r['rouge_l']:7.2f} "
            f"{r['review_f1'] or 0:6.3f} {r['templated_answers']:5.0%}  {str(mf['answer'])[:40]!r} "
            f"({mf['bleu4_no_stop']:.2f})"
        )
    print("(tmpl: share of retrieval's test answers that repeat a templated training comment)")
    print(
        f"(with the templated test comments kept, 'all' scores BLEU-4 -stop {inflated['bleu4_no_stop']:.2f}, "
        f"ROUGE-L {inflated['rouge_l']:.2f})"
    )
    fields = {"templated_dropped": sum(templated.values()), "bot_stamp_dropped": sum(bots.values())}
    top_repo, top_n = templated.most_common(1)[0] if templated else ("-", 0)
    fields["templated_top_repo_share"] = f"{top_n / max(1, sum(templated.values())):.2f}"
    for name in configs:
        key = name.replace("-", "_")
        fields[f"{key}_bleu4_no_stop"] = f"{results[name]['retrieval']['bleu4_no_stop']:.3f}"
        fields[f"{key}_rouge_l"] = f"{results[name]['retrieval']['rouge_l']:.3f}"
        fields[f"{key}_templated_answers"] = f"{results[name]['retrieval']['templated_answers']:.3f}"
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
