"""The comment threshold, calibrated on the validation split after training (``revbot train``), and
the precision–recall curve against the threshold that ``revbot eval`` plots.

The model scores every label of each validation hunk (``bot.anchoring``); a threshold keeps the
labels whose confidence clears it. Precision and recall are line-level (a comment is right when a
human commented on its line), which needs no generation, so calibrating costs one scoring pass.
The rule is maximum F1, or with ``min_precision`` the threshold that keeps the most comments at that
precision. Without evidence there is no threshold, and the reason says so: fewer than
``bot.anchoring.MIN_CALIBRATION_HUNKS`` validation hunks with a human comment or as many without (a
split of commented hunks only says nothing about when to stay silent), or no threshold reaching the
precision.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.anchoring import DEFAULT_MAX_PER_HUNK, AnchorScores, Calibration, calibrate, human_anchors, score_hunks
from bot.examples import Example
from bot.prompt import PromptInput
from finetune.retrieval import fit_to_context

log = logging.getLogger(__name__)

PR_CURVE_FILE = "pr_curve.png"
SCORE_TOKENS = 8  # room left for the answer starts that scoring appends to a prompt


def score_examples(backend: Any, inputs: Sequence[PromptInput], examples: Sequence[Example]) -> list[AnchorScores]:
    """The model's anchor scores for each example's prompt."""
    return score_hunks(backend, list(inputs), [ex.parsed_hunk() for ex in examples])


def calibrate_on(
    backend: Any,
    inputs: Sequence[PromptInput],
    examples: Sequence[Example],
    *,
    min_precision: float | None = None,
    max_per_hunk: int = DEFAULT_MAX_PER_HUNK,
) -> Calibration:
    """Score ``examples`` (the validation split, with their prompts ``inputs``) and choose the threshold.
    Each prompt keeps as many of its exemplars as fit the context beside the answer's first tokens, as
    review would show it (``finetune.retrieval.fit_to_context``); one that does not fit without any is
    left out."""
    fitted = fit_to_context(backend, inputs, SCORE_TOKENS)
    fits = [(f.prompt, ex) for f, ex in zip(fitted, examples) if f.fits]
    scores = score_examples(backend, [i for i, _ in fits], [e for _, e in fits])
    result = calibrate(
        scores,
        [human_anchors(e.comments) for _, e in fits],
        min_precision=min_precision,
        max_per_hunk=max_per_hunk,
    )
    log.info("comment threshold: %s (%s)", result.threshold, result.reason)
    return result


def plot_pr_curve(calibration: Calibration, path: Path, title: str, chosen: float | None = None) -> Path | None:
    """Precision and recall against the threshold, the chosen threshold marked; None without a curve."""
    if not calibration.curve:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(calibration.curve, key=lambda p: p.threshold)
    floor = 1e-6  # a log axis: confidences that underflowed sit at the floor
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    xs = [max(p.threshold, floor) for p in points]
    ax.plot(xs, [p.precision for p in points], color="#3182bd", label="precision")
    ax.plot(xs, [p.recall for p in points], color="#e6550d", label="recall")
    ax.plot(xs, [p.f1 for p in points], color="#31a354", linestyle="--", label="F1")
    mark = chosen if chosen is not None else calibration.threshold
    if mark is not None:
        at = min(points, key=lambda p: abs(p.threshold - mark))
        x = max(at.threshold, floor)
        ax.axvline(x, color="#636363", linestyle=":", label=f"chosen threshold {mark:.3g}")
        ax.plot([x], [at.precision], "o", color="#3182bd")
        ax.plot([x], [at.recall], "o", color="#e6550d")
    ax.set_xscale("log")
    ax.set_xlabel("confidence threshold (log scale)")
    ax.set_ylabel("line-level precision / recall")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
