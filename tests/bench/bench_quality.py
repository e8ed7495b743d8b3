"""Benchmark: review quality on real reviews, with the embedded real model, and the ablation of what
prompt format v3 adds. Not a test: run it in the background
(``nohup flock /tmp/revbot-train.lock python tests/bench/bench_quality.py > quality.log 2>&1 &``).

Imports crc-py (../shared/data/crc-py/reviews.jsonl: review comments from CPython, Django, pandas,
keras and others) with harvest's crc importer, splits it by PR and by time (the newest PRs are the
test set, the next newest validation), fine-tunes SmolLM2-135M-Instruct with `revbot train`'s
DEFAULTS (``TrainConfig()``: the recipe this benchmark validates; an option given here overrides
one), and evaluates every system on the same test hunks with the same generation settings:

    tuned                        v3: k exemplars, anchors chosen by the model's probabilities, the
                                 comment threshold calibrated on validation (what `revbot review` does)
    tuned, no threshold          the same pass, the model's own choice whether to comment
    tuned, free anchors          the same prompts, the model writes its own anchors
    tuned, k=N                   the same model shown N exemplars (--ablate-k)
    tuned, no retrieval          a second model trained without exemplars (--no-retrieval-model)
    base                         the untuned model: instructions and worked examples
    base + retrieval             the untuned model with the same exemplars as few-shot turns
    retrieval                    the comments of the most similar training hunk (BM25)
    most-frequent                the team's most frequent comment on every hunk's last line

Metrics as published (BLEU-4 as CodeReviewer's evaluator, with and without stop words; ROUGE-L as
rouge-score), review F1 (the right words on the right line), parse failures, invalid anchors.

Two properties of crc-py to read the table by: every hunk is GitHub's ``diff_hunk``, which ends at
the commented line; and it holds no negative examples, so silence on negatives is undefined and
every silence costs recall.

Last line: ``RESULT`` with every figure of the table, the ratios the targets name, the recipe, the
training time and peak memory, and the wall time.
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
FIGURES = (
    "bleu4",
    "bleu4_no_stop",
    "rouge_l",
    "review_f1",
    "line_precision",
    "line_recall",
    "parse_failure_rate",
    "invalid_anchor_rate",
)
ABLATION_METRICS = (
    "review_f1",
    "bleu4",
    "bleu4_no_stop",
    "rouge_l",
    "line_precision",
    "line_recall",
    "comments_per_hunk",
    "parse_failure_rate",
    "invalid_anchor_rate",
)


def parse_args() -> argparse.Namespace:
    from finetune.train import TrainConfig

    d = TrainConfig()
    p = argparse.ArgumentParser(description="quality on real reviews, and the ablation of prompt format v3")
    p.add_argument("--data", default=str(CRC), help="dataset file (default: crc-py)")
    p.add_argument("--format", dest="fmt", default="crc", help="its format (crc, codereviewer, jsonl, ...)")
    p.add_argument(
        "--keep-review-tool-comments",
        dest="keep_tool_comments",
        action="store_true",
        help="keep comments stamped by AI review tools",
    )
    p.add_argument("--base-model", default="smollm2-135m", help="base model (default: the embedded SmolLM2-135M)")
    p.add_argument("--epochs", type=float, default=d.epochs, help=f"default: revbot train's ({d.epochs:g})")
    p.add_argument("--steps", type=int, default=0, help="optimiser steps (overrides --epochs when > 0)")
    p.add_argument("--lr", type=float, default=d.lr, help=f"default: revbot train's ({d.lr:g})")
    p.add_argument(
        "--decision-weight",
        type=float,
        default=d.decision_weight,
        help=f"default: revbot train's ({d.decision_weight:g})",
    )
    p.add_argument(
        "--lora-dropout", type=float, default=d.lora_dropout, help=f"default: revbot train's ({d.lora_dropout:g})"
    )
    p.add_argument("--exemplars", type=int, default=d.exemplars, help=f"default: revbot train's ({d.exemplars})")
    p.add_argument("--max-length", type=int, default=d.max_length, help="default: revbot train's (1024 on CPU)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--eval-every", type=int, default=0, help="steps between validation passes (0: the default)")
    p.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test hunks (0: all)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="every system's answer budget")
    p.add_argument("--ablate-k", default="", help="also show the tuned model N exemplars, e.g. 1,5")
    p.add_argument("--no-retrieval-model", action="store_true", help="also train and test a model without exemplars")
    p.add_argument("--validation-only", action="store_true", help="train, calibrate, print validation figures; no test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", help="also write the whole report as JSON here")
    return p.parse_args()


def train_one(args: argparse.Namespace, splits, models: Path, exemplars: int):
    from finetune.train import TrainConfig, train

    config = TrainConfig(
        epochs=args.epochs,
        max_steps=args.steps or None,
        lr=args.lr,
        lora_dropout=args.lora_dropout,
        decision_weight=args.decision_weight,
        exemplars=exemplars,
        max_length=args.max_length,
        batch_size=args.batch_size,
        patience=args.patience,
        eval_every=args.eval_every or None,
        seed=args.seed,
        min_train=1,
        min_val=1,
        min_test=1,
    )
    print(f"training {args.base_model}: {json.dumps({k: v for k, v in config.to_dict().items() if v is not None})}")
    version = train(splits, args.base_model, models, config, data_source=args.data, progress=False)
    m, timings, cal = version.metrics, version.meta["timings"], version.meta.get("calibration") or {}
    print(
        f"  {version.name}: {m['steps']} steps ({m['epochs']:.2f} epochs, {m['tokens']} tokens) in "
        f"{timings['train_s']:.0f}s ({m['tokens_per_s']:.0f} tokens/s), total {timings['total_s']:.0f}s; "
        f"validation loss {m['val_loss']:.4f}, peak RSS {m['peak_rss_mb'] / 1024:.2f} GiB; "
        f"too long: {version.meta['data']['too_long']}"
    )
    print(
        f"  comment threshold {cal.get('threshold')}: {cal.get('reason')}; validation line precision "
        f"{cal.get('precision')}, recall {cal.get('recall')}, F1 {cal.get('f1')}"
    )
    return version


def ablation_table(report, metrics=ABLATION_METRICS) -> str:
    from finetune.metrics import METRIC_INFO, format_metric

    rows = [["system", *(METRIC_INFO[k].label if k in METRIC_INFO else k for k in metrics)]]
    rows += [[s.name, *(format_metric(k, s.metrics.get(k)) for k in metrics)] for s in report.systems]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def evaluate_all(args, version, plain, splits, test):
    """Every system on the same test hunks; tuned variants from one pass over each prompt."""
    from adapters.model import BackendOptions, load_backend
    from finetune.evaluate import (
        BASE,
        BASE_RETRIEVAL,
        TUNED,
        EvalReport,
        _exemplar_source,
        _Run,
        _usable,
        exemplars_for,
        threshold_summary,
    )
    from finetune.metrics import uninformative_metrics

    tuned = load_backend(BackendOptions(adapter=str(version.path)))
    test, dropped = _usable(list(test), list(splits.train), tuned, args.max_new_tokens)
    index, tuned_k, base_k = _exemplar_source(tuned, splits.train, None)
    ks = sorted({tuned_k, base_k, *(int(k) for k in args.ablate_k.split(",") if k.strip())})
    shown = exemplars_for(index, test, max(ks), context=splits.train)
    run = _Run(test, shown, args.max_new_tokens, 8, False, "constrained")
    t = tuned.threshold
    names = {TUNED: f"{version.name}, k={tuned_k}", "tuned, no threshold": "", "tuned, free anchors": ""}
    timer: dict[str, float] = {}

    def timed(label, *a, **kw):
        t0, before = time.perf_counter(), len(run.systems)
        out = run.model(*a, **kw)
        timer[label] = time.perf_counter() - t0
        for s in run.systems[before:]:  # as they come: a long run's log holds every finished system
            print(f"  {s.name}: " + ", ".join(f"{k} {s.metrics.get(k)}" for k in ABLATION_METRICS), flush=True)
        print(f"  ({label}: {timer[label]:.0f}s; load average {os.getloadavg()[0]:.1f})", flush=True)
        return out

    run.baselines(splits.train)  # instant: their figures first
    for s in run.systems:
        print(f"  {s.name}: " + ", ".join(f"{k} {s.metrics.get(k)}" for k in ABLATION_METRICS), flush=True)
    scores, scored = timed(
        "tuned", tuned, names, k=tuned_k, variants={TUNED: t, "tuned, no threshold": None}, free="tuned, free anchors"
    )
    base = load_backend(BackendOptions(version.base_model))
    timed("base + retrieval", base, {BASE_RETRIEVAL: "untuned + exemplars"}, k=base_k, variants={BASE_RETRIEVAL: None})
    timed("base", base, {BASE: "untuned"}, k=0, variants={BASE: None})
    del base
    for k in ks:
        if k != tuned_k:
            timed(f"k={k}", tuned, {f"tuned, k={k}": ""}, k=k, variants={f"tuned, k={k}": t})
    del tuned
    if plain is not None:
        other = load_backend(BackendOptions(adapter=str(plain.path)))
        timed(
            "no retrieval",
            other,
            {"tuned, no retrieval": "trained without exemplars"},
            k=0,
            variants={"tuned, no retrieval": other.threshold},
        )
        del other
    order = [TUNED, "tuned, no threshold", "tuned, free anchors", *(f"tuned, k={k}" for k in ks)]
    order += ["tuned, no retrieval", BASE, BASE_RETRIEVAL, "retrieval", "most-frequent"]
    run.systems.sort(key=lambda s: order.index(s.name) if s.name in order else len(order))
    report = EvalReport(
        version.name,
        version.base_model,
        test,
        run.systems,
        dropped,
        uninformative=uninformative_metrics(test),
        val_loss=version.metrics.get("val_loss"),
        generation={"max_new_tokens": args.max_new_tokens, "batch_size": 8, "anchors": "constrained"},
        too_long=run.too_long,
        threshold=threshold_summary(scores, scored, t, version),
    )
    return report, timer


def result_line(report, version, plain, wall: float, eval_s: float) -> str:
    def metric(system: str, name: str) -> float | None:
        found = report.get(system)
        return None if found is None else found.metrics.get(name)

    figures: dict[str, object] = {}
    for s in report.systems:
        key = s.name.replace(" + ", "_plus_").replace(", ", "_").replace(" ", "_").replace("-", "_").replace("=", "")
        for figure in FIGURES:
            value = s.metrics.get(figure)
            figures[f"{key}_{figure}"] = "nan" if value is None else f"{value:.4g}"
    for name in ("bleu4_no_stop", "rouge_l", "review_f1"):
        tuned, retrieval, base_r = metric("tuned", name), metric("retrieval", name), metric("base + retrieval", name)
        figures[f"tuned_over_retrieval_{name}"] = (
            f"{tuned / retrieval:.3f}" if tuned is not None and retrieval else "nan"
        )
        figures[f"tuned_over_base_retrieval_{name}"] = (
            f"{tuned / base_r:.3f}" if tuned is not None and base_r else "nan"
        )
    m, timings, cal = version.metrics, version.meta["timings"], version.meta.get("calibration") or {}
    hyper = version.meta["hyperparameters"]
    figures.update(
        {
            "test_hunks": len(report.examples),
            "threshold": cal.get("threshold"),
            "epochs": f"{m['epochs']:.2f}",
            "lr": hyper["lr"],
            "k": hyper["exemplars"],
            "steps": m["steps"],
            "val_loss": f"{m['val_loss']:.4f}",
            "train_s": f"{timings['train_s']:.0f}",
            "train_total_s": f"{timings['total_s']:.0f}",
            "peak_rss_gib": f"{m['peak_rss_mb'] / 1024:.2f}",
            "eval_s": f"{eval_s:.0f}",
            "wall_s": f"{wall:.0f}",
        }
    )
    if plain is not None:
        figures["no_retrieval_val_loss"] = f"{plain.metrics['val_loss']:.4f}"
    return "RESULT " + " ".join(f"{k}={v}" for k, v in figures.items())


def main() -> None:
    args = parse_args()
    from adapters.files import read_dataset
    from finetune.data import split_examples

    started = time.perf_counter()
    print(f"load average at start: {os.getloadavg()}")
    imported = read_dataset(args.data, args.fmt, keep_tool_comments=args.keep_tool_comments)
    print(imported.text().splitlines()[0])
    splits = split_examples(
        imported.examples, args.seed, test_fraction=0.1, val_fraction=0.05, min_train=1, min_val=1, min_test=1
    )
    print(
        "split: "
        + ", ".join(f"{k} {v['examples']} examples / {v['prs']} PRs" for k, v in splits.counts().items())
        + f"; time-ordered: {splits.time_ordered}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        version = train_one(args, splits, models, args.exemplars)
        plain = train_one(args, splits, models, 0) if args.no_retrieval_model else None
        if args.validation_only:
            print(f"RESULT val_loss={version.metrics['val_loss']:.4f} wall_s={time.perf_counter() - started:.0f}")
            return
        test = splits.test[: args.test_limit] if args.test_limit else splits.test
        t0 = time.perf_counter()
        report, timer = evaluate_all(args, version, plain, splits, test)
        eval_s = time.perf_counter() - t0
        print()
        print(report.table())
        print()
        print("ablation (same test hunks, same generation settings):")
        print(ablation_table(report))
        if report.out_dir is None:
            from finetune.report import write_report

            out = write_report(report, Path(os.environ.get("REVBOT_BENCH_OUT", tmp)) / "eval")
            print(f"report: {out / 'report.md'}; precision-recall plot: {out / 'pr_curve.png'}")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(report.to_dict(predictions=True), indent=1))
        print(
            f"\n(evaluation {eval_s:.0f}s: {json.dumps({k: round(v) for k, v in timer.items()})}; "
            f"load average now {os.getloadavg()})"
        )
        print(result_line(report, version, plain, time.perf_counter() - started, eval_s))


if __name__ == "__main__":
    main()
