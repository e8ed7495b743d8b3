"""The evaluation report: a verdict first, marked uninformative metrics, plots that cannot mislead,
and a one-way dependency evaluate -> report -> results."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bot.examples import Example, ExampleComment
from finetune.metrics import METRIC_INFO
from finetune.report import MISSING_LABEL, PLOT_GROUPS, draw_group, write_report
from finetune.results import EvalReport, SystemResult, verdict

ROOT = Path(__file__).resolve().parents[2]
HUNK = "@@ -1,2 +1,3 @@\n def f():\n+    print(x)\n     return x"


def _system(name: str, **metrics) -> SystemResult:
    return SystemResult(name, f"the {name} system", metrics, [], 0.0)


def _report(*systems: SystemResult, uninformative: dict[str, str] | None = None) -> EvalReport:
    examples = [
        Example("e1", "o/r", 1, "a.py", HUNK, [ExampleComment(3, "RIGHT", "Use the logger.")]),
        Example("e2", "o/r", 2, "a.py", HUNK, []),
    ]
    return EvalReport(
        "v2",
        "base-model",
        examples,
        list(systems),
        uninformative=uninformative or {},
        val_loss=0.4,
        generation={"max_new_tokens": 64, "batch_size": 8},
    )


def test_the_verdict_names_what_each_side_wins_on():
    report = _report(
        _system("tuned", review_f1=0.30, bleu4_no_stop=5.0, rouge_l=20.0, parse_failure_rate=0.10, line_recall=0.5),
        _system("base", review_f1=0.00, bleu4_no_stop=1.0, rouge_l=20.004, parse_failure_rate=0.90, line_recall=0.9),
        _system("retrieval", review_f1=0.20, bleu4_no_stop=6.0, rouge_l=25.0, parse_failure_rate=0.0, line_recall=1.0),
        uninformative={"line_recall": "every comment at the end"},
    )
    # ROUGE-L 20.00 vs 20.00 as printed is a tie; line recall is uninformative, so it is not weighed
    assert verdict(report) == (
        "verdict: tuned beats base on review F1, BLEU-4 -stop, parse-fail; "
        "tuned beats retrieval on review F1; "
        "retrieval beats tuned on BLEU-4 -stop, ROUGE-L, parse-fail"
    )
    tie = _report(_system("tuned", review_f1=0.1), _system("retrieval", review_f1=0.1))
    assert verdict(tie) == "verdict: tuned and retrieval tie; base model not evaluated"
    assert verdict(_report(_system("retrieval", review_f1=0.1))).startswith("verdict: no tuned model")


def test_the_table_and_markdown_lead_with_the_verdict_and_mark_uninformative_columns(tmp_path):
    report = _report(
        _system("tuned", review_f1=0.3, line_precision=1.0),
        _system("base", review_f1=None),
        uninformative={"line_precision": "every reference comment sits on its hunk's last line"},
    )
    lines = report.table().splitlines()
    assert lines[0] == verdict(report)
    assert "line P†" in lines[2] and "review F1" in lines[2]
    assert lines[-1] == "† uninformative here (line P): every reference comment sits on its hunk's last line"
    assert lines[5].split()[:2] == ["base", "–"]  # missing, not 0.000
    write_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert md.splitlines()[2] == f"**{verdict(report)}**"
    assert "| line P† |" in md and "gate inputs (v2): review_f1 0.300, parse failures –, validation loss 0.4000" in md
    assert {p.name for p in tmp_path.glob("*.png")} == {name for name, _, _ in PLOT_GROUPS}


def test_each_plot_holds_one_direction_and_one_scale():
    placed = set()
    for _, title, metrics in PLOT_GROUPS:
        directions = {METRIC_INFO[m].higher_is_better for m in metrics}
        scales = {METRIC_INFO[m].percent for m in metrics}
        assert len(directions) == 1 and len(scales) == 1, title
        assert ("lower is better" in title) == (directions == {False})
        placed |= set(metrics)
    assert {"review_f1", "parse_failure_rate", "bleu4_no_stop", "rouge_l"} <= placed


def test_a_missing_value_is_drawn_apart_from_zero_and_the_legend_stays_off_the_bars():
    import matplotlib.pyplot as plt

    report = _report(
        _system("tuned", hunk_precision=0.0, hunk_recall=0.5), _system("base", hunk_precision=None, hunk_recall=1.0)
    )
    fig = draw_group(report, "placement", ("hunk_precision", "hunk_recall"))
    try:
        fig.canvas.draw()
        (ax,) = fig.axes
        bars = {p.get_gid(): p for p in ax.patches if p.get_gid()}
        zero, missing = bars["value:tuned:hunk_precision"], bars["missing:base:hunk_precision"]
        assert zero.get_height() == 0 and zero.get_fill()
        assert missing.get_height() > 0 and not missing.get_fill() and missing.get_hatch() == "///"
        assert "value:base:hunk_precision" not in bars
        texts = [t.get_text() for t in ax.texts]
        assert "0.000" in texts and MISSING_LABEL in texts
        renderer = fig.canvas.get_renderer()
        legend_box = fig.legends[0].get_window_extent(renderer)
        assert not legend_box.overlaps(ax.get_window_extent(renderer))
    finally:
        plt.close(fig)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


@pytest.mark.parametrize(
    "module,forbidden",
    [
        ("report", {"finetune.evaluate"}),
        ("results", {"finetune.evaluate", "finetune.report"}),
        ("metrics", {"finetune.evaluate", "finetune.report", "finetune.results"}),
        ("gate", {"finetune.evaluate", "finetune.report", "finetune.results"}),
    ],
)
def test_evaluation_modules_depend_one_way(module, forbidden):
    assert not _imports(ROOT / "finetune" / f"{module}.py") & forbidden
