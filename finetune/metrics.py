"""Review-comment metrics: BLEU-4 the way the CodeReviewer evaluator computes it, ROUGE-L, exact
match, and where the comments were put.

BLEU-4 (CodeReviewer style): each prediction is scored against its one reference on its own
(sentence-level), over lower-cased word and punctuation tokens; n-gram precisions for n = 1..4 with
add-one smoothing on the 2- to 4-gram counts (not on unigrams), geometric mean, and a brevity
penalty min(0, 1 - (r + 1) / (h + 1)) in log space; the corpus score is the mean over examples × 100.
The CodeReviewer paper reports it after removing English stop words from both sides; we report both.

Text metrics cover the examples humans commented on; the prediction is every comment body the model
wrote for the hunk (joined), the reference every human comment body. Placement metrics cover all
examples: a hunk counts as commented when at least one comment was parsed and anchored inside it.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

_TOKEN = re.compile(r"\w+|[^\w\s]+")

# A small English stop-word list: function words that carry no review content.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her
here hers herself him himself his how i if in into is it its itself just me more most my myself no nor
not now of off on once only or other our ours ourselves out over own same she should so some such than
that the their theirs them themselves then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your yours yourself
yourselves s t don
""".split())


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation runs (``don't`` -> ``don``, ``'``, ``t``)."""
    return _TOKEN.findall((text or "").lower())


def remove_stop_words(tokens: Iterable[str]) -> list[str]:
    return [t for t in tokens if t not in STOP_WORDS]


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu4(hypothesis: Sequence[str], reference: Sequence[str]) -> float:
    """Smoothed sentence BLEU-4 in [0, 1] for token lists."""
    if not hypothesis:
        return 0.0
    log_sum = 0.0
    for n in range(1, 5):
        hyp, ref = _ngrams(hypothesis, n), _ngrams(reference, n)
        matches = sum(min(count, ref[gram]) for gram, count in hyp.items())
        guesses = max(len(hypothesis) - n + 1, 0)
        smooth = 0 if n == 1 else 1
        if matches + smooth == 0:
            return 0.0  # no unigram in common
        log_sum += math.log(matches + smooth) - math.log(guesses + smooth)
    brevity = min(0.0, 1.0 - (len(reference) + 1) / (len(hypothesis) + 1))
    return math.exp(log_sum / 4 + brevity)


def bleu4(predictions: Sequence[str], references: Sequence[str], stop_words: bool = True) -> float:
    """Mean sentence BLEU-4 × 100; ``stop_words=False`` removes stop words first (the paper's number)."""
    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    if not predictions:
        return 0.0
    total = 0.0
    for pred, ref in zip(predictions, references):
        hyp, gold = tokenize(pred), tokenize(ref)
        if not stop_words:
            hyp, gold = remove_stop_words(hyp), remove_stop_words(gold)
        total += sentence_bleu4(hyp, gold)
    return 100.0 * total / len(predictions)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b, 1):
            row.append(previous[j - 1] + 1 if x == y else max(previous[j], row[-1]))
        previous = row
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (longest common subsequence) over the same tokens as BLEU."""
    hyp, ref = tokenize(prediction), tokenize(reference)
    lcs = _lcs(hyp, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> bool:
    """Same tokens (case, spacing and line breaks ignored)."""
    return tokenize(prediction) == tokenize(reference)


@dataclass(frozen=True)
class Placement:
    """Where one system commented on one example, next to where humans did."""

    predicted: frozenset[tuple[int, str]]  # (line, side) anchors the system commented on
    human: frozenset[tuple[int, str]]

    @property
    def negative(self) -> bool:
        return not self.human


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def placement_metrics(items: Sequence[Placement]) -> dict[str, float | None]:
    """Precision and recall of commenting on the hunks (and lines) humans commented on, and the
    share of negative hunks left alone. None where a ratio has nothing to divide by."""
    commented = [p for p in items if p.predicted]
    positives = [p for p in items if not p.negative]
    negatives = [p for p in items if p.negative]
    line_hits = sum(len(p.predicted & p.human) for p in items)
    return {
        "hunk_precision": _ratio(sum(1 for p in commented if not p.negative), len(commented)),
        "hunk_recall": _ratio(sum(1 for p in positives if p.predicted), len(positives)),
        "line_precision": _ratio(line_hits, sum(len(p.predicted) for p in items)),
        "line_recall": _ratio(line_hits, sum(len(p.human) for p in items)),
        "silence_on_negatives": _ratio(sum(1 for p in negatives if not p.predicted), len(negatives)),
    }


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float | None]:
    """BLEU-4 (with and without stop words), ROUGE-L and exact match, × 100, over paired texts."""
    if not predictions:
        return {"bleu4": None, "bleu4_no_stop": None, "rouge_l": None, "exact_match": None}
    n = len(predictions)
    return {
        "bleu4": bleu4(predictions, references, stop_words=True),
        "bleu4_no_stop": bleu4(predictions, references, stop_words=False),
        "rouge_l": 100.0 * sum(rouge_l(p, r) for p, r in zip(predictions, references)) / n,
        "exact_match": 100.0 * sum(exact_match(p, r) for p, r in zip(predictions, references)) / n,
    }
