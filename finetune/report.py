"""The saved evaluation report: a Markdown file that opens with the verdict, the metrics table, what
the promotion gate reads, PNG plots, and ten examples side by side (hunk, human comment, model
comment, retrieval comment), written next to the model so a reviewer of a promotion can see what the
numbers mean.

It takes a plain ``finetune.results.EvalReport`` and never calls back into evaluation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.files import atomic_write_json
from finetune.gate import DEFAULT_GATE_METRIC, PARSE_FAILURE_TOLERANCE, VAL_LOSS_TOLERANCE
from finetune.metrics import METRIC_INFO, format_metric
from finetune.results import (
    RETRIEVAL,
    TUNED,
    UNINFORMATIVE_MARK,
    EvalReport,
    SystemResult,
    column_label,
    gate_summary,
    table_rows,
    threshold_lines,
    uninformative_notes,
    verdict,
    version_order,
)

SIDE_BY_SIDE = 10
# One plot per scale and direction: scores × 100, shares where higher is better, and shares where
# lower is better, so no bar reads "taller is better" when it is not.
PLOT_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("text_metrics.png", "Comment text, ×100 (higher is better)", ("bleu4", "bleu4_no_stop", "rouge_l", "exact_match")),
    (
        "placement.png",
        "Review F1 and placement, share (higher is better)",
        ("review_f1", "hunk_precision", "hunk_recall", "line_precision", "line_recall", "silence_on_negatives"),
    ),
    (
        "errors.png",
        "Format errors, share (lower is better)",
        ("parse_failure_rate", "invalid_anchor_rate", "truncated_rate"),
    ),
)
COLORS = ("#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363")
MISSING_LABEL = "n/a"


def _md_cell(text: str) -> str:
    text = (text or "").strip()
    if not text:
        return "*(silent)*"
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def markdown_table(report: EvalReport) -> str:
    header, *rows = table_rows(report)
    lines = ["| " + " | ".join(header) + " |", "|---|" + "|".join("---:" for _ in header[1:]) + "|"]
    lines += [f"| **{r[0]}** | " + " | ".join(r[1:]) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def draw_group(report: EvalReport, title: str, metrics: Sequence[str]) -> Any:
    """A grouped bar chart of ``metrics`` for every system, as a matplotlib Figure.

    Every bar carries its value; a missing value (nothing to measure) is a hatched outline labelled
    n/a, never a bar of height 0; the legend sits outside the axes; uninformative metrics are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(9, 4), dpi=100, layout="constrained")
    n = max(1, len(report.systems))
    width = 0.8 / n
    values = [s.metrics.get(k) for s in report.systems for k in metrics]
    top = max([v for v in values if v is not None] + [1.0 if not METRIC_INFO[metrics[0]].percent else 10.0])
    ghost = 0.15 * top  # height of the outline that stands for a missing value
    for i, system in enumerate(report.systems):
        color = COLORS[i % len(COLORS)]
        for j, key in enumerate(metrics):
            x = j + i * width
            value = system.metrics.get(key)
            if value is None:
                ax.bar(
                    x,
                    ghost,
                    width,
                    fill=False,
                    hatch="///",
                    edgecolor=color,
                    linestyle="--",
                    linewidth=0.8,
                    gid=f"missing:{system.name}:{key}",
                )
                ax.text(x, ghost, MISSING_LABEL, ha="center", va="bottom", fontsize=7, color=color)
            else:
                ax.bar(x, value, width, color=color, gid=f"value:{system.name}:{key}")
                ax.text(x, value, format_metric(key, value), ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_ylim(0, top * 1.3)
    ax.set_xticks([j + width * (n - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels([column_label(k, report) for k in metrics])
    for j, key in enumerate(metrics):
        if key in report.uninformative:
            ax.axvspan(j - width / 2 - 0.05, j + width * (n - 0.5) + 0.05, color="#dddddd", zorder=0)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    handles = [Patch(color=COLORS[i % len(COLORS)], label=s.name) for i, s in enumerate(report.systems)]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    notes = [f"hatched {MISSING_LABEL}: nothing to measure (not zero)"]
    if any(k in report.uninformative for k in metrics):
        notes.append(f"{UNINFORMATIVE_MARK} grey: uninformative on these references")
    fig.supxlabel("; ".join(notes), fontsize=7)
    return fig


def plot(report: EvalReport, out: Path) -> list[str]:
    import matplotlib.pyplot as plt

    written = []
    for filename, title, metrics in PLOT_GROUPS:
        fig = draw_group(report, title, metrics)
        fig.savefig(out / filename)
        plt.close(fig)
        written.append(filename)
    return written


# --------------------------------------------------------------------------- sections


def _anchored(comments: Sequence[Any]) -> str:
    return "\n".join(f"{'R' if c.side == 'RIGHT' else 'L'}{c.line}: {c.body}" for c in comments)


def side_by_side(report: EvalReport) -> list[str]:
    tuned = report.get(TUNED) or (report.systems[0] if report.systems else None)
    retrieval: SystemResult | None = report.get(RETRIEVAL)
    by_id = {p.example_id: p for p in tuned.predictions} if tuned else {}
    retrieved = {p.example_id: p for p in retrieval.predictions} if retrieval else {}
    positives = [e for e in report.examples if not e.is_negative]
    pool = positives if len(positives) >= SIDE_BY_SIDE else list(report.examples)
    chosen = sorted(random.Random(0).sample(pool, min(SIDE_BY_SIDE, len(pool))), key=lambda e: e.id)
    columns = ["human"] + ([tuned.name] if tuned else []) + ([retrieval.name] if retrieval else [])
    out = []
    for n, ex in enumerate(chosen, 1):
        cells = [_anchored(ex.comments)]
        if tuned:
            pred = by_id.get(ex.id)
            model = _anchored(pred.comments) if pred else ""
            if pred and pred.failed:
                model = "*(unparseable)* " + pred.text[:300]
            cells.append(model)
        if retrieval:
            ret = retrieved.get(ex.id)
            cells.append(_anchored(ret.comments) if ret else "")
        hunk = ex.hunk if len(ex.hunk) <= 2500 else ex.hunk[:2500] + "\n… (cut)"
        out += [
            f"### {n}. `{ex.path}` ({ex.repo}#{ex.pr})",
            "",
            "```diff",
            hunk.replace("```", "`\u200b``"),
            "```",
            "",
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
            "| " + " | ".join(_md_cell(c) for c in cells) + " |",
            "",
        ]
    return out


def gate_section(report: EvalReport) -> list[str]:
    """What `revbot retrain` reads from an evaluation like this one to decide a promotion."""
    if report.get(TUNED) is None:
        return []
    return [
        "## What the promotion gate reads",
        "",
        f"`revbot retrain` promotes a candidate over the current version only if its {DEFAULT_GATE_METRIC} (the "
        "default gate metric) is at least as good and not zero for both, its parse-failure rate is at most "
        f"{PARSE_FAILURE_TOLERANCE:g} higher, and its validation loss at most {100 * VAL_LOSS_TOLERANCE:g}% higher; "
        "both versions answer the same test hunks with the same generation settings.",
        "",
        gate_summary(report) + ".",
        "",
    ]


def markdown(report: EvalReport, plots: Sequence[str]) -> str:
    counts = report.counts
    lines = [
        f"# Evaluation of {report.model}",
        "",
        f"**{verdict(report)}**",
        "",
        f"- base model: `{report.base_model}`" if report.base_model else "- base model: (not evaluated)",
        f"- evaluated: {report.created_at}",
        f"- test hunks: {counts['examples']} ({counts['positive']} commented by humans, {counts['negative']} left alone)",
    ]
    if report.dropped:
        lines.append(
            "- dropped for every system: " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in report.dropped.items())
        )
    for what, by_system in (
        ("too long for the model (answered as silence)", report.too_long),
        ("shown fewer exemplars to fit the model", report.exemplars_trimmed),
    ):
        if by_system:
            lines.append(f"- {what}: " + ", ".join(f"{k}: {v}" for k, v in by_system.items()))
    lines += ["", "## Metrics", "", markdown_table(report), ""]
    lines += [f"{note}  " for note in uninformative_notes(report)]
    lines += [
        "",
        "*review F1* scores the right words on the right line: each model comment earns the ROUGE-L of its "
        "text against the human comment on the same line, each human comment the best such score among the "
        "model's comments there. BLEU-4 is CodeReviewer's evaluator (sentence-level, smoothed, mean ×100); "
        "*-stop* removes its stop words first (the number the CodeReviewer paper reports). ROUGE-L is "
        "rouge-score's rougeL F-measure ×100. Text metrics are over hunks humans commented on; placement is "
        "precision/recall of commenting on the hunks (and lines) humans commented on; *silent-neg* is the "
        "share of hunks humans left alone on which the system said nothing. A dash: nothing to measure.",
        "",
    ]
    for system in report.systems:
        lines.append(f"- **{system.name}**: {system.description} ({system.seconds:.1f}s)")
    lines.append("")
    lines += [f"{line}  " for line in threshold_lines(report)] + [""]
    lines += gate_section(report)
    for name in plots:
        lines += [f"![{name}]({name})", ""]
    if report.feedback:
        f = report.feedback
        lines += [
            "## Feedback on the bot's posted comments",
            "",
            f"{f['comments']} comments with feedback: liked {100 * f['liked_share']:.0f}%, disliked "
            f"{100 * f['disliked_share']:.0f}%, answered {100 * f['answered_share']:.0f}%.",
            "",
        ]
        by_version = f.get("by_version") or {}
        if by_version:
            lines += [
                "Acceptance by model version (a comment is accepted or rejected by the sum of its evidence: "
                'reactions, replies such as "won\'t fix", threads resolved with or without a change):',
                "",
                "| version | judged | accepted | rejected | acceptance |",
                "|---|---:|---:|---:|---:|",
            ]
            for name, v in sorted(by_version.items(), key=lambda kv: version_order(kv[0])):
                lines.append(
                    f"| {name} | {v['judged']} | {v['accepted']} | {v['rejected']} | "
                    f"{100 * v['acceptance_rate']:.0f}% |"
                )
            lines.append("")
    lines += ["## Examples side by side", ""]
    lines += side_by_side(report)
    return "\n".join(lines)


def pr_plot(report: EvalReport, out: Path) -> list[str]:
    """Precision and recall of the tuned model's comments against the threshold on these hunks, the
    threshold calibrated on validation marked (``finetune.calibrate``)."""
    t = report.threshold
    if not t or not t.get("curve"):
        return []
    from bot.anchoring import Calibration, CurvePoint
    from finetune.calibrate import PR_CURVE_FILE, plot_pr_curve

    curve = [CurvePoint(**p) for p in t["curve"]]
    title = "tuned: comments against the threshold (test hunks)"
    if t.get("threshold") is None:
        title += "; none calibrated"
    written = plot_pr_curve(Calibration(t.get("threshold"), "", "", curve), out / PR_CURVE_FILE, title)
    return [PR_CURVE_FILE] if written else []


def write_report(report: EvalReport, out: str | Path) -> Path:
    """Write report.md, metrics.json (with every prediction) and the plots into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot(report, out) + pr_plot(report, out)
    (out / "report.md").write_text(markdown(report, plots) + "\n", encoding="utf-8")
    atomic_write_json(out / "metrics.json", report.to_dict(predictions=True))
    return out
