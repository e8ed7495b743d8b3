"""`revbot train`, `revbot eval`, `revbot score`, `revbot models` and `revbot export`: parse arguments,
call the finetune library, print the result. Errors are RevbotErrors; the `revbot` entry point prints them
without a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from adapters.cli_options import actor_option, quantize_option, quiet, summary_format_option
from adapters.versions import ModelRegistry, default_models_dir
from bot.errors import DataError, UsageError
from finetune.options import generation_options, pop_train_config, training_options

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _registry(models_dir: str | None) -> ModelRegistry:
    return ModelRegistry(models_dir or default_models_dir())


def _default_store() -> Path:
    """$REVBOT_DB (a relative path in $REVBOT_HOME), else revbot.db there."""
    from adapters.store import default_db_path

    return default_db_path()


models_dir_option = click.option(
    "--models-dir",
    metavar="DIR",
    default=None,
    help="Model versions folder (default: $REVBOT_MODELS_DIR, else models/).",
)


def _length_lines(data: dict[str, Any], hyper: dict[str, Any]) -> list[str]:
    """What the row length did to the examples, per split: shown fewer exemplars to fit, or skipped
    because even without exemplars they do not fit (nothing when neither happened)."""
    limit = hyper.get("max_length")
    out = []
    for key, what in (
        ("exemplars_trimmed", f"shown fewer exemplars to fit {limit} tokens"),
        ("too_long", f"skipped, longer than {limit} tokens even without exemplars"),
    ):
        counts = {k: v for k, v in (data.get(key) or {}).items() if v}
        if counts:
            out.append(f"  {what}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return out


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# --------------------------------------------------------------------------- train

TRAIN_EPILOG = """\b
Examples:
  revbot train --model Qwen/Qwen2.5-Coder-1.5B-Instruct          # QLoRA on the dataset store
  revbot train --data examples.jsonl --model ./my-model --epochs 2
  revbot train --model M --max-steps 200 --resume                  # continue an interrupted run
  accelerate launch --multi_gpu --num_processes 4 -m revbot train --model M   # several GPUs

\b
Splits: the newest PRs are the test set, the next newest validation (whole PRs, deterministic for a
--seed). A new version is written to DIR/vN; it becomes current only with --promote, or when nothing
is current yet (the first version). Evaluate it with `revbot eval --version vN`.
"""


@click.command("train", context_settings=CONTEXT, epilog=TRAIN_EPILOG)
@click.option(
    "--db",
    metavar="FILE",
    default=None,
    help="The dataset store to train on (SQLite, default: $REVBOT_DB, else revbot.db).",
)
@click.option(
    "--data",
    metavar="FILE",
    default=None,
    help="Train on an examples JSONL instead of the dataset store.",
)
@click.option(
    "--model",
    "base_model",
    metavar="ID_OR_PATH",
    default=None,
    help="Base model to adapt: a hub id, a local path or the embedded smollm2-135m (default: the "
    "current version's base model, else $REVBOT_MODEL, else smollm2-135m).",
)
@models_dir_option
@training_options
@click.option(
    "--promote/--no-promote",
    default=None,
    help="Make the new version current. Default: only when no version is current yet.",
)
@actor_option
def train(db, data, base_model, models_dir, promote, actor, **training):
    """Train a QLoRA adapter on past reviews and write it as a new model version.

    4-bit NF4 base weights with double quantisation, LoRA (rank, alpha and dropout below) on every
    attention and MLP projection, loss on the review answer only, packed rows, cosine schedule with
    warm-up, early stopping on validation loss and checkpoints for --resume.
    """
    from adapters.embedded import DEFAULT_BASE_MODEL
    from finetune.data import load_examples
    from finetune.train import train as run_training

    if db and data:
        raise UsageError("give --db (the dataset store) or --data (an examples file), not both")
    registry = _registry(models_dir)
    data_path = Path(data or db) if (data or db) else _default_store()
    if base_model is None:
        current = registry.current()
        from adapters.settings import Settings

        base_model = (current.base_model if current else None) or Settings.from_env().model or DEFAULT_BASE_MODEL
    examples = load_examples(data_path)
    if not examples:
        raise DataError(
            "no examples in the dataset; harvest reviews first (`revbot harvest github OWNER/REPO`)", str(data_path)
        )
    config = pop_train_config(training)
    version = run_training(
        examples, base_model, registry.root, config, data_source=str(data_path), progress=not quiet()
    )
    from accelerate import PartialState

    if not PartialState().is_main_process:  # several processes (accelerate launch): one reports
        return
    m = version.metrics
    counts = version.meta.get("data", {}).get("counts", {})
    click.echo(f"wrote {version.name} to {version.path}")
    click.echo("  examples: " + ", ".join(f"{k} {v.get('examples', 0)}" for k, v in counts.items()))
    for line in _length_lines(version.meta.get("data", {}), version.meta.get("hyperparameters", {})):
        click.echo(line)
    click.echo(
        f"  steps {m.get('steps')} ({_fmt(m.get('epochs'), 2)} epochs{', stopped early' if m.get('stopped_early') else ''}), "
        f"train loss {_fmt(m.get('train_loss'))}, validation loss {_fmt(m.get('val_loss'))}, "
        f"test loss {_fmt(m.get('test_loss'))}"
    )
    calibration = version.meta.get("calibration") or {}
    threshold = calibration.get("threshold")
    click.echo(
        f"  comment threshold {threshold:.4g} ({calibration.get('reason')})"
        if threshold is not None
        else f"  comment threshold: none calibrated ({calibration.get('reason') or 'no validation split'}); "
        "review uses the model's own choice (a comment where commenting outweighs silence)"
    )
    click.echo(
        f"  packing {'on' if m.get('packing') else 'off (batched by length)'}, padding share "
        f"{100 * (m.get('padding_share') or 0):.1f}%, {_fmt(m.get('supervised_tokens_per_s'), 1)} answer tokens/s"
    )
    if promote is None:
        promote = registry.current_name() is None
    if promote:
        registry.promote(version.name, by=f"train: {actor}")
        click.echo(f"  {version.name} is now current")
    else:
        click.echo(
            f"  not promoted; compare with `revbot eval --version {version.name}`, then "
            f"`revbot models promote {version.name}`"
        )


# --------------------------------------------------------------------------- eval


@click.command("eval", context_settings=CONTEXT)
@click.option(
    "--version",
    "model_spec",
    metavar="vN|current|latest|DIR",
    default=None,
    help="Model version to evaluate (default: current, else the latest).",
)
@click.option(
    "--data",
    metavar="FILE",
    default=None,
    help="Evaluate on these examples instead of the version's test split: an examples JSONL (all of "
    "it), a dataset file in --input-format, or the dataset store (its test split, re-made with the "
    "version's split settings).",
)
@click.option(
    "--input-format",
    "fmt",
    metavar="FORMAT",
    default=None,
    help="Format of --data when it is not an examples JSONL (crc, codereviewer, alpaca, sharegpt, openai).",
)
@click.option(
    "--db",
    "store",
    metavar="FILE",
    default=None,
    help="Dataset store whose feedback on the bot's own comments to summarise (default: --data if it is one).",
)
@models_dir_option
@click.option("--no-base", is_flag=True, help="Leave out the base model without the adapter.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate on the first N test examples only.")
@generation_options("batch_size")
@quantize_option("Model weights for the evaluation: 4bit or none. Default: 4bit on CUDA, none on a CPU.")
@click.option(
    "--anchors",
    type=click.Choice(["constrained", "free"]),
    default="constrained",
    show_default=True,
    help="constrained: the model's probabilities choose each comment's line, and the version's calibrated "
    "threshold whether to comment (as review does); free: the model writes its anchors.",
)
@click.option(
    "--exemplars",
    type=click.IntRange(0, 10),
    default=None,
    help="Past reviews shown to the tuned model per hunk (default: as many as it was trained with).",
)
@summary_format_option("the metrics")
def eval_cmd(
    model_spec,
    data,
    fmt,
    store,
    models_dir,
    no_base,
    limit,
    max_new_tokens,
    batch_size,
    quantize,
    anchors,
    exemplars,
    as_json,
):
    """Evaluate a model version against the base model, retrieval and most-frequent baselines.

    Prints a verdict line (what the tuned model beats each other system on, and loses on), then the
    metrics: review F1 (the right words on the right line: `revbot retrain`'s default gate), BLEU-4
    (CodeReviewer's evaluator, with and without stop words), ROUGE-L (rouge-score), exact match,
    placement precision/recall on hunks and lines, silence on hunks humans left alone, and the
    parse-failure rate; metrics these references cannot inform are marked. Then the gate's inputs.
    The Markdown report (with plots and 10 examples side by side) is saved in the version's eval/
    folder; on other data (--data that is not the store the version was trained from) in
    evals/DATASET-HASH/ instead, leaving the version's own numbers as they were.
    """
    from adapters.versions import is_own_dataset, other_eval_dir, record_other_evaluation
    from finetune.data import is_store
    from finetune.evaluate import evaluate, examples_for
    from finetune.results import gate_summary

    registry = _registry(models_dir)
    if model_spec is None:
        version = registry.current() or registry.latest()
        if version is None:
            raise UsageError(f"no model versions in {registry.root}; train one with `revbot train`")
    else:
        version = registry.resolve(model_spec)
    test_examples, train_examples = examples_for(version, data, fmt)
    if limit:
        test_examples = test_examples[:limit]
    feedback_store = store or (data if data and is_store(data) else None)
    # --- issue 20: an evaluation on other data is kept beside the version's own (adapters.versions) ---
    own = is_own_dataset(version, data)
    out_dir = "auto" if own else other_eval_dir(version, data)
    report = evaluate(
        version,
        test_examples,
        train_examples,
        base=None if no_base else "auto",
        quantize=quantize,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        out_dir=out_dir,
        store=feedback_store,
        progress=not quiet(),
        anchors=anchors,
        exemplars=exemplars,
    )
    if not own:
        record_other_evaluation(out_dir, data, fmt, report.created_at)
    # --- end issue 20 ---
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
        return
    click.echo(report.table())
    click.echo("\n" + gate_summary(report))
    if report.out_dir is not None:
        click.echo(f"report: {report.out_dir / 'report.md'}")
        if (report.out_dir / "pr_curve.png").is_file():
            click.echo(f"precision-recall against the threshold: {report.out_dir / 'pr_curve.png'}")


# --------------------------------------------------------------------------- score

SCORE_EPILOG = """\b
Example (CodeReviewer's test set, or any tool's output, one comment per line):
  revbot score predictions.txt references.txt
  revbot score predictions.txt references.txt --format json
"""


@click.command("score", context_settings=CONTEXT, epilog=SCORE_EPILOG)
@click.argument("predictions", metavar="PRED", type=click.Path(dir_okay=False))
@click.argument("references", metavar="REF", type=click.Path(dir_okay=False))
@summary_format_option("the scores")
def score(predictions, references, as_json):
    """Score line-aligned predictions against references.

    Line N of PRED is scored against line N of REF. Prints BLEU-4 computed exactly like the
    CodeReviewer evaluator (bleu_fromstr) with stop words removed (the number the CodeReviewer paper
    reports) and kept, ROUGE-L (rouge-score's rougeL F-measure) and exact match, all × 100.
    """
    from finetune.score import score_files

    result = score_files(predictions, references)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    rows = [
        ("pairs", str(result["pairs"]), f"{predictions} vs {references}"),
        ("BLEU-4, stop words removed", _fmt(result["bleu4_no_stop"], 2), "CodeReviewer bleu_fromstr(rmstop=True)"),
        ("BLEU-4", _fmt(result["bleu4"], 2), "CodeReviewer bleu_fromstr(rmstop=False)"),
        ("ROUGE-L", _fmt(result["rouge_l"], 2), "rouge-score rougeL F-measure x 100"),
        ("exact match %", _fmt(result["exact_match"], 2), "same words and punctuation, case ignored"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for name, value, note in rows:
        click.echo(f"{name.ljust(widths[0])}  {value.rjust(widths[1])}  {note}")


# --------------------------------------------------------------------------- models


@click.group("models", context_settings=CONTEXT)
def models():
    """List, promote and roll back model versions (the `current` pointer review and the service use)."""


def _summary_metrics(meta: dict[str, Any]) -> tuple[str, str, str, str]:
    """val loss, test loss, review F1 and BLEU-4 -stop (each next to the retrieval baseline's)."""
    metrics = meta.get("metrics") or {}
    evaluation = (meta.get("evaluation") or {}).get("metrics") or {}
    tuned = evaluation.get("tuned") or {}
    retrieval = evaluation.get("retrieval") or {}

    def pair(key: str, digits: int) -> str:
        if not tuned:
            return "–"
        return f"{_fmt(tuned.get(key), digits)} (retr. {_fmt(retrieval.get(key), digits)})"

    return _fmt(metrics.get("val_loss")), _fmt(metrics.get("test_loss")), pair("review_f1", 3), pair("bleu4_no_stop", 2)


@models.command("list", context_settings=CONTEXT)
@models_dir_option
@summary_format_option("the versions")
def models_list(models_dir, as_json):
    """Show every version, which one is current, its metrics, and the promotion decisions."""
    registry = _registry(models_dir)
    versions = registry.list()
    current = registry.current_name()
    decisions = registry.decisions()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "models_dir": str(registry.root),
                    "current": current,
                    "history": registry.history(),
                    "versions": [
                        {
                            "name": v.name,
                            "path": str(v.path),
                            "created_at": v.created_at,
                            "base_model": v.base_model,
                            "metrics": v.metrics,
                            "evaluation": v.meta.get("evaluation"),
                        }
                        for v in versions
                    ],
                    "decisions": decisions,
                },
                indent=2,
                sort_keys=True,
            )
        )
        return
    if not versions:
        click.echo(f"no model versions in {registry.root} yet; train one with `revbot train`")
        return
    rows = [("", "version", "created", "base model", "val loss", "test loss", "review F1", "BLEU-4 -stop")]
    for v in versions:
        val, test, f1, bleu = _summary_metrics(v.meta)
        base = v.base_model or "?"
        base = Path(base).name if os.path.isabs(base) else base  # a local path: its folder name; a hub id as is
        rows.append(("*" if v.name == current else "", v.name, v.created_at, base, val, test, f1, bleu))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    click.echo(f"\ncurrent: {current or '(none: promote one with `revbot models promote vN`)'}")
    incoming = registry.incoming()
    if incoming:
        click.echo(f"unfinished runs (never used as versions): {', '.join(p.name for p in incoming)}")
    if decisions:
        click.echo("\ndecisions:")
        for d in decisions[-10:]:
            verdict = "promoted" if d.get("promoted") else "kept " + str(d.get("incumbent"))
            click.echo(
                f"  {d.get('at')}  {d.get('candidate')} vs {d.get('incumbent')} on {d.get('metric')}: "
                f"{verdict} ({d.get('reason')})"
            )


@models.command("promote", context_settings=CONTEXT)
@click.argument("name", metavar="vN")
@models_dir_option
@actor_option
def models_promote(name, models_dir, actor):
    """Make version vN current (atomically); review and the service pick it up."""
    registry = _registry(models_dir)
    previous = registry.current_name()
    version = registry.promote(name, by=f"cli: {actor}")
    click.echo(
        f"{version.name} is now current" + (f" (was {previous})" if previous and previous != version.name else "")
    )


@models.command("rollback", context_settings=CONTEXT)
@models_dir_option
@actor_option
def models_rollback(models_dir, actor):
    """Make the previously promoted version current again."""
    registry = _registry(models_dir)
    previous = registry.current_name()
    version = registry.rollback(by=f"cli: {actor}")
    click.echo(f"rolled back from {previous} to {version.name}")


# --------------------------------------------------------------------------- export

EXPORT_EPILOG = """\b
Serve the merged model with Ollama:
  cd DIR && ollama create revbot -f Modelfile
Or serve the adapter itself with vLLM (no merge needed):
  vllm serve BASE_MODEL --enable-lora --lora-modules revbot=models/vN --max-lora-rank 16
  revbot review x.diff --backend openai --base-url http://127.0.0.1:8000/v1 --api-model revbot
"""


@click.command("export", context_settings=CONTEXT, epilog=EXPORT_EPILOG)
@click.argument("name", metavar="vN")
@click.option(
    "--merged",
    "merged_dir",
    metavar="DIR",
    required=True,
    help="Write the base model with the adapter merged in (16-bit, Hugging Face layout) and an Ollama Modelfile here.",
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float16", "bfloat16"]),
    default="auto",
    show_default=True,
    help="16-bit type of the merged weights (auto: bfloat16 where the base or GPU uses it, else float16).",
)
@click.option(
    "--model",
    "base_model",
    metavar="ID_OR_PATH",
    default=None,
    help="Where the recorded base model is now, if it moved (it must be the same model).",
)
@click.option("--force", is_flag=True, help="Replace DIR if it is not empty.")
@models_dir_option
def export(name, merged_dir, dtype, base_model, force, models_dir):
    """Merge version vN's adapter into its base model for serving without peft."""
    from finetune.export import export_merged

    registry = _registry(models_dir)
    out = export_merged(registry.resolve(name), merged_dir, dtype=dtype, base_model=base_model, force=force)
    click.echo(f"merged {name} into {out} (Modelfile included: `ollama create revbot -f {out / 'Modelfile'}`)")
