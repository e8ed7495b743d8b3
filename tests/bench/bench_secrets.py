"""Benchmark: the secret scrubber's recall per kind, its false-positive rate on real Python, and its
speed, each against the scrubber at ``--baseline-rev`` (default: before issue 22) in the same run,
and its recall against a maintained detector's (detect-secrets 1.5.0) on the same corpus.

    .venv/bin/python tests/bench/bench_secrets.py [--site-packages DIR] [--max-lines N] [--per-kind 200]
                                                  [--seed 20240611] [--baseline-rev f96b1c2] [--show 60]
                                                  [--no-oracle]

1. Recall: the seeded fake-secret corpus (tests/core/secret_corpus.py; since issue 22 with kinds
   written from detect-secrets' plugins and the providers' documented formats), ``--per-kind``
   samples of every kind; a sample counts as caught when none of its secrets survives. "line-safe"
   counts samples whose line count and non-secret lines came through unchanged. The detect-secrets
   column scrubs each value that detect-secrets (every plugin, default settings) reports
   (tests/core/secret_oracle.py) and counts the same way.
2. False positives: every .py file under ``--site-packages`` (default: this interpreter's, i.e. the
   project venv's) is scrubbed whole, as a hunk would be, and every changed line is counted. All
   changed lines count as false positives here, although site-packages holds test keys and example
   credentials that are fine to redact: the changed lines are printed (up to ``--show``) for a
   person to judge.
3. Speed: lines per second on the same files, whole files (hunks, comments) and line by line (the
   logging filter), for the scrubber now and the one at ``--baseline-rev`` (read with git show; skipped
   without git).

The last line is machine-readable:

    RESULT recall_min=... fp_per_10k=... lines=... lines_per_s=... lines_per_s_before=... ...
           ... detect_secrets_recall_min=... kinds_below_detect_secrets=... line_safe_min=...
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
import time
import types
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bot import secrets as current  # noqa: E402
from tests.core.secret_corpus import generate_corpus  # noqa: E402
from tests.core.secret_oracle import oracle_recall  # noqa: E402


def load_baseline(rev: str) -> types.ModuleType | None:
    """The scrubber module as it was at ``rev``, or None when git or the revision is unavailable."""
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:bot/secrets.py"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"baseline {rev}: not available ({exc}); skipping the before column", file=sys.stderr)
        return None
    module = types.ModuleType("secrets_before")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{rev}:bot/secrets.py", "exec"), module.__dict__)
    return module


def recall(scrub, corpus) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    caught: dict[str, tuple[int, int]] = {}
    safe: Counter[str] = Counter()
    for sample in corpus:
        out = scrub(sample.text)
        hit, total = caught.get(sample.kind, (0, 0))
        caught[sample.kind] = (hit + all(s not in out for s in sample.secrets), total + 1)
        before, after = sample.text.split("\n"), out.split("\n")
        if len(before) == len(after) and all(
            a == b for i, (a, b) in enumerate(zip(before, after)) if i not in sample.secret_lines
        ):
            safe[sample.kind] += 1
    return caught, safe


def read_sources(root: Path, max_lines: int) -> tuple[list[tuple[str, str]], int]:
    files, lines, skipped = [], 0, 0
    for path in sorted(root.rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            skipped += 1
            continue
        files.append((str(path.relative_to(root)), text))
        lines += text.count("\n") + 1
        if max_lines and lines >= max_lines:
            break
    return files, skipped


def changed_lines(scrub, files) -> tuple[list[str], int, float]:
    """Changed lines (path:line: text), files whose line count changed, and seconds spent scrubbing."""
    changed, broken, spent = [], 0, 0.0
    for name, text in files:
        start = time.perf_counter()
        out = scrub(text)
        spent += time.perf_counter() - start
        if out == text:
            continue
        before, after = text.split("\n"), out.split("\n")
        if len(before) != len(after):
            broken += 1
            continue
        changed += [f"{name}:{i + 1}: {a.strip()[:160]}" for i, (a, b) in enumerate(zip(before, after)) if a != b]
    return changed, broken, spent


def per_line_rate(scrub, files, max_lines: int) -> float:
    lines = [ln for _, text in files for ln in text.split("\n")][:max_lines]
    start = time.perf_counter()
    for ln in lines:
        scrub(ln)
    return len(lines) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site-packages", type=Path, default=Path(sysconfig.get_paths()["purelib"]))
    parser.add_argument("--max-lines", type=int, default=0, help="stop reading after this many lines (0: all)")
    parser.add_argument("--per-kind", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--baseline-rev", default="f96b1c2", help="git revision of the scrubber to compare with")
    parser.add_argument("--no-oracle", action="store_true", help="skip detect-secrets (slow: ~1 ms a line)")
    parser.add_argument("--line-sample", type=int, default=300_000, help="lines scrubbed one by one")
    parser.add_argument("--show", type=int, default=60, help="changed lines to print")
    args = parser.parse_args(argv)
    if not args.site_packages.is_dir():
        print(f"bench_secrets: {args.site_packages}: not a directory", file=sys.stderr)
        return 2

    before = load_baseline(args.baseline_rev)
    corpus = generate_corpus(seed=args.seed, per_kind=args.per_kind)
    now_caught, now_safe = recall(current.scrub_text, corpus)
    old_caught, old_safe = recall(before.scrub_text, corpus) if before else ({}, Counter())
    oracle = {} if args.no_oracle else oracle_recall(corpus)
    print(f"recall on {len(corpus)} fake secrets (seed {args.seed}); before = {args.baseline_rev}")
    print(f"{'kind':32s} {'now':>9s} {'line-safe':>9s} {'before':>9s} {'line-safe':>9s} {'detect-secrets':>14s}")
    for kind, (hit, total) in now_caught.items():
        old = f"{old_caught[kind][0]:4d}/{total}" if before else "-"
        old_safe_text = f"{old_safe[kind]:4d}/{total}" if before else "-"
        theirs = f"{oracle[kind][0]:4d}/{total}" if oracle else "-"
        print(f"{kind:32s} {hit:5d}/{total} {now_safe[kind]:5d}/{total} {old:>9s} {old_safe_text:>9s} {theirs:>14s}")
    below = [k for k, (hit, _) in now_caught.items() if oracle and hit < oracle[k][0]]
    print(f"kinds where detect-secrets catches more: {', '.join(below) or 'none'}")
    recall_min = min(hit / total for hit, total in now_caught.values())
    recall_all = sum(h for h, _ in now_caught.values()) / len(corpus)
    old_all = sum(h for h, _ in old_caught.values()) / len(corpus) if before else float("nan")
    old_min = min(h / t for h, t in old_caught.values()) if before else float("nan")

    files, skipped = read_sources(args.site_packages, args.max_lines)
    lines = sum(text.count("\n") + 1 for _, text in files)
    print(
        f"\nfalse positives: {len(files)} files, {lines} lines under {args.site_packages}"
        f" ({skipped} files not UTF-8, skipped)"
    )
    changed, broken, spent = changed_lines(current.scrub_text, files)
    for entry in changed[: args.show]:
        print("  " + entry)
    if len(changed) > args.show:
        print(f"  ... {len(changed) - args.show} more")
    fp_per_10k = len(changed) * 10_000 / lines
    print(
        f"changed lines: {len(changed)} ({fp_per_10k:.3f} per 10,000 lines); files whose line count changed: {broken}"
    )
    old_changed, old_broken, old_spent = changed_lines(before.scrub_text, files) if before else ([], 0, float("nan"))
    if before:
        print(
            f"before: changed lines {len(old_changed)} ({len(old_changed) * 10_000 / lines:.3f} per 10,000), "
            f"files whose line count changed: {old_broken}"
        )

    rate, old_rate = lines / spent, lines / old_spent
    line_rate = per_line_rate(current.scrub_text, files, args.line_sample)
    old_line_rate = per_line_rate(before.scrub_text, files, args.line_sample) if before else float("nan")
    print(f"\nspeed, whole files: {rate:,.0f} lines/s now, {old_rate:,.0f} before")
    print(
        f"speed, line by line ({min(args.line_sample, lines)} lines): {line_rate:,.0f} lines/s now, "
        f"{old_line_rate:,.0f} before"
    )
    print(
        f"RESULT recall_min={recall_min:.3f} recall_all={recall_all:.3f} fp_per_10k={fp_per_10k:.3f} "
        f"lines={lines} lines_per_s={rate:.0f} lines_per_s_before={old_rate:.0f} "
        f"line_by_line_per_s={line_rate:.0f} line_by_line_per_s_before={old_line_rate:.0f} "
        f"recall_min_before={old_min:.3f} recall_all_before={old_all:.3f} "
        f"fp_per_10k_before={len(old_changed) * 10_000 / lines:.3f} line_count_changes={broken} "
        f"line_safe_min={min(now_safe[k] / t for k, (_, t) in now_caught.items()):.3f} "
        f"detect_secrets_recall_min={min(h / t for h, t in oracle.values()) if oracle else float('nan'):.3f} "
        f"detect_secrets_recall_all={sum(h for h, _ in oracle.values()) / len(corpus) if oracle else float('nan'):.3f} "
        f"kinds_below_detect_secrets={len(below) if oracle else 'nan'} kinds={len(now_caught)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
