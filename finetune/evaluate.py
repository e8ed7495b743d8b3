"""Honest evaluation: the tuned model next to the base model without its adapter and two cheap
baselines, on the same held-out hunks, with the same metrics.

Every system answers every test hunk; model answers go through bot.prompt.parse_output exactly as in
review, so a format the parser cannot read counts as a parse failure, and a comment anchored outside
the hunk is not counted as placed. Test hunks that do not fit the model's context (prompt plus
``max_new_tokens``) are dropped for all systems alike and reported; so are test examples that also
appear in the training split.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.versions import ModelRegistry, ModelVersion
from bot.anchoring import AnchorScores, analyse_hunks, can_score, human_anchors, pr_curve
from bot.config import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS
from bot.errors import DataError, ModelError, UsageError
from bot.examples import Example
from bot.exemplars import DEFAULT_K
from bot.prompt import PromptInput, parse_output, render_answer, with_exemplars
from finetune.baselines import MostFrequentBaseline, RetrievalBaseline
from finetune.gate import GATE_METRICS, Evidence
from finetune.metrics import (
    METRIC_INFO,
    Placement,
    placement_metrics,
    review_scores,
    text_metrics,
    uninformative_metrics,
)
from finetune.report import write_report
from finetune.results import (
    BASE,
    BASE_RETRIEVAL,
    MOST_FREQUENT,
    RETRIEVAL,
    TUNED,
    EvalReport,
    Prediction,
    SystemResult,
)
from finetune.retrieval import build_index, exemplars_for, fit_to_context

log = logging.getLogger(__name__)

__all__ = [
    "EvalReport",
    "Prediction",
    "SystemResult",
    "TUNED",
    "BASE",
    "BASE_RETRIEVAL",
    "RETRIEVAL",
    "MOST_FREQUENT",
    "evaluate",
    "examples_for",
    "score",
    "store_feedback",
    "answer_loss",
    "metric_value",
    "gate_evidence",
]

EVAL_DIR = "eval"
METRIC_NAMES = tuple(METRIC_INFO)


# --------------------------------------------------------------------------- scoring


def score(examples: Sequence[Example], predictions: Sequence[Prediction]) -> dict[str, float | None]:
    """All metrics of one system. Text metrics over the examples humans commented on; placement
    over all; rates over all answers."""
    by_id = {p.example_id: p for p in predictions}
    preds = [by_id[e.id] for e in examples]
    positives = [(e, p) for e, p in zip(examples, preds) if not e.is_negative]
    metrics: dict[str, float | None] = dict(
        text_metrics([p.body for _, p in positives], ["\n".join(c.body for c in e.comments) for e, _ in positives])
    )
    metrics.update(
        placement_metrics(
            [
                Placement(
                    frozenset((c.line, c.side) for c in p.comments), frozenset((c.line, c.side) for c in e.comments)
                )
                for e, p in zip(examples, preds)
            ]
        )
    )
    metrics.update(review_scores(examples, preds))
    n = len(preds)
    written = sum(len(p.comments) + p.invalid_anchors for p in preds)
    metrics["parse_failure_rate"] = sum(p.failed for p in preds) / n if n else None
    metrics["invalid_anchor_rate"] = sum(p.invalid_anchors for p in preds) / written if written else None
    metrics["comments_per_hunk"] = sum(len(p.comments) for p in preds) / n if n else None
    metrics["truncated_rate"] = sum(p.truncated for p in preds) / n if n else None
    return metrics


def model_predictions(
    backend: Any,
    examples: Sequence[Example],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress: bool,
    label: str,
    inputs: Sequence[PromptInput] | None = None,
    variants: dict[str, float | None] | None = None,
    free: str | None = None,
) -> tuple[dict[str, list[Prediction]], list[AnchorScores]]:
    """Answer every example (``inputs``: its prompts, default: without exemplars) and parse each
    answer against its hunk, as systems named by the caller: ``variants`` (name -> threshold, None
    for the model's own choice) with anchors chosen by the model's probabilities (``bot.anchoring``),
    and ``free`` (a name) with the anchors the model writes itself. All from one pass over each
    prompt where the backend can; a backend that cannot score answers every name freely. Returns the
    predictions by name and, for constrained anchors, each hunk's scores."""
    inputs = list(inputs) if inputs is not None else [e.prompt_input() for e in examples]
    variants = dict(variants or {})
    use_scores = bool(variants) and can_score(backend) and backend.prompt_format_version >= 3
    names = [*variants, *([free] if free else [])]
    out: dict[str, list[Prediction]] = {name: [] for name in names}
    scores: list[AnchorScores] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(examples), desc=f"eval {label}", unit="hunk", dynamic_ncols=True)
    try:
        for start in range(0, len(examples), batch_size):
            chunk, prompts = examples[start : start + batch_size], list(inputs[start : start + batch_size])
            if not use_scores:
                preds = _free_predictions(backend, chunk, prompts, max_new_tokens)
                for name in names:
                    out[name] += preds
            else:
                analysed = analyse_hunks(
                    backend,
                    prompts,
                    [e.parsed_hunk() for e in chunk],
                    variants,
                    max_new_tokens=max_new_tokens,
                    free=free is not None,
                )
                scores += analysed.scores
                for name, answers in analysed.variants.items():
                    out[name] += [
                        Prediction(e.id, list(a.comments), a.text, False, [], a.truncated, list(a.confidences))
                        for e, a in zip(chunk, answers)
                    ]
                if free:
                    out[free] += _parsed(chunk, analysed.free or [])
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return out, scores


def _parsed(chunk: Sequence[Example], generations: Sequence[Any]) -> list[Prediction]:
    out = []
    for example, gen in zip(chunk, generations):
        parsed = parse_output(gen.text, example.parsed_hunk())
        out.append(
            Prediction(
                example.id,
                list(parsed.comments),
                gen.text,
                parsed.failed,
                list(parsed.invalid_anchors),
                gen.finish_reason == "length",
            )
        )
    return out


def _free_predictions(
    backend: Any, chunk: Sequence[Example], prompts: Sequence[PromptInput], max_new_tokens: int
) -> list[Prediction]:
    return _parsed(chunk, backend.generate(list(prompts), max_new_tokens=max_new_tokens))


def baseline_predictions(baseline: Any, examples: Sequence[Example]) -> list[Prediction]:
    out = []
    for example in examples:
        comments = baseline.predict(example)
        hunk = example.parsed_hunk()
        valid = [c for c in comments if hunk.is_commentable(c.line, c.side)]
        stray = [c for c in comments if not hunk.is_commentable(c.line, c.side)]
        out.append(Prediction(example.id, valid, render_answer(comments, hunk), False, stray))
    return out


# --------------------------------------------------------------------------- store feedback


POSITIVE_REACTIONS = ("+1", "heart", "hooray", "rocket")
NEGATIVE_REACTIONS = ("-1", "confused")


def store_feedback(store_path: str | Path) -> dict[str, Any] | None:
    """How people received the bot's own posted comments, from the store's feedback rows: the share
    of those comments that were liked (a positive reaction), disliked (-1 or confused) and answered
    (a reply), and ``by_version``: per model version, the comments the team's evidence judged
    (reactions, replies, resolutions: ``bot.feedback``), how many were accepted and the acceptance
    rate. None when the store has no feedback yet."""
    from adapters.store import Store
    from bot.feedback import acceptance_by_version, derive_evidence

    if not Path(store_path).is_file():
        raise DataError("no such dataset store (for the bot's feedback)", str(store_path))
    store = Store(store_path)
    try:
        per_comment: dict[int, dict[str, bool]] = defaultdict(
            lambda: {"liked": False, "disliked": False, "answered": False}
        )
        for row in store.iter_feedback():
            state = per_comment[row.comment_id]
            if row.kind == "reactions":
                counts = row.counts()
                state["liked"] |= any(int(counts.get(k, 0) or 0) > 0 for k in POSITIVE_REACTIONS)
                state["disliked"] |= any(int(counts.get(k, 0) or 0) > 0 for k in NEGATIVE_REACTIONS)
            elif row.kind == "reaction":
                state["liked"] |= row.content in POSITIVE_REACTIONS
                state["disliked"] |= row.content in NEGATIVE_REACTIONS
            elif row.kind == "reply":
                state["answered"] = True
        by_version = acceptance_by_version(derive_evidence(store))  # read only: `revbot eval` writes nothing
    finally:
        store.close()
    n = len(per_comment)
    if not n:
        return None
    return {
        "comments": n,
        **{f"{k}_share": sum(1 for s in per_comment.values() if s[k]) / n for k in ("liked", "disliked", "answered")},
        "by_version": by_version,
    }


# --------------------------------------------------------------------------- the run


def _load_tuned(spec: Any, quantize: str | None, batch_size: int) -> tuple[Any, ModelVersion | None, str]:
    from adapters.model import Backend, BackendOptions, load_backend

    if isinstance(spec, Backend):
        return spec, None, getattr(spec, "name", "model")
    version = spec if isinstance(spec, ModelVersion) else ModelRegistry().resolve(str(spec))
    backend = load_backend(BackendOptions(adapter=str(version.path), quantize=quantize, batch_size=batch_size))
    return backend, version, version.name


def _load_base(
    version: ModelVersion | None, base: Any, quantize: str | None, batch_size: int
) -> tuple[Any, str | None]:
    """(the base model without the adapter, its name); (None, name) when it is left out."""
    base_model = version.base_model if version else None
    if base == "auto" and base_model:
        from adapters.model import BackendOptions, load_backend

        try:
            return load_backend(BackendOptions(base_model, quantize=quantize, batch_size=batch_size)), base_model
        except ModelError as exc:
            log.warning("base model left out of the evaluation: %s", exc)
            return None, base_model
    if base not in (None, "auto"):
        return base, base_model or getattr(base, "name", None)
    return None, base_model


def _exemplar_source(tuned: Any, train: Sequence[Example], k: int | None) -> tuple[Any, int, int]:
    """(index, k for the tuned model, k for base + retrieval). The tuned model reads its version's
    index with the k it was trained with (``k`` overrides it); a model without an index gets none,
    and the base model then gets DEFAULT_K exemplars from an index of ``train``."""
    index = getattr(tuned, "exemplars", None)
    own_k = int(getattr(tuned, "exemplar_k", 0) or 0)
    tuned_k = own_k if k is None else k
    if index is None:
        index, tuned_k = build_index(train), (0 if k is None else k)
    return index, tuned_k, tuned_k or own_k or DEFAULT_K


@dataclass
class _Run:
    """One evaluation's shared inputs: every model system answers the same examples with the same
    generation settings."""

    examples: list[Example]
    shown: dict[str, Any]
    max_new_tokens: int
    batch_size: int
    progress: bool
    anchors: str
    systems: list[SystemResult] = field(default_factory=list)
    too_long: dict[str, int] = field(default_factory=dict)
    exemplars_trimmed: dict[str, int] = field(default_factory=dict)

    def model(
        self,
        backend: Any,
        descriptions: dict[str, str],
        *,
        k: int,
        variants: dict[str, float | None] | None = None,
        free: str | None = None,
    ) -> tuple[list[AnchorScores], list[Example]]:
        """Answer with ``backend`` as the systems named in ``descriptions`` (``variants``: constrained
        anchors under each threshold, when ``anchors`` is "constrained"; ``free``: the model's own
        anchors). A prompt too long with its exemplars loses the least similar ones until it fits
        (``fit_to_context``, counted in ``exemplars_trimmed``); one that does not fit without any is
        answered with silence and counted (``too_long``), never stopping the run. Returns the scores
        and the examples they are for."""
        t0 = time.perf_counter()
        if self.anchors == "free":
            free, variants = free or next(iter(variants or {}), None), None
        fitted = fit_to_context(
            backend,
            [with_exemplars(e.prompt_input(), self.shown.get(e.id, ())[:k]) for e in self.examples],
            self.max_new_tokens,
        )
        inputs, fits = [f.prompt for f in fitted], [f.fits for f in fitted]
        first = next(iter(descriptions))
        trimmed = sum(1 for f in fitted if f.fits and f.dropped)
        if trimmed:
            self.exemplars_trimmed[first] = trimmed
            log.info("%s: %d test prompts shown fewer exemplars to fit the model", first, trimmed)
        if not all(fits):
            self.too_long[first] = fits.count(False)
            log.warning("%s: %d test prompts are too long for the model; answered as silence", first, fits.count(False))
        kept = [e for e, ok in zip(self.examples, fits) if ok]
        by_name, scores = model_predictions(
            backend,
            kept,
            inputs=[i for i, ok in zip(inputs, fits) if ok],
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            progress=self.progress,
            label=first,
            variants=variants,
            free=free,
        )
        seconds = time.perf_counter() - t0
        for name, preds in by_name.items():
            answered = {p.example_id: p for p in preds}
            full = [answered.get(e.id) or Prediction(e.id, [], "") for e in self.examples]
            metrics = score(self.examples, full)
            self.systems.append(SystemResult(name, descriptions.get(name, name), metrics, full, seconds))
        return scores, kept

    def baselines(self, train: Sequence[Example]) -> None:
        for baseline in (RetrievalBaseline(train), MostFrequentBaseline(train)):
            t0 = time.perf_counter()
            preds = baseline_predictions(baseline, self.examples)
            self.systems.append(
                SystemResult(
                    baseline.name,
                    baseline.description,
                    score(self.examples, preds),
                    preds,
                    time.perf_counter() - t0,
                )
            )


def _usable(
    test: list[Example], train: list[Example], tuned: Any, max_new_tokens: int
) -> tuple[list[Example], dict[str, int]]:
    """Test examples that may be scored: not in training, and whose bare prompt fits the tuned model
    (one too long only with its exemplars is scored with fewer: ``fit_to_context``)."""
    if not test:
        raise DataError("no test examples to evaluate on")
    if not train:
        raise DataError("no training examples: the retrieval and most-frequent baselines need them")
    dropped: dict[str, int] = {}
    train_ids = {e.id for e in train}
    leaked = [e for e in test if e.id in train_ids]
    if leaked:
        dropped["also_in_training"] = len(leaked)
        test = [e for e in test if e.id not in train_ids]
    limit = getattr(tuned, "max_context", None)
    if limit:
        fits = [e for e in test if tuned.count_prompt_tokens(e.prompt_input()) + max_new_tokens <= limit]
        if len(fits) < len(test):
            dropped["too_long"] = len(test) - len(fits)
        test = fits
    if not test:
        raise DataError(f"no test example is left to evaluate on (dropped: {dropped})")
    return test, dropped


def evaluate(
    version_or_backend: Any,
    test_examples: Sequence[Example],
    train_examples: Sequence[Example],
    *,
    base: Any = "auto",
    quantize: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    out_dir: str | Path | None = "auto",
    store: str | Path | None = None,
    progress: bool = True,
    anchors: str = "constrained",
    exemplars: int | None = None,
) -> EvalReport:
    """Evaluate a version (ModelVersion, "vN", "current", a path) or a ready Backend on
    ``test_examples`` against the base model (alone, and with the same exemplars as few-shot turns:
    "base + retrieval") and the retrieval and most-frequent baselines built from ``train_examples``.

    base: "auto" loads the version's base model without its adapter; a Backend is used as is; None
    leaves the base model out. out_dir: "auto" writes the report into the version's ``eval/``
    directory and its metrics into revbot.json (nothing for a bare Backend); a path writes the report
    there and leaves revbot.json alone; None writes nothing. ``store``: a dataset store whose
    bot-feedback rows are summarised in the report. ``anchors``: "constrained" (the model's
    probabilities choose anchors, and the tuned model's calibrated threshold silence) or "free";
    ``exemplars``: how many the tuned model is shown (default: as many as it was trained with)."""
    train_examples = list(train_examples)
    tuned, version, label = _load_tuned(version_or_backend, quantize, batch_size)
    test_examples, dropped = _usable(list(test_examples), train_examples, tuned, max_new_tokens)
    index, tuned_k, base_k = _exemplar_source(tuned, train_examples, exemplars)
    shown = exemplars_for(index, test_examples, max(tuned_k, base_k), context=train_examples)
    run = _Run(test_examples, shown, max_new_tokens, batch_size, progress, anchors)
    threshold = getattr(tuned, "threshold", None)
    scores, scored = run.model(
        tuned, {TUNED: f"{label} (adapter)" if version else label}, k=tuned_k, variants={TUNED: threshold}
    )
    del tuned
    base_backend, base_model = _load_base(version, base, quantize, batch_size)
    if base_backend is not None:
        name = Path(base_model).name if base_model else "base"
        run.model(base_backend, {BASE: f"{name} without the adapter"}, k=0, variants={BASE: None})
        run.model(
            base_backend,
            {BASE_RETRIEVAL: f"{name} with {base_k} retrieved past reviews as few-shot turns"},
            k=base_k,
            variants={BASE_RETRIEVAL: None},
        )
        del base_backend
    run.baselines(train_examples)
    report = EvalReport(
        label,
        base_model,
        test_examples,
        run.systems,
        dropped,
        store_feedback(store) if store else None,
        uninformative=uninformative_metrics(test_examples),
        val_loss=version.metrics.get("val_loss") if version is not None else None,
        generation={"max_new_tokens": max_new_tokens, "batch_size": batch_size, "anchors": anchors},
        too_long=run.too_long,
        exemplars_trimmed=run.exemplars_trimmed,
        threshold=threshold_summary(scores, scored, threshold, version),
    )
    _save(report, out_dir, version)
    return report


def threshold_summary(
    scores: Sequence[AnchorScores], examples: Sequence[Example], threshold: float | None, version: ModelVersion | None
) -> dict[str, Any] | None:
    """The tuned model's comment threshold (as calibrated on validation) and the test precision–recall
    curve against the threshold, with the chosen point; None without constrained scores."""
    if not scores:
        return None
    curve = pr_curve(scores, [human_anchors(e.comments) for e in examples])
    calibration = (version.meta.get("calibration") if version is not None else None) or {}
    at = min(curve, key=lambda p: abs(p.threshold - threshold)) if curve and threshold is not None else None
    return {
        "threshold": threshold,
        "rule": calibration.get("rule"),
        "reason": calibration.get("reason") or ("the version records no calibration" if threshold is None else None),
        "validation": {k: calibration.get(k) for k in ("precision", "recall", "f1")} if calibration else None,
        "test_point": vars(at) if at is not None else None,
        "curve": [vars(p) for p in curve],
    }


def _save(report: EvalReport, out_dir: str | Path | None, version: ModelVersion | None) -> None:
    target = None
    if out_dir == "auto":
        target = version.path / EVAL_DIR if version is not None else None
    elif out_dir is not None:
        target = Path(out_dir)
    if target is None:
        return
    report.out_dir = write_report(report, target)
    if out_dir != "auto" or version is None or version.number is None:  # its own numbers only (issue 20)
        return
    registry = ModelRegistry(version.path.parent)
    try:
        registry.update_meta(
            version.name,
            evaluation={
                "at": report.created_at,
                "counts": report.counts,
                "dropped": report.dropped,
                "too_long": report.too_long,
                "exemplars_trimmed": report.exemplars_trimmed,
                "generation": report.generation,
                "uninformative": report.uninformative,
                "threshold": {k: v for k, v in (report.threshold or {}).items() if k != "curve"} or None,
                "metrics": {s.name: s.metrics for s in report.systems},
            },
        )
    except ModelError as exc:  # a version outside a registry: the report is still written
        log.debug("could not record the evaluation in revbot.json: %s", exc)


def examples_for(
    version: ModelVersion, data: str | Path | None = None, fmt: str | None = None
) -> tuple[list[Example], list[Example]]:
    """(test, train) examples to evaluate ``version`` on.

    Without ``data``: the test split saved with the version, as it was held out at training time.
    With the dataset store: its test split re-made with the version's split settings (the store may
    have grown; new PRs are newer, so they land in the test split). With any other file: all of it
    (examples JSONL, or a dataset in ``fmt``, read by bot.datasets). The baselines learn from the version's
    saved training split, or from the store's training split when the version has none."""
    from adapters.files import read_examples
    from finetune.data import is_store, load_examples, split_examples

    def saved(name: str) -> list[Example] | None:
        path = version.path / "data" / f"{name}.jsonl"
        return list(read_examples(path)) if path.is_file() else None

    train, test = saved("train"), None
    if data is None:
        test = saved("test")
        if test is None:
            raise DataError(
                f"{version.name} has no saved test split; pass the examples to evaluate on (--data)",
                str(version.path / "data" / "test.jsonl"),
            )
    elif is_store(data) and not fmt:
        settings = {
            k: v
            for k, v in (version.meta.get("data", {}).get("split") or {}).items()
            if k in ("test_fraction", "val_fraction", "min_train", "min_val", "min_test")
        }
        seed = (version.meta.get("data", {}).get("split") or {}).get("seed", 0)
        splits = split_examples(load_examples(data), seed, **settings)
        test, train = splits.test, train if train is not None else splits.train
    else:
        test = load_examples(data, fmt)
    if train is None:
        raise DataError(
            f"{version.name} has no saved training split for the baselines; pass the dataset store as --data",
            str(version.path / "data" / "train.jsonl"),
        )
    return test, train


# --------------------------------------------------------------------------- what the gate reads


def metric_value(report: EvalReport, system: str, metric: str) -> float | None:
    """``metric`` of ``system`` in ``report``; a clear error for a name no evaluation computes."""
    if metric == "answer_loss":
        raise UsageError("answer_loss is measured on a model, not read from an evaluation report")
    if metric not in GATE_METRICS:
        raise UsageError(f"unknown metric {metric!r}; choose one of: {', '.join(GATE_METRICS)}")
    return report.metric(system, metric)


def gate_evidence(report: EvalReport, metric: str, name: str | None = None, measured: float | None = None) -> Evidence:
    """The tuned model's inputs to the promotion gate, read from its evaluation; ``measured`` is the
    value of a metric taken on the model itself rather than from its answers (answer_loss)."""
    value = measured if metric == "answer_loss" else metric_value(report, TUNED, metric)
    return Evidence(name or report.model, value, report.metric(TUNED, "parse_failure_rate"), report.val_loss)


def answer_loss(backend: Any, examples: Sequence[Example], batch_size: int = DEFAULT_BATCH_SIZE) -> float | None:
    """Mean cross-entropy per answer token of the humans' answers on ``examples``, tokenised exactly
    as training does (prompt-contract text, loss on the answer only). It moves with every bit of
    learning, even while greedy answers are still empty, so it separates a barely trained model from
    an untrained one; it says nothing about placement, which is why it is not the default gate."""
    import torch

    from finetune.data import IGNORE_INDEX, encode_example
    from finetune.loss import AnswerHead

    model, tokenizer = backend.model, backend.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [encode_example(e, tokenizer) for e in examples]
    total, count = 0.0, 0
    device = next(model.parameters()).device
    head = AnswerHead(model)  # the loss training computes, on the same tokens
    try:
        with torch.inference_mode():
            for start in range(0, len(encoded), batch_size):
                chunk = encoded[start : start + batch_size]
                width = max(len(e) for e in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, enc in enumerate(chunk):
                    ids[row, : len(enc)] = torch.tensor(enc.ids)
                    labels[row, : len(enc)] = torch.tensor(enc.labels())
                    mask[row, : len(enc)] = 1
                inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}
                loss_sum, n = head.loss_sum(model, inputs)
                total += loss_sum.item()
                count += n
    finally:
        head.remove()
    return total / count if count else None
