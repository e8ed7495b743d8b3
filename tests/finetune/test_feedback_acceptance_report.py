"""`revbot eval` shows how the team received each model version's posted comments: the acceptance
rate by version, in the terminal table and in report.md (issue 14, item 3)."""

from __future__ import annotations

from bot.examples import Example, ExampleComment
from finetune.report import write_report
from finetune.results import EvalReport, SystemResult, acceptance_lines

HUNK = "@@ -1,2 +1,3 @@\n def f():\n+    print(x)\n     return x"
FEEDBACK = {
    "comments": 7,
    "liked_share": 3 / 7,
    "disliked_share": 4 / 7,
    "answered_share": 1 / 7,
    "by_version": {
        "v10": {"judged": 2, "accepted": 2, "rejected": 0, "acceptance_rate": 1.0},
        "unknown": {"judged": 1, "accepted": 0, "rejected": 1, "acceptance_rate": 0.0},
        "v2": {"judged": 4, "accepted": 1, "rejected": 3, "acceptance_rate": 0.25},
    },
}


def _report(feedback):
    examples = [Example("e1", "o/r", 1, "a.py", HUNK, [ExampleComment(3, "RIGHT", "Use the logger.")])]
    system = SystemResult("tuned", "the tuned model", {"review_f1": 0.3}, [], 0.0)
    return EvalReport("v10", "base", examples, [system], feedback=feedback)


def test_acceptance_by_version_in_the_table_and_the_report(tmp_path):
    report = _report(FEEDBACK)
    lines = report.table().splitlines()
    start = lines.index("acceptance of posted comments by the team (reactions, replies, resolved threads):")
    assert lines[start + 1 :] == [
        "  v2: 25% accepted (1 of 4 judged, 3 rejected)",
        "  v10: 100% accepted (2 of 2 judged, 0 rejected)",
        "  unknown: 0% accepted (0 of 1 judged, 1 rejected)",
    ]
    write_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| version | judged | accepted | rejected | acceptance |" in md
    assert md.index("| v2 | 4 | 1 | 3 | 25% |") < md.index("| v10 | 2 | 2 | 0 | 100% |") < md.index("| unknown |")


def test_no_feedback_no_acceptance_section(tmp_path):
    assert acceptance_lines(_report(None)) == []
    assert acceptance_lines(_report(dict(FEEDBACK, by_version={}))) == []
    write_report(_report(None), tmp_path)
    assert "acceptance" not in (tmp_path / "report.md").read_text().lower()
