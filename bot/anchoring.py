"""Where to comment, and whether to at all, from the model's own probabilities.

Free-running generation picks an anchor by sampling its digits one by one, can name a line outside
the hunk, and says nothing about how sure it is. Here the model scores every answer it could start
with instead: ``NO COMMENT`` and each line the hunk shows (its quote, ``>>> +code``, from prompt
format 4; its label, ``R<n>:``, ``L<n>:``, before). A line's confidence is the mass the model puts on
commenting at all times the share of that mass on this line. Then:

* with a threshold (calibrated on validation data, ``calibrate``), every label that clears it gets a
  comment, most confident first, at most ``max_per_hunk``; none clears it: silence;
* without one, the model's own choice: a comment on the best line when commenting outweighs
  ``NO COMMENT``, else silence (for quotes, by the answer's first token: the quote mark against
  ``NO COMMENT``; a long quote's joint probability would lose to silence by its length alone).

The body of each chosen comment is generated after its label (``PromptInput.answer_prefix``), so an
anchor outside the hunk cannot happen. The scoring itself is the backend's (``score_answers``);
this module is the pure part: candidates, choices, the parse, calibration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.diff import Hunk
from bot.prompt import (
    NO_COMMENT,
    PROMPT_FORMAT_VERSION,
    QUOTE_MARK,
    PromptComment,
    PromptInput,
    anchor_label,
    parse_output,
    quoted_lines,
    with_answer_prefix,
)

DEFAULT_MAX_PER_HUNK = 2


class Scorer(Protocol):
    """A backend that can score answer starts: for each input, the probability of each candidate
    continuation (teacher-forced, one value per candidate, in order)."""

    def score_answers(self, inputs: list[PromptInput], candidates: list[list[str]]) -> list[list[float]]: ...

    def generate(self, inputs: list[PromptInput], *, max_new_tokens: int = 256) -> Sequence[Any]: ...


def can_score(backend: object) -> bool:
    return callable(getattr(backend, "score_answers", None))


def labels(hunk: Hunk) -> list[tuple[str, int, str]]:
    """(label, line, side) for every line the prompt shows, in hunk order, each once."""
    seen: set[str] = set()
    out = []
    for ln in hunk.lines:
        label = anchor_label(ln.number, ln.side)
        if label not in seen:
            seen.add(label)
            out.append((label, ln.number, ln.side))
    return out


@dataclass
class AnchorScores:
    """The model's confidence in a comment on each label of one hunk (summing with ``silence`` to 1)."""

    silence: float
    confidence: dict[tuple[int, str], float] = field(default_factory=dict)
    prefix_of: dict[tuple[int, str], str] = field(default_factory=dict)  # the answer start that names the line
    # quotes only: the share of the answer's first token on the quote mark against NO COMMENT. A quote's
    # joint probability shrinks with its length and with whatever the model would quote that no line
    # shows, so without a threshold this, not the summed confidences, decides whether to comment.
    commits: float | None = None

    @property
    def comment_mass(self) -> float:
        return sum(self.confidence.values())

    def ranked(self) -> list[tuple[tuple[int, str], float]]:
        return sorted(self.confidence.items(), key=lambda kv: (-kv[1], kv[0]))

    def choose(self, threshold: float | None, max_per_hunk: int = DEFAULT_MAX_PER_HUNK) -> list[tuple[int, str]]:
        """The anchors to comment on: those at or above ``threshold`` (best first, capped); without a
        threshold, the best one when commenting outweighs silence."""
        ranked = self.ranked()
        if not ranked:
            return []
        if threshold is None:
            commenting = self.commits > 0.5 if self.commits is not None else self.comment_mass > self.silence
            return [ranked[0][0]] if commenting else []
        return [anchor for anchor, p in ranked if p >= threshold][:max_per_hunk]


def _scores(cands: list[tuple[str, int, str]], probs: Sequence[float]) -> AnchorScores:
    """AnchorScores from the probabilities of [NO COMMENT, answer start, ...] (and, for quotes, of the
    bare QUOTE_MARK last: see ``_candidates``)."""
    mark = None
    if len(probs) == len(cands) + 2:  # quotes: the bare quote mark was scored last
        probs, mark = probs[:-1], probs[-1]
    total = sum(probs) or 1.0
    scores = AnchorScores(probs[0] / total)
    if mark is not None:
        decided = probs[0] + mark
        scores.commits = mark / decided if decided > 0 else 0.0
    for (prefix, line, side), p in zip(cands, probs[1:]):
        scores.confidence[(line, side)] = p / total
        scores.prefix_of[(line, side)] = prefix
    return scores


def version_of(backend: object) -> int:
    """The prompt format the backend's model was trained on (the answers it is scored on)."""
    version = getattr(backend, "prompt_format_version", None)
    return version if isinstance(version, int) else PROMPT_FORMAT_VERSION


def candidates(hunk: Hunk, version: int = PROMPT_FORMAT_VERSION) -> list[tuple[str, int, str]]:
    """(answer start, line, side) for every line a comment may name, in hunk order: ``R12:`` in
    formats 1-3; from format 4 the line's quote and a line break (one per distinct quote)."""
    if version >= 4:
        return [(f"{QUOTE_MARK}{q}\n", line, side) for q, line, side in quoted_lines(hunk)]
    return [(f"{label}:", line, side) for label, line, side in labels(hunk)]


def _candidates(hunk: Hunk, version: int) -> tuple[list[tuple[str, int, str]], list[str]]:
    """The anchors and the texts to score: ``NO COMMENT`` and each answer start; with quotes also the
    bare QUOTE_MARK, last, for ``AnchorScores.commits``. (Measured on the demo's validation split: as
    the confidence a threshold is calibrated on, a quote's joint probability beats its share of the
    quotes times the first-token decision, F1 0.833 against 0.640.)"""
    cands = candidates(hunk, version)
    texts = [NO_COMMENT] + [prefix for prefix, _, _ in cands]
    return cands, texts + [QUOTE_MARK.rstrip()] if version >= 4 and cands else texts


def score_hunks(backend: Scorer, inputs: list[PromptInput], hunks: list[Hunk]) -> list[AnchorScores]:
    """The model's AnchorScores for each (input, hunk)."""
    version = version_of(backend)
    sets = [_candidates(h, version) for h in hunks]
    probabilities = backend.score_answers(inputs, [texts for _, texts in sets]) if inputs else []
    return [_scores(cands, probs) for (cands, _), probs in zip(sets, probabilities)]


@dataclass
class ConstrainedAnswer:
    """What constrained decoding produced for one hunk: comments with the model's confidence, the raw
    text of each body, and the scores (for calibration and reports)."""

    comments: list[PromptComment]
    confidences: list[float]
    text: str
    scores: AnchorScores
    empty_bodies: int = 0
    truncated: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Analysed:
    """Every hunk answered under several thresholds (variant name -> answers, one per hunk), the
    free-running answers when asked for, and the scores."""

    variants: dict[str, list[ConstrainedAnswer]]
    free: list[Any] | None
    scores: list[AnchorScores]


def analyse_hunks(
    backend: Scorer,
    inputs: list[PromptInput],
    hunks: list[Hunk],
    variants: dict[str, float | None],
    *,
    max_new_tokens: int,
    max_per_hunk: int = DEFAULT_MAX_PER_HUNK,
    free: bool = False,
) -> Analysed:
    """Score every hunk's anchors once and answer it under each threshold of ``variants`` (None: the
    model's own choice); a body is written once per chosen anchor, whichever variants chose it. A
    backend with ``analyse`` does it all in one pass over each prompt; others score, then generate."""
    version = version_of(backend)
    sets = [_candidates(h, version) for h in hunks]
    chosen: dict[int, dict[tuple[int, str], int]] = {}
    scores: dict[int, AnchorScores] = {}

    def choose(i: int, probs: list[float]) -> list[int]:
        scores[i] = _scores(sets[i][0], probs)
        picks = {a for t in variants.values() for a in scores[i].choose(t, max_per_hunk)}
        order = [(line, side) for _, line, side in sets[i][0]]
        chosen[i] = {a: 1 + order.index(a) for a in sorted(picks)}
        return list(chosen[i].values())

    bodies: dict[tuple[int, tuple[int, str]], Any] = {}
    free_answers: list[Any] | None = None
    analyse = getattr(backend, "analyse", None)
    if callable(analyse) and len(inputs) == 1:  # nothing to batch: one pass over the prompt does it all
        results = analyse(inputs, [t for _, t in sets], choose, max_new_tokens=max_new_tokens, free=free)
        for i, result in enumerate(results):
            for anchor, index in chosen.get(i, {}).items():
                bodies[(i, anchor)] = result.bodies[index]
        free_answers = [r.free for r in results] if free else None
    else:  # score each prompt, then every body and free answer in one batched generate call
        reusing = getattr(backend, "reusing_prompts", None)  # the scoring pass's states serve the generation
        with reusing() if callable(reusing) else nullcontext():
            for i, probs in enumerate(backend.score_answers(inputs, [t for _, t in sets]) if inputs else []):
                choose(i, probs)
            jobs = [(i, a) for i in range(len(inputs)) for a in chosen.get(i, {})]
            prompts = [with_answer_prefix(inputs[i], scores[i].prefix_of[a]) for i, a in jobs]
            prompts += list(inputs) if free else []
            generated = list(backend.generate(prompts, max_new_tokens=max_new_tokens)) if prompts else []
        bodies = dict(zip(jobs, generated))
        free_answers = generated[len(jobs) :] if free else None
    ordered = [scores[i] for i in range(len(inputs))]
    answers = {
        name: [_answer(i, hunks[i], ordered[i], ordered[i].choose(t, max_per_hunk), bodies) for i in range(len(inputs))]
        for name, t in variants.items()
    }
    return Analysed(answers, free_answers, ordered)


def _answer(
    i: int, hunk: Hunk, scores: AnchorScores, anchors: list[tuple[int, str]], bodies: dict[Any, Any]
) -> ConstrainedAnswer:
    answer = ConstrainedAnswer([], [], "", scores)
    for anchor in anchors:
        gen = bodies[(i, anchor)]
        text = scores.prefix_of[anchor] + _text(gen)
        answer.text += ("\n" if answer.text else "") + text
        answer.prompt_tokens += int(getattr(gen, "prompt_tokens", 0) or 0)
        answer.completion_tokens += int(getattr(gen, "completion_tokens", 0) or 0)
        answer.truncated |= getattr(gen, "finish_reason", "stop") == "length"
        parsed = parse_output(text, hunk)
        first = next((c for c in parsed.comments if (c.line, c.side) == anchor), None)
        if first is None:
            answer.empty_bodies += 1
            continue
        answer.comments.append(first)
        answer.confidences.append(scores.confidence[anchor])
    return answer


def answer_hunks(
    backend: Scorer,
    inputs: list[PromptInput],
    hunks: list[Hunk],
    *,
    threshold: float | None,
    max_new_tokens: int,
    max_per_hunk: int = DEFAULT_MAX_PER_HUNK,
) -> list[ConstrainedAnswer]:
    """Score the anchors of every hunk, choose with ``threshold``, and write one body per chosen anchor."""
    analysed = analyse_hunks(
        backend, inputs, hunks, {"": threshold}, max_new_tokens=max_new_tokens, max_per_hunk=max_per_hunk
    )
    return analysed.variants[""]


def _text(gen: object) -> str:
    return str(getattr(gen, "text", gen if isinstance(gen, str) else ""))


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    precision: float
    recall: float
    f1: float
    comments: int


@dataclass
class Calibration:
    """The threshold chosen on validation data, the curve it was chosen from, and why (or why none
    could be chosen: ``threshold`` None and ``reason`` says so)."""

    threshold: float | None
    rule: str
    reason: str
    curve: list[CurvePoint] = field(default_factory=list)
    examples: int = 0
    human_comments: int = 0

    @property
    def point(self) -> CurvePoint | None:
        return next((p for p in self.curve if p.threshold == self.threshold), None)

    def to_dict(self) -> dict[str, Any]:
        point = self.point
        return {
            "threshold": self.threshold,
            "rule": self.rule,
            "reason": self.reason,
            "examples": self.examples,
            "human_comments": self.human_comments,
            "precision": point.precision if point else None,
            "recall": point.recall if point else None,
            "f1": point.f1 if point else None,
            "curve": [vars(p) for p in self.curve],
        }


def pr_curve(
    scores: Sequence[AnchorScores],
    humans: Sequence[set[tuple[int, str]]],
    max_per_hunk: int = DEFAULT_MAX_PER_HUNK,
) -> list[CurvePoint]:
    """Line-level precision and recall of the comments each threshold would make (a comment is right
    when a human commented on its line), for every distinct confidence as a threshold, highest first."""
    wanted = sum(len(h) for h in humans)
    thresholds = sorted({p for s in scores for _, p in s.ranked()[:max_per_hunk]}, reverse=True)
    curve = []
    for t in thresholds:
        said = right = 0
        for s, human in zip(scores, humans):
            chosen = s.choose(t, max_per_hunk)
            said += len(chosen)
            right += sum(1 for a in chosen if a in human)
        precision = right / said if said else 0.0
        recall = right / wanted if wanted else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        curve.append(CurvePoint(t, precision, recall, f1, said))
    return curve


MIN_CALIBRATION_HUNKS = 5
"""Validation hunks of each kind (with a human comment, and without) that calibration needs before it
chooses a threshold. A threshold decides when to stay silent; without hunks the team left alone there
is nothing that says where silence is right (commenting on every hunk is never penalised there),
and a handful of either kind makes the chosen point noise."""


def _evidence_missing(humans: Sequence[set[tuple[int, str]]], minimum: int) -> str | None:
    """Why these validation hunks cannot calibrate a threshold; None when they can."""
    commented = sum(1 for h in humans if h)
    silent = len(humans) - commented
    if not commented:
        return "no validation comments to calibrate on"
    if not silent:
        return (
            f"no validation hunk without a human comment (all {commented} are commented): silence cannot be calibrated"
        )
    if commented < minimum or silent < minimum:
        return (
            f"too few validation hunks to calibrate on: {commented} with a human comment and {silent} without, "
            f"at least {minimum} of each needed"
        )
    return None


def calibrate(
    scores: Sequence[AnchorScores],
    humans: Sequence[set[tuple[int, str]]],
    *,
    min_precision: float | None = None,
    max_per_hunk: int = DEFAULT_MAX_PER_HUNK,
) -> Calibration:
    """The threshold with the best F1 on these (validation) hunks, or with ``min_precision`` the
    lowest threshold whose precision reaches it (the most comments at that precision). Refuses to
    decide without evidence, whatever the rule: fewer than MIN_CALIBRATION_HUNKS hunks with a human
    comment or as many without (no silent hunk at all: silence cannot be calibrated), or no threshold
    reaching the precision, gives ``threshold`` None with the reason. The curve is kept either way."""
    rule = "max F1" if min_precision is None else f"precision >= {min_precision:g}"
    wanted = sum(len(h) for h in humans)
    curve = pr_curve(scores, humans, max_per_hunk)
    base = {"curve": curve, "examples": len(scores), "human_comments": wanted}
    missing = _evidence_missing(humans if scores else [], MIN_CALIBRATION_HUNKS)
    if missing:
        return Calibration(None, rule, missing, **base)  # type: ignore[arg-type]
    if not curve:
        return Calibration(None, rule, "the model proposed no comment on validation", **base)  # type: ignore[arg-type]
    if min_precision is None:
        best = max(curve, key=lambda p: (p.f1, p.threshold))
        reason = f"max F1 {best.f1:.3f} on {len(scores)} validation hunks ({wanted} human comments)"
        return Calibration(best.threshold, rule, reason, **base)  # type: ignore[arg-type]
    reaching = [p for p in curve if p.precision >= min_precision and p.comments]
    if not reaching:
        top = max(p.precision for p in curve)
        reason = f"no threshold reaches precision {min_precision:g} on validation (best {top:.3f})"
        return Calibration(None, rule, reason, **base)  # type: ignore[arg-type]
    best = min(reaching, key=lambda p: p.threshold)
    reason = f"precision {best.precision:.3f} >= {min_precision:g}, recall {best.recall:.3f} on validation"
    return Calibration(best.threshold, rule, reason, **base)  # type: ignore[arg-type]


def human_anchors(comments: Sequence[Any]) -> set[tuple[int, str]]:
    return {(int(c.line), str(c.side)) for c in comments}


ScoreFn = Callable[[list[PromptInput], list[Hunk]], list[AnchorScores]]
