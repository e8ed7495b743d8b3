"""Benchmark: batched vs one-hunk-at-a-time review of a synthetic PR with a tiny model.

    .venv/bin/python tests/bench/bench_review.py [--sizes 8,32,128] [--batch-size 32] [--max-new-tokens 32]
                                                 [--threads 1]

(also run by `make bench`). For each N it reviews a synthetic pull request of N hunks through the
real pipeline (bot.review.review_diff) and the real LocalBackend, once with the backend's batch size
set to 1 and once batched, checks that both give the same greedy answers (raw model text, not only
the parsed comments: a random tiny model's answers rarely parse), and prints the wall-time ratio
sequential/batched and the time per hunk. Goal: ratio >= 3 at N = 32 on the CPU, and time per hunk
not growing with N. The last line is machine-readable:

    RESULT speedup_n8=... speedup_n32=... speedup_n128=... s_per_hunk_n128=...

The tiny model is built locally (revbot.dev.tiny); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STATEMENTS = [
    "value = compute(items, limit={n})",
    "if value is None:",
    "    return default_{n}",
    "for index, item in enumerate(items):",
    "    total += item.size * {n}",
    "log.info('processed %d items', {n})",
    "result = {{'id': {n}, 'name': name}}",
    "raise ValueError(f'bad input {{value!r}}')",
    "data = json.loads(text or '{{}}')",
    "self.cache[key] = value  # keep {n}",
]


def synthetic_pr(n_hunks: int, hunks_per_file: int = 4, seed: int = 0) -> str:
    """A git diff of ``n_hunks`` modification hunks of varied size and content."""
    rng = random.Random(seed)
    out = []
    for f in range((n_hunks + hunks_per_file - 1) // hunks_per_file):
        path = f"src/module_{f}.py"
        out.append(f"diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n--- a/{path}\n+++ b/{path}\n")
        old_line = 1
        for _ in range(min(hunks_per_file, n_hunks - f * hunks_per_file)):
            before, after = rng.randint(1, 3), rng.randint(1, 3)
            removed, added = rng.randint(0, 2), rng.randint(1, 4)
            body = []
            ctx = lambda: "    " + rng.choice(STATEMENTS).format(n=rng.randint(0, 999))  # noqa: E731
            body += [" " + ctx() for _ in range(before)]
            body += ["-" + ctx() for _ in range(removed)]
            body += ["+" + ctx() for _ in range(added)]
            body += [" " + ctx() for _ in range(after)]
            old_len, new_len = before + removed + after, before + added + after
            new_line = old_line  # every hunk adds at least as much as it removes; exact offsets do not matter
            out.append(f"@@ -{old_line},{old_len} +{new_line},{new_len} @@ def handler_{old_line}():\n")
            out.append("\n".join(body) + "\n")
            old_line += old_len + 20
    return "".join(out)


class Recording:
    """Wraps a backend and keeps the raw text of every answer, to compare batched with sequential."""

    def __init__(self, backend):
        self.backend = backend
        self.texts: list[str] = []
        self.max_context = backend.max_context

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate(self, inputs, *, max_new_tokens=256):
        out = self.backend.generate(inputs, max_new_tokens=max_new_tokens)
        self.texts += [g.text for g in out]
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="8,32,128", help="numbers of hunks, comma-separated")
    parser.add_argument("--batch-size", type=int, default=32, help="the batched run's batch size")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--arch", default="llama", choices=["llama", "qwen2"])
    parser.add_argument("--model", help="use this model directory instead of building a tiny one")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 0 = torch's default. 1 (the default) keeps the figures steady on a "
        "shared machine, where spinning worker threads made the same batch take 1 to 13 s; "
        "a tiny model's operations are too small to gain from more threads anyway",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    from adapters.model import BackendOptions, load_backend
    from bot.diff import parse_diff
    from bot.review import ReviewOptions, review_diff

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            from revbot.dev.tiny import build_tiny_model

            model_dir = str(build_tiny_model(Path(tmp) / "tiny", arch=args.arch, seed=0))
        import torch

        if args.threads > 0:
            torch.set_num_threads(args.threads)
        backend = load_backend(BackendOptions(model_dir, batch_size=args.batch_size, quantize="none"))

        print(
            f"model: {backend.describe()['model']} ({args.arch if not args.model else 'given'}), "
            f"torch threads: {torch.get_num_threads()}, batch size {args.batch_size}, "
            f"max_new_tokens {args.max_new_tokens}"
        )
        options = ReviewOptions(
            max_new_tokens=args.max_new_tokens, token_budget=10**9, max_comments=10**6, max_comments_per_file=10**6
        )
        # warm-up: first calls pay for lazy initialisation
        warm = parse_diff(synthetic_pr(4, seed=99))
        backend.batch_size = 4
        review_diff(warm, backend, options)

        results = {}
        for n in sizes:
            diff = parse_diff(synthetic_pr(n, seed=n), f"synthetic-{n}.diff")
            timings = {}
            texts = {}
            reviews = {}
            for mode, batch in (("sequential", 1), ("batched", args.batch_size)):
                backend.batch_size = batch
                rec = Recording(backend)
                start = time.perf_counter()
                review = review_diff(diff, rec, options)
                timings[mode] = time.perf_counter() - start
                texts[mode], reviews[mode] = rec.texts, review
                assert review.hunks_reviewed == n, (review.hunks_reviewed, n)
            same = texts["sequential"] == texts["batched"]
            differing = sum(a != b for a, b in zip(texts["sequential"], texts["batched"]))
            same_review = [c.to_dict() for c in reviews["sequential"].comments] == [
                c.to_dict() for c in reviews["batched"].comments
            ]
            speedup = timings["sequential"] / timings["batched"]
            per_hunk = timings["batched"] / n
            results[n] = (speedup, per_hunk)
            print(
                f"N={n:4d}  sequential {timings['sequential']:8.2f}s  batched {timings['batched']:8.2f}s  "
                f"speedup {speedup:5.2f}x  batched s/hunk {per_hunk:.4f}  sequential s/hunk "
                f"{timings['sequential'] / n:.4f}  same outputs: {same and same_review}"
                + ("" if same else f" ({differing} of {n} answers differ)")
            )
            if not (same and same_review):
                print(f"FAIL: batched and sequential greedy outputs differ at N={n}", file=sys.stderr)
                return 1
        fields = [f"speedup_n{n}={results[n][0]:.2f}" for n in sizes]
        last = sizes[-1]
        fields.append(f"s_per_hunk_n{last}={results[last][1]:.4f}")
        print("RESULT " + " ".join(fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
