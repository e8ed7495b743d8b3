"""The evaluation report: a text table for the terminal, and a Markdown file with PNG plots and ten
examples side by side (hunk, human comment, model comment, retrieval comment), saved next to the
model so a reviewer of a promotion can see what the numbers mean."""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.versions import write_json_atomic

if TYPE_CHECKING:
    from finetune.evaluate import EvalReport, SystemResult

TABLE_COLUMNS = (
    ("bleu4", "BLEU-4"), ("bleu4_no_stop", "BLEU-4 -stop"), ("rouge_l", "ROUGE-L"), ("exact_match", "EM%"),
    ("hunk_precision", "hunk P"), ("hunk_recall", "hunk R"), ("line_precision", "line P"),
    ("line_recall", "line R"), ("silence_on_negatives", "silent-neg"), ("parse_failure_rate", "parse-fail"),
)
SIDE_BY_SIDE = 10


def _fmt(value: Any, ratio: bool) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if ratio else f"{value:.2f}"


def _is_ratio(key: str) -> bool:
    return key not in ("bleu4", "bleu4_no_stop", "rouge_l", "exact_match")


def text_table(report: "EvalReport") -> str:
    header = ["system"] + [label for _, label in TABLE_COLUMNS]
    rows = [[s.name] + [_fmt(s.metrics.get(k), _is_ratio(k)) for k, _ in TABLE_COLUMNS] for s in report.systems]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts = report.counts
    note = (f"{counts['examples']} test hunks ({counts['positive']} commented by humans, {counts['negative']} "
            f"left alone)")
    if report.dropped:
        note += "; dropped: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in report.dropped.items())
    return "\n".join([note, *lines])


def _md_cell(text: str) -> str:
    text = (text or "").strip()
    if not text:
        return "*(silent)*"
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _markdown_table(report: "EvalReport") -> str:
    header = "| system | " + " | ".join(label for _, label in TABLE_COLUMNS) + " |"
    sep = "|---|" + "|".join("---:" for _ in TABLE_COLUMNS) + "|"
    rows = [
        f"| **{s.name}** | " + " | ".join(_fmt(s.metrics.get(k), _is_ratio(k)) for k, _ in TABLE_COLUMNS) + " |"
        for s in report.systems
    ]
    return "\n".join([header, sep, *rows])


def _plot(report: "EvalReport", out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    groups = [
        ("text_metrics.png", "Comment text (positives, higher is better)",
         [("bleu4", "BLEU-4"), ("bleu4_no_stop", "BLEU-4 no stop"), ("rouge_l", "ROUGE-L"), ("exact_match", "EM %")]),
        ("placement.png", "Placement and format (share)",
         [("hunk_precision", "hunk P"), ("hunk_recall", "hunk R"), ("line_precision", "line P"),
          ("line_recall", "line R"), ("silence_on_negatives", "silent on neg."), ("parse_failure_rate", "parse failures")]),
    ]
    colors = ["#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"]
    for filename, title, metrics in groups:
        fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
        width = 0.8 / max(1, len(report.systems))
        for i, system in enumerate(report.systems):
            xs = [j + i * width for j in range(len(metrics))]
            ys = [system.metrics.get(k) or 0.0 for k, _ in metrics]
            ax.bar(xs, ys, width, label=system.name, color=colors[i % len(colors)])
        ax.set_xticks([j + width * (len(report.systems) - 1) / 2 for j in range(len(metrics))])
        ax.set_xticklabels([label for _, label in metrics])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / filename)
        plt.close(fig)
        written.append(filename)
    return written


def _side_by_side(report: "EvalReport", retrieval: "SystemResult | None") -> list[str]:
    tuned = report.systems[0]
    by_id = {p.example_id: p for p in tuned.predictions}
    retrieved = {p.example_id: p for p in retrieval.predictions} if retrieval else {}
    positives = [e for e in report.examples if not e.is_negative]
    pool = positives if len(positives) >= SIDE_BY_SIDE else list(report.examples)
    chosen = sorted(random.Random(0).sample(pool, min(SIDE_BY_SIDE, len(pool))), key=lambda e: e.id)
    out = []
    for n, ex in enumerate(chosen, 1):
        human = "\n".join(f"{'R' if c.side == 'RIGHT' else 'L'}{c.line}: {c.body}" for c in ex.comments)
        pred = by_id.get(ex.id)
        model = "\n".join(f"{'R' if c.side == 'RIGHT' else 'L'}{c.line}: {c.body}" for c in pred.comments) if pred else ""
        if pred and pred.failed:
            model = "*(unparseable)* " + pred.text[:300]
        ret = retrieved.get(ex.id)
        retrieval_text = "\n".join(f"{'R' if c.side == 'RIGHT' else 'L'}{c.line}: {c.body}" for c in ret.comments) if ret else ""
        hunk = ex.hunk if len(ex.hunk) <= 2500 else ex.hunk[:2500] + "\n… (cut)"
        out += [
            f"### {n}. `{ex.path}` ({ex.repo}#{ex.pr})", "",
            "```diff", hunk.replace("```", "`\u200b``"), "```", "",
            f"| human | {tuned.name} | {retrieval.name if retrieval else 'retrieval'} |", "|---|---|---|",
            f"| {_md_cell(human)} | {_md_cell(model)} | {_md_cell(retrieval_text)} |", "",
        ]
    return out


def markdown(report: "EvalReport", plots: list[str], retrieval: "SystemResult | None") -> str:
    counts = report.counts
    lines = [
        f"# Evaluation of {report.model}", "",
        f"- base model: `{report.base_model}`" if report.base_model else "- base model: (not evaluated)",
        f"- evaluated: {report.created_at}",
        f"- test hunks: {counts['examples']} ({counts['positive']} commented by humans, {counts['negative']} left alone)",
    ]
    if report.dropped:
        lines.append("- dropped for every system: " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in report.dropped.items()))
    lines += ["", "## Metrics", "", _markdown_table(report), "",
              "BLEU-4 is sentence-level, smoothed, averaged ×100 (CodeReviewer's evaluator); *-stop* removes English "
              "stop words first (the number the CodeReviewer paper reports). Text metrics are over hunks humans "
              "commented on; placement is precision/recall of commenting on the hunks (and lines) humans commented "
              "on; *silent-neg* is the share of hunks humans left alone on which the system said nothing.", ""]
    for system in report.systems:
        lines.append(f"- **{system.name}**: {system.description} ({system.seconds:.1f}s)")
    lines.append("")
    for plot in plots:
        lines += [f"![{plot}]({plot})", ""]
    if report.feedback:
        f = report.feedback
        lines += ["## Feedback on the bot's posted comments", "",
                  f"{f['comments']} comments with feedback: liked {100 * f['liked_share']:.0f}%, disliked "
                  f"{100 * f['disliked_share']:.0f}%, answered {100 * f['answered_share']:.0f}%.", ""]
    lines += ["## Examples side by side", ""]
    lines += _side_by_side(report, retrieval)
    return "\n".join(lines)


def write_report(report: "EvalReport", out: str | Path, retrieval: "SystemResult | None" = None) -> Path:
    """Write report.md, metrics.json (with every prediction) and the plots into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plot(report, out)
    (out / "report.md").write_text(markdown(report, plots, retrieval) + "\n", encoding="utf-8")
    write_json_atomic(out / "metrics.json", report.to_dict(predictions=True))
    return out

