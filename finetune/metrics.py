"""Review-comment metrics, each computed exactly like the published implementation it is named after,
so revbot's numbers can stand next to a paper's.

* BLEU-4 is the CodeReviewer evaluator's (Microsoft CodeBERT, ``bleu_fromstr``), reimplemented here:
  each prediction is scored against its one reference (sentence level) and the mean × 100 is the
  corpus score. Tokens come in three steps, in this order because the order changes the result:
  (1) word runs and punctuation runs; (2) for ``bleu4_no_stop``, tokens found in the CodeReviewer
  stop-word list (``stopwords_codereviewer.txt``) are dropped, case-sensitively, so ``The`` stays;
  (3) lower-casing, then every punctuation character and every ``_`` is a token of its own
  (``load_config`` -> ``load _ config``). n-gram precisions for n = 1..4 with add-one smoothing on
  n >= 2, their geometric mean, and the brevity penalty ``min(0, 1 - (r + 1) / (h + 1))`` in log
  space. An empty prediction has no n-grams: its precisions count as 1 and the score is the brevity
  penalty alone, exp(-r), as in the reference. Two deliberate differences, both below 0.01: the
  reference rounds the corpus score to two decimals, and where no unigram matches it returns
  e^-177-ish (a log of the smallest float) where we return 0.
  ``bleu4`` keeps stop words; ``bleu4_no_stop`` is the variant the CodeReviewer paper reports.
* ROUGE-L is ``rouge-score``'s ``rougeL`` F-measure (the package itself; no stemming): lower-cased
  ASCII letters and digits only, punctuation and other characters dropped.
* ``review_f1`` scores text and place together, see ``review_scores``.

Text metrics cover the examples humans commented on; the prediction is every comment body the model
wrote for the hunk (joined), the reference every human comment body. Placement metrics cover all
examples: a hunk counts as commented when at least one comment was parsed and anchored inside it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

STOP_WORDS_FILE = "stopwords_codereviewer.txt"

_WORD_OR_PUNCT_RUN = re.compile(r"\w+|[^\w\s]+")  # step 1, and the exact-match tokens
# step 3: word characters other than "_", or one "_", or one punctuation character
_BLEU_TOKEN = re.compile(r"[^\W_]+|_|[^\w\s]")


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """The CodeReviewer stop-word list shipped with revbot (package data; ``#`` lines are its header)."""
    text = resources.files("finetune").joinpath(STOP_WORDS_FILE).read_text(encoding="utf-8")
    return frozenset(w for w in (line.strip() for line in text.splitlines()) if w and not w.startswith("#"))


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation runs (``don't`` -> ``don``, ``'``, ``t``): the exact-match tokens."""
    return _WORD_OR_PUNCT_RUN.findall((text or "").lower())


def bleu_tokens(text: str, remove_stop_words: bool = False) -> list[str]:
    """The tokens CodeReviewer's BLEU compares (see the module docstring for why in this order)."""
    runs = _WORD_OR_PUNCT_RUN.findall(text or "")
    if remove_stop_words:
        words = stop_words()
        runs = [r for r in runs if r not in words]
    return _BLEU_TOKEN.findall(" ".join(runs).lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu4(hypothesis: Sequence[str], reference: Sequence[str]) -> float:
    """Smoothed sentence BLEU-4 in [0, 1] of two token lists, as CodeReviewer's evaluator scores one pair."""
    log_precision = 0.0
    for n in range(1, 5):
        guesses = max(len(hypothesis) - n + 1, 0)
        smooth = 0 if n == 1 else 1
        if guesses + smooth == 0:
            continue  # an empty hypothesis: 0/0 counts as precision 1, as in the reference
        ref = _ngrams(reference, n)
        matches = sum(min(count, ref[gram]) for gram, count in _ngrams(hypothesis, n).items())
        if matches + smooth == 0:
            return 0.0  # no unigram in common (the reference: below 1e-70)
        log_precision += math.log(matches + smooth) - math.log(guesses + smooth)
    brevity = min(0.0, 1.0 - (len(reference) + 1) / (len(hypothesis) + 1))
    return math.exp(log_precision / 4 + brevity)


def bleu4(predictions: Sequence[str], references: Sequence[str], stop_words: bool = True) -> float:
    """Mean sentence BLEU-4 × 100. ``stop_words=False`` drops stop words first (the paper's number,
    ``bleu_fromstr(..., rmstop=True)``); ``True`` keeps them (``rmstop=False``)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return 0.0
    remove = not stop_words
    total = sum(sentence_bleu4(bleu_tokens(p, remove), bleu_tokens(r, remove)) for p, r in zip(predictions, references))
    return 100.0 * total / len(predictions)


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer  # imports nltk: only when ROUGE-L is asked for

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, reference: str) -> float:
    """rouge-score's ``rougeL`` F-measure in [0, 1] (0 when either side has no letter or digit)."""
    return _rouge_scorer().score(reference or "", prediction or "")["rougeL"].fmeasure


def exact_match(prediction: str, reference: str) -> bool:
    """Same tokens (case, spacing and line breaks ignored)."""
    return tokenize(prediction) == tokenize(reference)


def text_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float | None]:
    """BLEU-4 (with and without stop words), ROUGE-L and exact match, × 100, over paired texts."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return {"bleu4": None, "bleu4_no_stop": None, "rouge_l": None, "exact_match": None}
    n = len(predictions)
    return {
        "bleu4": bleu4(predictions, references, stop_words=True),
        "bleu4_no_stop": bleu4(predictions, references, stop_words=False),
        "rouge_l": 100.0 * sum(rouge_l(p, r) for p, r in zip(predictions, references)) / n,
        "exact_match": 100.0 * sum(exact_match(p, r) for p, r in zip(predictions, references)) / n,
    }


# --------------------------------------------------------------------------- placement


@dataclass(frozen=True)
class Placement:
    """Where one system commented on one example, next to where humans did."""

    predicted: frozenset[tuple[int, str]]  # (line, side) anchors the system commented on
    human: frozenset[tuple[int, str]]

    @property
    def negative(self) -> bool:
        return not self.human


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    """F1, None when neither side was measurable, 0 when one side is 0 or missing."""
    if precision is None and recall is None:
        return None
    if not precision or not recall:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def placement_metrics(items: Sequence[Placement]) -> dict[str, float | None]:
    """Precision and recall of commenting on the hunks (and lines) humans commented on, line F1, and
    the share of negative hunks left alone. None where a ratio has nothing to divide by."""
    commented = [p for p in items if p.predicted]
    positives = [p for p in items if not p.negative]
    negatives = [p for p in items if p.negative]
    line_hits = sum(len(p.predicted & p.human) for p in items)
    line_precision = _ratio(line_hits, sum(len(p.predicted) for p in items))
    line_recall = _ratio(line_hits, sum(len(p.human) for p in items))
    return {
        "hunk_precision": _ratio(sum(1 for p in commented if not p.negative), len(commented)),
        "hunk_recall": _ratio(sum(1 for p in positives if p.predicted), len(positives)),
        "line_precision": line_precision,
        "line_recall": line_recall,
        "line_f1": _f1(line_precision, line_recall),
        "silence_on_negatives": _ratio(sum(1 for p in negatives if not p.predicted), len(negatives)),
    }


# --------------------------------------------------------------------------- review_f1


def review_scores(examples: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float | None]:
    """Placement-aware text agreement: precision, recall and F1 of (line, text) against the humans.

    The question a team asks of a reviewer is "did it say the right thing on the right line, and
    little else": BLEU and ROUGE-L score the words but not where they are (and reward commenting
    everywhere), placement scores where but not what. Here a model comment earns the ROUGE-L of its
    text against the human comment(s) on the same (line, side), 0 on a line no human commented on (so
    noise costs precision); a human comment earns the best ROUGE-L among the model's comments on its
    line (so silence costs recall). ``examples`` have ``id`` and ``comments``; ``predictions`` have
    ``example_id`` and ``comments`` (anchored ones only). None where there is nothing to divide by."""
    by_id = {p.example_id: p for p in predictions}
    said = earned_said = 0.0
    wanted = earned_wanted = 0.0
    for example in examples:
        prediction = by_id.get(example.id)
        human: dict[tuple[int, str], list[str]] = {}
        for c in example.comments:
            human.setdefault((c.line, c.side), []).append(c.body)
        mine: dict[tuple[int, str], list[str]] = {}
        for c in prediction.comments if prediction is not None else ():
            mine.setdefault((c.line, c.side), []).append(c.body)
        for anchor, bodies in mine.items():
            for body in bodies:
                said += 1
                earned_said += max((rouge_l(body, ref) for ref in human.get(anchor, [])), default=0.0)
        for anchor, bodies in human.items():
            for ref in bodies:
                wanted += 1
                earned_wanted += max((rouge_l(body, ref) for body in mine.get(anchor, [])), default=0.0)
    precision = _ratio(earned_said, said)
    recall = _ratio(earned_wanted, wanted)
    return {"review_precision": precision, "review_recall": recall, "review_f1": _f1(precision, recall)}


# --------------------------------------------------------------------------- what each metric means


@dataclass(frozen=True)
class MetricInfo:
    label: str  # short column header
    higher_is_better: bool | None  # None: no better direction (a count)
    percent: bool  # a score × 100 (BLEU, ROUGE-L, EM) rather than a share in [0, 1]
    in_verdict: bool = True  # weighed in the report's verdict line


METRIC_INFO: dict[str, MetricInfo] = {
    "review_f1": MetricInfo("review F1", True, False),
    "review_precision": MetricInfo("review P", True, False, in_verdict=False),
    "review_recall": MetricInfo("review R", True, False, in_verdict=False),
    "bleu4": MetricInfo("BLEU-4", True, True, in_verdict=False),  # the verdict names the paper's variant
    "bleu4_no_stop": MetricInfo("BLEU-4 -stop", True, True),
    "rouge_l": MetricInfo("ROUGE-L", True, True),
    "exact_match": MetricInfo("EM%", True, True, in_verdict=False),
    "hunk_precision": MetricInfo("hunk P", True, False),
    "hunk_recall": MetricInfo("hunk R", True, False),
    "line_precision": MetricInfo("line P", True, False),
    "line_recall": MetricInfo("line R", True, False),
    "line_f1": MetricInfo("line F1", True, False, in_verdict=False),
    "silence_on_negatives": MetricInfo("silent-neg", True, False),
    "parse_failure_rate": MetricInfo("parse-fail", False, False),
    "invalid_anchor_rate": MetricInfo("bad anchor", False, False, in_verdict=False),
    "truncated_rate": MetricInfo("truncated", False, False, in_verdict=False),
    "comments_per_hunk": MetricInfo("comments/hunk", None, False, in_verdict=False),
}
LOWER_IS_BETTER = tuple(k for k, m in METRIC_INFO.items() if m.higher_is_better is False)


def format_metric(name: str, value: float | None) -> str:
    """How a metric is printed: scores × 100 with 2 decimals, shares with 3, missing as a dash."""
    if value is None:
        return "–"
    info = METRIC_INFO.get(name)
    return f"{value:.2f}" if info is not None and info.percent else f"{value:.3f}"


def uninformative_metrics(examples: Iterable[Any]) -> dict[str, str]:
    """Metrics that cannot tell systems apart on these references, each with the reason.

    On datasets built from GitHub's ``diff_hunk`` (crc-py, CodeReviewer) the hunk ends at the
    commented line, so every human comment sits on the hunk's last line: a system that always
    comments there, as both baselines do, scores 1 on line placement without knowing anything. And
    with no hunk left alone by humans, commenting on every hunk scores 1 on hunk placement."""
    examples = list(examples)
    positives = [e for e in examples if e.comments]
    out: dict[str, str] = {}
    if positives and len(positives) == len(examples):
        reason = "no test hunk was left alone by humans: commenting on every hunk scores 1"
        out["hunk_precision"] = out["hunk_recall"] = reason
    at_end = True
    for example in positives:
        lines = example.parsed_hunk().lines
        last = (lines[-1].number, lines[-1].side) if lines else None
        if any((c.line, c.side) != last for c in example.comments):
            at_end = False
            break
    if positives and at_end:
        reason = "every reference comment sits on its hunk's last line: commenting there always scores 1"
        out["line_precision"] = out["line_recall"] = out["line_f1"] = reason
    return out
