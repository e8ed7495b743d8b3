"""Benchmark: batched vs one-hunk-at-a-time review, without and with the shared-prefix KV cache.

    .venv/bin/python tests/bench/bench_review.py [--sizes 8,32,128] [--batch-size 32] [--max-new-tokens 32]
                                                 [--threads 1] [--model smollm2-135m] [--adapter DIR]
                                                 [--prefix-cache both|on|off] [--sequential-sizes 32]
                                                 [--anchors free|constrained] [--min-confidence 0]

(also run by `make bench`). For each N it reviews a synthetic pull request of N hunks through the
real pipeline (bot.review.review_diff) and the real LocalBackend, one hunk at a time (batch size 1)
and batched, each without the prefix cache (every prompt computed whole: the code before
adapters/prefix_cache.py) and with it (the prefix all prompts share computed once per review, its
cost included in the timing). It checks that every mode gives the same greedy answers (raw model
text, not only the parsed comments: a random tiny model's answers rarely parse) and prints, side by
side in one run, the wall-time ratio sequential/batched and the seconds per hunk. Goal: ratio >= 3
at N = 32 and batched seconds per hunk flat in N. An untuned model gets the prompt format's worked
examples (the long shared prefix); ``--adapter`` measures a tuned version instead.

``--anchors constrained`` reviews as prompt format 3 does by default: every hunk's anchors scored one
prompt at a time (with the cache, each prompt's pass starts from the shared prefix's cached states),
then the chosen anchors' bodies generated in batches. Its scoring seconds are timed apart and its
anchor scores compared between modes (float noise only: at most 1e-3 apart).

Default model: a tiny random llama built locally (revbot.dev.tiny). ``--model smollm2-135m`` runs the
embedded SmolLM2-135M-Instruct (converted once into ~/.cache/revbot; heavy: run it under the train
lock). Nothing is downloaded. The last line is machine-readable:

    RESULT speedup_n32_before=... speedup_n32_after=... s_per_hunk_n32_before=... s_per_hunk_n32_after=... ...

"before" is without the prefix cache, "after" with it; speedup is sequential/batched within a mode;
cache_speedup is before/after of the batched review (and cache_scoring_speedup of its scoring part,
with ``--anchors constrained``).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
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
    """Wraps a backend and keeps the raw text of every answer, to compare batched with sequential, and
    the anchor scores of the constrained path with the seconds spent scoring them."""

    def __init__(self, backend):
        self.backend = backend
        self.texts: list[str] = []
        self.scores: list[float] = []
        self.scoring_s = 0.0
        self.max_context = backend.max_context

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate(self, inputs, *, max_new_tokens=256):
        out = self.backend.generate(inputs, max_new_tokens=max_new_tokens)
        self.texts += [g.text for g in out]
        return out

    def score_answers(self, inputs, candidates):
        start = time.perf_counter()
        out = self.backend.score_answers(inputs, candidates)
        self.scoring_s += time.perf_counter() - start
        self.scores += [p for probs in out for p in probs]
        return out


@dataclass
class Run:
    """One timed review: its seconds (the scoring part apart), raw answers, comments and scores."""

    seconds: float
    scoring: float
    texts: list[str]
    comments: list[dict]
    scores: list[float]
    hunks: int


def _review(diff, backend, options, batch: int, cache: bool) -> Run:
    """One timed review: the backend's batch size set, the prefix cache fresh (its prefix computed
    inside the timing) or off."""
    from adapters.prefix_cache import PrefixCache
    from bot.review import review_diff

    backend.batch_size = batch
    backend.prefix_cache = PrefixCache(backend.model) if cache else None
    rec = Recording(backend)
    start = time.perf_counter()
    review = review_diff(diff, rec, options)
    elapsed = time.perf_counter() - start
    return Run(
        elapsed, rec.scoring_s, rec.texts, [c.to_dict() for c in review.comments], rec.scores, review.hunks_reviewed
    )


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="8,32,128", help="numbers of hunks, comma-separated")
    parser.add_argument(
        "--sequential-sizes", help="the sizes also reviewed one hunk at a time (default: all; the slow part)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="the batched run's batch size")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--arch", default="llama", choices=["llama", "qwen2"])
    parser.add_argument("--model", help="a model directory or embedded name (smollm2-135m) instead of a tiny one")
    parser.add_argument("--adapter", help="a revbot adapter directory (a tuned version) to review with")
    parser.add_argument("--prefix-cache", default="both", choices=["both", "on", "off"])
    parser.add_argument(
        "--anchors",
        default="free",
        choices=["free", "constrained"],
        help="free (default): answers generated in batches, what batching and the prefix cache serve; "
        "constrained: prompt format 3's anchor scoring, one prompt at a time (adapters/decoding.py), "
        "then the chosen anchors' bodies in batches; its scoring seconds are timed apart",
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        help="constrained: comment on every anchor at least this likely (0: every hunk gets bodies, up to "
        "the per-hunk cap); default: the model's own choice (a random tiny model mostly stays silent)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 0 = torch's default. 1 (the default) keeps the figures steady on a "
        "shared machine, where spinning worker threads made the same batch take 1 to 13 s; "
        "a tiny model's operations are too small to gain from more threads anyway",
    )
    return parser.parse_args(argv)


def _same(runs: dict) -> tuple[bool, int, float]:
    """(every run gave the same answers and comments, how many answers differ at most, the largest
    difference between two runs' anchor scores: float noise, the prefix cache changes no decision)."""
    answers = [(r.texts, r.comments) for r in runs.values()]
    same = len({repr(a) for a in answers}) == 1
    first = answers[0][0]
    differing = max(sum(a != b for a, b in zip(first, t)) for t, _ in answers)
    scores = [r.scores for r in runs.values()]
    drift = max((abs(a - b) for s in scores for a, b in zip(scores[0], s)), default=0.0)
    return same and all(len(s) == len(scores[0]) for s in scores), differing, drift


def _measure(n: int, backend, options, args, modes, sequential: set[int], fields: dict[str, str]) -> bool:
    """Review a synthetic PR of ``n`` hunks in every mode; print a line, add RESULT fields; False when
    the modes' answers differ."""
    from bot.diff import parse_diff

    diff = parse_diff(synthetic_pr(n, seed=n), f"synthetic-{n}.diff")
    runs = {}
    for cache in modes:
        for batch in (1, args.batch_size) if n in sequential else (args.batch_size,):
            runs[(cache, batch)] = _review(diff, backend, options, batch, cache)
            assert runs[(cache, batch)].hunks == n, (runs[(cache, batch)].hunks, n)
    same, differing, drift = _same(runs)
    parts = [f"N={n:4d}"]
    for cache in modes:
        tag = "after" if cache else "before"
        batched = runs[(cache, args.batch_size)]
        fields[f"s_per_hunk_n{n}_{tag}"] = f"{batched.seconds / n:.4f}"
        text = f"{tag}: batched {batched.seconds:7.2f}s ({batched.seconds / n:.3f} s/hunk)"
        if args.anchors == "constrained":
            fields[f"s_scoring_n{n}_{tag}"] = f"{batched.scoring / n:.4f}"
            text += f" of which scoring {batched.scoring:6.2f}s"
        if (cache, 1) in runs:
            seq = runs[(cache, 1)].seconds
            fields[f"speedup_n{n}_{tag}"] = f"{seq / batched.seconds:.2f}"
            text += f" sequential {seq:7.2f}s ({seq / n:.3f} s/hunk) speedup {seq / batched.seconds:5.2f}x"
        parts.append(text)
    if len(modes) == 2:  # the prefix cache's own gain: without it / with it, batched
        before, after = runs[(False, args.batch_size)], runs[(True, args.batch_size)]
        fields[f"cache_speedup_n{n}"] = f"{before.seconds / after.seconds:.2f}"
        parts.append(f"cache speedup {before.seconds / after.seconds:5.2f}x")
        if args.anchors == "constrained":
            fields[f"cache_scoring_speedup_n{n}"] = f"{before.scoring / after.scoring:.2f}"
            parts.append(f"(scoring {before.scoring / after.scoring:5.2f}x)")
    generated = len(next(iter(runs.values())).texts)
    tail = f"  answers generated: {generated}, same outputs: {same}" + ("" if same else f" ({differing} of {n} differ)")
    print("  ".join(parts) + tail + (f", largest score difference {drift:.1e}" if runs and drift else ""))
    if not same or drift > 1e-3:
        print(f"FAIL: greedy outputs or anchor scores differ between modes at N={n}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    sequential = {int(s) for s in (args.sequential_sizes or args.sizes).split(",")}
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.prefix_cache]

    from adapters.model import BackendOptions, load_backend
    from bot.diff import parse_diff
    from bot.review import ReviewOptions

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None and args.adapter is None:
            from revbot.dev.tiny import build_tiny_model

            model_dir = str(build_tiny_model(Path(tmp) / "tiny", arch=args.arch, seed=0))
        import torch

        if args.threads > 0:
            torch.set_num_threads(args.threads)
        backend = load_backend(
            BackendOptions(model_dir, adapter=args.adapter, batch_size=args.batch_size, quantize="none")
        )
        described = backend.describe()
        print(
            f"model: {described['model']}{' + adapter ' + args.adapter if args.adapter else ''} "
            f"({'tiny ' + args.arch if not (args.model or args.adapter) else 'given'}), prompt format "
            f"v{described['prompt_format_version']}, worked examples: {described['few_shot']}, torch threads: "
            f"{torch.get_num_threads()}, batch size {args.batch_size}, max_new_tokens {args.max_new_tokens}, "
            f"anchors: {args.anchors}"
            + (f", min confidence {args.min_confidence}" if args.min_confidence is not None else "")
        )
        options = ReviewOptions(
            max_new_tokens=args.max_new_tokens,
            token_budget=10**9,
            max_comments=10**6,
            max_comments_per_file=10**6,
            anchors=args.anchors,
            min_confidence=args.min_confidence,
        )
        _review(parse_diff(synthetic_pr(4, seed=99)), backend, options, 4, False)  # warm-up: lazy initialisation

        fields: dict[str, str] = {}
        for n in sizes:
            if not _measure(n, backend, options, args, modes, sequential, fields):
                return 1
        if backend.prefix_cache is not None and backend.prefix_cache.entries:
            print(f"shared prefix: {len(next(iter(backend.prefix_cache.entries)))} tokens")
        order = sorted(fields, key=lambda k: (k.split("_n")[0], int(k.split("_n")[1].split("_")[0]), k))
        print("RESULT " + " ".join(f"{k}={fields[k]}" for k in order))
    return 0


if __name__ == "__main__":
    sys.exit(main())
