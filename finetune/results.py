"""What an evaluation found, as plain data, and its one-screen summary (verdict line and table).

``finetune.evaluate`` produces an ``EvalReport``; ``finetune.report`` writes it to disk; the CLI,
``revbot retrain``, the demo and the benchmarks read it. This module imports neither of them, so the
three depend one way: evaluate -> report -> results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adapters.versions import now_iso
from bot.examples import Example
from bot.prompt import PromptComment
from finetune.gate import DEFAULT_GATE_METRIC
from finetune.metrics import METRIC_INFO, format_metric

TUNED, BASE, RETRIEVAL, MOST_FREQUENT = "tuned", "base", "retrieval", "most-frequent"
BASE_RETRIEVAL = "base + retrieval"  # the untuned model with the same exemplars as few-shot turns
# columns of the table, in order: the gate metric first, then text, placement, format
TABLE_METRICS = (
    "review_f1",
    "bleu4",
    "bleu4_no_stop",
    "rouge_l",
    "exact_match",
    "hunk_precision",
    "hunk_recall",
    "line_precision",
    "line_recall",
    "silence_on_negatives",
    "parse_failure_rate",
)
UNINFORMATIVE_MARK = "†"


@dataclass
class Prediction:
    """One system's answer for one example."""

    example_id: str
    comments: list[PromptComment]  # parsed and anchored inside the hunk
    text: str = ""  # the raw answer (models) or the rendered comments (baselines)
    failed: bool = False  # the answer could not be parsed at all
    stray: list[PromptComment] = field(default_factory=list)  # well-formed, but on lines outside the hunk
    truncated: bool = False  # the model hit max_new_tokens
    confidences: list[float] = field(default_factory=list)  # the model's, per comment (constrained anchors)

    @property
    def invalid_anchors(self) -> int:
        return len(self.stray)

    @property
    def body(self) -> str:
        """Every comment's text, placed or not: text metrics judge the words, placement the lines."""
        return "\n".join(c.body for c in [*self.comments, *self.stray])


@dataclass
class SystemResult:
    name: str
    description: str
    metrics: dict[str, float | None]
    predictions: list[Prediction]
    seconds: float


@dataclass
class EvalReport:
    """Metrics of every system on the same examples, plus what was left out and why.

    ``uninformative`` names the metrics these references cannot separate systems on (with the
    reason); ``val_loss`` is the evaluated version's own validation loss from training, the third
    input of the promotion gate; ``generation`` the settings every model answered with."""

    model: str
    base_model: str | None
    examples: list[Example]
    systems: list[SystemResult]
    dropped: dict[str, int] = field(default_factory=dict)
    feedback: dict[str, Any] | None = None
    created_at: str = field(default_factory=now_iso)
    out_dir: Path | None = None
    uninformative: dict[str, str] = field(default_factory=dict)
    val_loss: float | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    too_long: dict[str, int] = field(default_factory=dict)  # system -> prompts answered as silence
    exemplars_trimmed: dict[str, int] = field(default_factory=dict)  # system -> prompts shown fewer exemplars
    threshold: dict[str, Any] | None = None  # the tuned model's comment threshold and its test curve

    def get(self, name: str) -> SystemResult | None:
        return next((s for s in self.systems if s.name == name), None)

    def system(self, name: str) -> SystemResult:
        found = self.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def metric(self, system: str, name: str) -> float | None:
        return self.system(system).metrics.get(name)

    @property
    def counts(self) -> dict[str, int]:
        negatives = sum(1 for e in self.examples if e.is_negative)
        return {"examples": len(self.examples), "positive": len(self.examples) - negatives, "negative": negatives}

    def to_dict(self, predictions: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "base_model": self.base_model,
            "created_at": self.created_at,
            "verdict": verdict(self),
            "counts": self.counts,
            "dropped": self.dropped,
            "feedback": self.feedback,
            "uninformative": self.uninformative,
            "val_loss": self.val_loss,
            "generation": self.generation,
            "too_long": self.too_long,
            "exemplars_trimmed": self.exemplars_trimmed,
            "threshold": self.threshold,
            "systems": {
                s.name: {"description": s.description, "metrics": s.metrics, "seconds": round(s.seconds, 3)}
                for s in self.systems
            },
        }
        if predictions:
            for s in self.systems:
                out["systems"][s.name]["predictions"] = [
                    {
                        "id": p.example_id,
                        "comments": [asdict(c) for c in p.comments],
                        "text": p.text,
                        "failed": p.failed,
                        "stray": [asdict(c) for c in p.stray],
                        "truncated": p.truncated,
                        "confidences": p.confidences,
                    }
                    for p in s.predictions
                ]
        return out

    def table(self) -> str:
        return text_table(self)


# --------------------------------------------------------------------------- the verdict


def compare(report: EvalReport, winner: str, loser: str) -> list[str]:
    """Metrics on which ``winner`` does better than ``loser``, as printed (a difference the table
    cannot show is a tie). Skips metrics without a direction, missing values, and metrics marked
    uninformative for these references."""
    a, b = report.get(winner), report.get(loser)
    if a is None or b is None:
        return []
    out = []
    for name, info in METRIC_INFO.items():
        if not info.in_verdict or info.higher_is_better is None or name in report.uninformative:
            continue
        x, y = a.metrics.get(name), b.metrics.get(name)
        if x is None or y is None:
            continue
        x, y = float(format_metric(name, x)), float(format_metric(name, y))
        if (x > y) if info.higher_is_better else (x < y):
            out.append(name)
    return out


def verdict(report: EvalReport) -> str:
    """One line that answers "is the tuned model worth serving": against each other system, what it
    wins on and what it loses on."""
    if report.get(TUNED) is None:
        return "verdict: no tuned model in this evaluation"

    def labels(names: list[str]) -> str:
        return ", ".join(METRIC_INFO[n].label for n in names)

    parts = []
    for other in [s.name for s in report.systems if s.name != TUNED]:
        wins, losses = compare(report, TUNED, other), compare(report, other, TUNED)
        if wins:
            parts.append(f"{TUNED} beats {other} on {labels(wins)}")
        if losses:
            parts.append(f"{other} beats {TUNED} on {labels(losses)}")
        if not wins and not losses:
            parts.append(f"{TUNED} and {other} tie")
    if report.get(BASE) is None:
        parts.append("base model not evaluated")
    return "verdict: " + "; ".join(parts)


def gate_summary(report: EvalReport, metric: str = DEFAULT_GATE_METRIC) -> str:
    """The tuned model's three inputs to `revbot retrain`'s promotion gate, as this evaluation measured them."""
    tuned = report.get(TUNED)
    if tuned is None:
        return "gate inputs: no tuned model in this evaluation"
    loss = "–" if report.val_loss is None else f"{report.val_loss:.4f}"
    settings = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.generation.items())
    return (
        f"gate inputs ({report.model}): {metric} {format_metric(metric, tuned.metrics.get(metric))}, parse failures "
        f"{format_metric('parse_failure_rate', tuned.metrics.get('parse_failure_rate'))}, validation loss {loss}"
        + (f" (generation: {settings})" if settings else "")
    )


# --------------------------------------------------------------------------- the table


def column_label(name: str, report: EvalReport) -> str:
    label = METRIC_INFO[name].label
    return label + UNINFORMATIVE_MARK if name in report.uninformative else label


def uninformative_notes(report: EvalReport) -> list[str]:
    """One line per reason: which columns it marks, and why."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in report.uninformative.items():
        if name in TABLE_METRICS:
            by_reason.setdefault(reason, []).append(METRIC_INFO[name].label)
    return [
        f"{UNINFORMATIVE_MARK} uninformative here ({', '.join(labels)}): {reason}"
        for reason, labels in by_reason.items()
    ]


def table_rows(report: EvalReport, metrics: Sequence[str] = TABLE_METRICS) -> list[list[str]]:
    """Header and one row per system, every cell already formatted."""
    header = ["system"] + [column_label(k, report) for k in metrics]
    return [header] + [[s.name] + [format_metric(k, s.metrics.get(k)) for k in metrics] for s in report.systems]


def text_table(report: EvalReport) -> str:
    """The verdict, the counts, the metrics as a fixed-width table (systems as rows), and what the
    marks mean."""
    rows = table_rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts = report.counts
    note = (
        f"{counts['examples']} test hunks ({counts['positive']} commented by humans, {counts['negative']} left alone)"
    )
    if report.dropped:
        note += "; dropped: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.dropped.items())
    if report.too_long:
        note += "; too long for the model (answered as silence): " + ", ".join(
            f"{k} {v}" for k, v in report.too_long.items()
        )
    if report.exemplars_trimmed:
        note += "; shown fewer exemplars to fit: " + ", ".join(f"{k} {v}" for k, v in report.exemplars_trimmed.items())
    extra = [*uninformative_notes(report), *threshold_lines(report), *acceptance_lines(report)]
    return "\n".join([verdict(report), note, *lines, *extra])


def threshold_lines(report: EvalReport) -> list[str]:
    """The tuned model's comment threshold: how it was chosen, and what it gives on this test set."""
    t = report.threshold
    if not t:
        return []
    if t.get("threshold") is None:
        return [
            f"comment threshold: none calibrated ({t.get('reason') or 'the version records no calibration'}); "
            "the model's own choice (a comment where commenting outweighs silence)"
        ]
    line = f"comment threshold {t['threshold']:.4g} ({t.get('rule') or 'calibrated'} on validation)"
    point = t.get("test_point")
    if point:
        line += (
            f"; on these hunks: line precision {point['precision']:.3f}, recall {point['recall']:.3f}, "
            f"F1 {point['f1']:.3f}"
        )
    tuned = report.get(TUNED)
    if tuned is not None and tuned.metrics.get("review_f1") is not None:
        line += f"; review F1 {format_metric('review_f1', tuned.metrics['review_f1'])}"
    return [line]


def acceptance_lines(report: EvalReport) -> list[str]:
    """How the team received each model version's posted comments (from the store's feedback),
    one line per version: comments judged, accepted, rejected, acceptance rate."""
    by_version = (report.feedback or {}).get("by_version") or {}
    if not by_version:
        return []
    out = ["", "acceptance of posted comments by the team (reactions, replies, resolved threads):"]
    for name, v in sorted(by_version.items(), key=lambda kv: version_order(kv[0])):
        out.append(
            f"  {name}: {100 * v['acceptance_rate']:.0f}% accepted ({v['accepted']} of {v['judged']} judged, "
            f"{v['rejected']} rejected)"
        )
    return out


def version_order(name: str) -> tuple[int, int, str]:
    """v2 before v10; "unknown" last."""
    digits = name[1:] if name[:1] == "v" else ""
    return (1 if name == "unknown" else 0, int(digits) if digits.isdigit() else 10**9, name)
