"""Baselines a tuned model has to beat to be worth serving.

* Retrieval: the comments of the most similar training hunk (BM25 over path and code tokens), placed
  at the same distance from the end of the hunk (GitHub's ``diff_hunk`` ends at the commented line,
  so that distance carries over). A nearest neighbour that humans left alone means staying silent.
* Most frequent: the team's most common comment, on the last line of every hunk. It never stays
  silent, which is exactly what the silence metric should punish.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence

from bot.diff import Hunk
from bot.examples import Example
from bot.exemplars import document_tokens
from bot.prompt import PromptComment, normalize_body


def _document(example: Example) -> list[str]:
    return document_tokens(example.path, example.hunk)


class BM25:
    """Okapi BM25 over token lists (k1 = 1.5, b = 0.75), with an inverted index."""

    def __init__(self, documents: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        self.lengths = [len(d) for d in documents]
        self.avg = (sum(self.lengths) / len(documents)) if documents else 0.0
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, doc in enumerate(documents):
            for term, tf in Counter(doc).items():
                self.postings[term].append((i, tf))
        n = len(documents)
        self.idf = {t: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5)) for t, p in self.postings.items()}

    def scores(self, query: Sequence[str]) -> dict[int, float]:
        out: dict[int, float] = defaultdict(float)
        for term in set(query):
            for doc, tf in self.postings.get(term, ()):
                norm = self.k1 * (1 - self.b + self.b * self.lengths[doc] / (self.avg or 1))
                out[doc] += self.idf[term] * tf * (self.k1 + 1) / (tf + norm)
        return out

    def best(self, query: Sequence[str]) -> int | None:
        """Index of the best-scoring document (lowest index on ties), or None when nothing matches."""
        scores = self.scores(query)
        if not scores:
            return None
        return min(scores, key=lambda i: (-scores[i], i))


def _offset_from_end(hunk: Hunk, line: int, side: str) -> int | None:
    for distance, candidate in enumerate(reversed(hunk.lines)):
        if candidate.side == side and candidate.number == line:
            return distance
        if side == "RIGHT" and candidate.kind == " " and candidate.new_no == line:
            return distance
        if side == "LEFT" and candidate.kind == " " and candidate.old_no == line:
            return distance
    return None


def transplant(comment: PromptComment, source: Hunk, target: Hunk) -> PromptComment:
    """``comment`` from ``source`` placed on the line of ``target`` at the same distance from its end."""
    distance = _offset_from_end(source, comment.line, comment.side) or 0
    lines = target.lines
    line = lines[max(0, len(lines) - 1 - distance)] if lines else None
    if line is None:
        return PromptComment(target.new_start, "RIGHT", comment.body)
    return PromptComment(line.number, line.side, comment.body)


class RetrievalBaseline:
    """Answer each hunk with the comments of the most similar training hunk."""

    name = "retrieval"
    description = "comments of the most similar training hunk (BM25)"

    def __init__(self, train: Sequence[Example]):
        self.train = list(train)
        self.index = BM25([_document(ex) for ex in self.train])

    def neighbour(self, example: Example) -> Example | None:
        best = self.index.best(_document(example))
        return self.train[best] if best is not None else None

    def predict(self, example: Example) -> list[PromptComment]:
        other = self.neighbour(example)
        if other is None or other.is_negative:
            return []
        source, target = other.parsed_hunk(), example.parsed_hunk()
        return [transplant(PromptComment(c.line, c.side, c.body, None), source, target) for c in other.comments]


class MostFrequentBaseline:
    """Always the most frequent training comment, on the hunk's last line."""

    name = "most-frequent"
    description = "the most frequent training comment, on every hunk's last line"

    def __init__(self, train: Sequence[Example]):
        counts: Counter[str] = Counter()
        first_form: dict[str, str] = {}
        for ex in train:
            for c in ex.comments:
                body = normalize_body(c.body)
                key = " ".join(body.lower().split())
                if key:
                    counts[key] += 1
                    first_form.setdefault(key, body)
        # most common; ties broken alphabetically so the choice does not depend on input order
        self.comment = first_form[min(counts, key=lambda k: (-counts[k], k))] if counts else None

    def predict(self, example: Example) -> list[PromptComment]:
        if self.comment is None:
            return []
        hunk = example.parsed_hunk()
        if not hunk.lines:
            return []
        last = hunk.lines[-1]
        return [PromptComment(last.number, last.side, self.comment)]
