"""The team's own past reviews as exemplars for a hunk (prompt format v3): which past commented
hunks are most like this one, and how each is shown in a few lines.

* Similarity is BM25 (the maintained ``bm25s`` library) over the identifiers of the path and the hunk
  text, with snake_case and camelCase parts added so renamed variables still match.
* Leak-free: an exemplar always comes from an EARLIER pull request than the one it serves (the
  pull request's time is its earliest comment), never from the same one. At review time a diff has
  no such time and every indexed review is earlier.
* Compact: a few lines of the exemplar's hunk ending at the commented line (GitHub's ``diff_hunk``
  ends there), each cut to ``LINE_CHARS``, and the comment cut to ``COMMENT_CHARS``; exemplars are
  added while they fit ``EXEMPLAR_TOKEN_BUDGET`` (counted as characters / 4, the usual ratio for code
  under BPE tokenizers), so a prompt never grows by more than that.
* Fitted to the model's length: when a prompt with its exemplars is too long (a training row past
  ``--max-length``, a prompt past the model's context), its least similar exemplars are dropped, one
  at a time, until it fits (``first_fit``, ``fit_prompt``); only a prompt that does not fit without any
  is skipped (training, evaluation) or split (review). One rule for training, evaluation and review.

Pure: building and querying an index in memory. Saving it with a model version is
``adapters.exemplars``'s.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from bot.diff import Hunk, parse_hunk
from bot.prompt import Exemplar, PromptComment, PromptInput, anchor_label, normalize_body, render_target, with_exemplars

DEFAULT_K = 3
EXEMPLAR_TOKEN_BUDGET = 320  # tokens all exemplars of one prompt may take together (chars / 4)
CHARS_PER_TOKEN = 4
CONTEXT_LINES = 4  # lines of the exemplar's hunk shown before the commented line
LINE_CHARS = 100
COMMENT_CHARS = 300

_CODE_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def quiet_bm25s() -> None:
    """bm25s sets its own logger to DEBUG when imported, so every index it builds would print a line
    through the application's log handlers (and into `--format json` output); its warnings still show."""
    logging.getLogger("bm25s").setLevel(logging.WARNING)


def code_tokens(text: str) -> list[str]:
    """Identifiers and numbers, lower-cased, with snake_case and camelCase parts added (``load_config``
    -> ``load_config``, ``load``, ``config``), so renamed variables still match."""
    out = []
    for token in _CODE_TOKEN.findall(text):
        lower = token.lower()
        out.append(lower)
        parts = [p.lower() for p in _PARTS.findall(token)]
        if len(parts) > 1:
            out.extend(parts)
    return out


def document_tokens(path: str, hunk_text: str) -> list[str]:
    """What BM25 compares: the path's and the hunk's identifiers."""
    return code_tokens(path) + code_tokens(hunk_text)


@dataclass(frozen=True)
class IndexedReview:
    """One past commented hunk in the index: where it came from (for leak-free selection) and its
    compact rendering."""

    example_id: str
    repo: str
    pr: int
    pr_time: str  # ISO time of the pull request's earliest comment ("" when unknown)
    exemplar: Exemplar

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["exemplar"] = asdict(self.exemplar)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexedReview:
        ex = data["exemplar"]
        return cls(
            str(data["example_id"]),
            str(data["repo"]),
            int(data["pr"]),
            str(data.get("pr_time") or ""),
            Exemplar(str(ex["path"]), str(ex["code"]), str(ex["answer"]), str(ex.get("label_answer") or "")),
        )


def compact(path: str, hunk: Hunk, line: int, side: str, body: str) -> Exemplar | None:
    """The exemplar for a comment on (line, side) of ``hunk``: up to CONTEXT_LINES lines before the
    commented one and the commented line, labelled as the prompt labels them; None when the line
    is not in the hunk or the body is empty."""
    index = next((i for i, ln in enumerate(hunk.lines) if ln.number == line and ln.side == side), None)
    if index is None:
        index = next((i for i, ln in enumerate(hunk.lines) if ln.kind == " " and ln.new_no == line), None)
    body = normalize_body(body)
    if index is None or not body:
        return None
    rows = []
    for ln in hunk.lines[max(0, index - CONTEXT_LINES) : index + 1]:
        text = ln.text if len(ln.text) <= LINE_CHARS else ln.text[: LINE_CHARS - 1] + "…"
        rows.append(f"{anchor_label(ln.number, ln.side)} {ln.kind}{text}")
    if len(body) > COMMENT_CHARS:
        body = body[: COMMENT_CHARS - 1].rstrip() + "…"
    comment = [PromptComment(hunk.lines[index].number, hunk.lines[index].side, body)]
    return Exemplar(path, "\n".join(rows), render_target(comment, hunk), render_target(comment, hunk, version=3))


def exemplar_tokens(ex: Exemplar) -> int:
    return (len(ex.path) + len(ex.code) + len(ex.answer) + 16) // CHARS_PER_TOKEN + 1


def within_budget(exemplars: Iterable[Exemplar], budget: int = EXEMPLAR_TOKEN_BUDGET) -> tuple[Exemplar, ...]:
    """The exemplars, best first, that fit ``budget`` tokens together (one that alone does not fit is
    passed over, a smaller later one may still fit)."""
    kept, spent = [], 0
    for ex in exemplars:
        cost = exemplar_tokens(ex)
        if spent + cost <= budget:
            kept.append(ex)
            spent += cost
    return tuple(kept)


T = TypeVar("T")


def first_fit(
    exemplars: Sequence[Exemplar], attempt: Callable[[tuple[Exemplar, ...]], T | None]
) -> tuple[T, int] | None:
    """The rule for a prompt too long with its exemplars, in training, evaluation and review alike:
    ``attempt`` it with all of them (best first), then without the least similar, and so on down to
    none. The first attempt that fits (not None) and how many exemplars were dropped for it; None
    when it does not fit even without exemplars. The bare prompt is tried second: a prompt only grows
    with exemplars, so when that does not fit nothing will, and a hunk too long for any row costs two
    attempts, not k + 1."""
    shown = tuple(exemplars)
    out = attempt(shown)
    if out is not None or not shown:
        return (out, 0) if out is not None else None
    bare = attempt(())
    if bare is None:
        return None
    for n in range(len(shown) - 1, 0, -1):
        out = attempt(shown[:n])
        if out is not None:
            return out, len(shown) - n
    return bare, len(shown)


@dataclass(frozen=True)
class Fitted:
    """A prompt after ``fit_prompt``: what it costs, how many exemplars were dropped for it to fit, and
    whether it fits at all (when not, it is the bare prompt: the caller skips or splits its hunk)."""

    prompt: PromptInput
    tokens: int
    dropped: int
    fits: bool


def fit_prompt(
    inp: PromptInput, cost: Callable[[PromptInput], int], room: int, exemplar_room: int | None = None
) -> Fitted:
    """``inp`` with its least similar exemplars dropped (``first_fit``) until its ``cost`` is at most
    ``room``, and at most ``exemplar_room`` too while it still shows an exemplar: the length the version
    was trained at, so exemplars never make a prompt longer than any the model learnt from (a bare
    hunk is held to ``room`` alone, as before exemplars)."""
    costs: list[int] = []

    def attempt(shown: tuple[Exemplar, ...]) -> tuple[PromptInput, int] | None:
        prompt = with_exemplars(inp, shown)
        costs.append(cost(prompt))
        limit = room if not shown or exemplar_room is None else min(room, exemplar_room)
        return (prompt, costs[-1]) if costs[-1] <= limit else None

    found = first_fit(inp.exemplars, attempt)
    if found is None:
        return Fitted(with_exemplars(inp, ()), costs[-1], len(inp.exemplars), False)
    (prompt, tokens), dropped = found
    return Fitted(prompt, tokens, dropped, True)


def pr_times(examples: Iterable[Any]) -> dict[tuple[str, int], str]:
    """(repo, pr) -> the earliest ``created_at`` among its examples (ISO strings compare in time order
    when they share a form, which one dataset's do)."""
    out: dict[tuple[str, int], str] = {}
    for ex in examples:
        key = (ex.repo, int(ex.pr))
        when = ex.created_at or ""
        if key not in out or (when and (not out[key] or when < out[key])):
            out[key] = when
    return out


def reviews_of(examples: Sequence[Any]) -> list[IndexedReview]:
    """Index entries for the commented examples (their first comment each)."""
    times = pr_times(examples)
    out = []
    for ex in examples:
        if not ex.comments:
            continue
        c = ex.comments[0]
        try:
            hunk = parse_hunk(ex.hunk)
        except ValueError:
            continue
        exemplar = compact(ex.path, hunk, c.line, c.side, c.body)
        if exemplar is not None:
            out.append(IndexedReview(ex.id, ex.repo, int(ex.pr), times[(ex.repo, int(ex.pr))], exemplar))
    return out


@dataclass(frozen=True)
class Query:
    """What an exemplar is retrieved for: a hunk of a file, and (when known) the pull request it
    belongs to and that pull request's time, which every exemplar must be older than."""

    path: str
    hunk_text: str
    repo: str | None = None
    pr: int | None = None
    pr_time: str = ""


class ExemplarIndex:
    """BM25 over past commented hunks; ``top(query, k)`` gives leak-free exemplars, best first."""

    def __init__(
        self, reviews: Sequence[IndexedReview], tokens: Sequence[Sequence[str]] | None = None, bm25: Any = None
    ):
        """``tokens``: each review's document (default: its compact exemplar's); ``bm25``: a ready
        ``bm25s.BM25`` over those documents (a saved index, loaded), instead of building one."""
        import bm25s

        quiet_bm25s()

        self.reviews = list(reviews)
        if bm25 is not None:
            self.bm25 = bm25
            return
        docs = [list(t) for t in tokens] if tokens is not None else [self._tokens(r) for r in self.reviews]
        self.bm25 = bm25s.BM25(method="lucene")
        if self.reviews:
            self.bm25.index([d or ["<empty>"] for d in docs], show_progress=False)

    @staticmethod
    def _tokens(review: IndexedReview) -> list[str]:
        return document_tokens(review.exemplar.path, review.exemplar.code)

    @classmethod
    def from_examples(cls, examples: Sequence[Any]) -> ExemplarIndex:
        """An index of the commented ones among ``examples`` (a version's training split). Documents are
        the full hunks, so retrieval sees all of a hunk while the prompt shows a few lines."""
        reviews = reviews_of(examples)
        by_id = {ex.id: ex for ex in examples}
        return cls(reviews, [document_tokens(by_id[r.example_id].path, by_id[r.example_id].hunk) for r in reviews])

    def __len__(self) -> int:
        return len(self.reviews)

    def allowed(self, review: IndexedReview, query: Query) -> bool:
        if query.repo is not None and query.pr is not None and (review.repo, review.pr) == (query.repo, query.pr):
            return False
        if query.pr_time:
            return bool(review.pr_time) and review.pr_time < query.pr_time
        return True

    def top(self, query: Query, k: int = DEFAULT_K, budget: int = EXEMPLAR_TOKEN_BUDGET) -> tuple[Exemplar, ...]:
        """The ``k`` most similar earlier reviews that fit the token budget, best first (lowest index on
        ties, so the choice is deterministic)."""
        if k <= 0 or not self.reviews:
            return ()
        vocab = getattr(self.bm25, "vocab_dict", None) or {}
        tokens = [t for t in document_tokens(query.path, query.hunk_text) if t in vocab]
        if not tokens:
            return ()
        scores = self.bm25.get_scores(tokens)
        order = sorted(range(len(self.reviews)), key=lambda i: (-float(scores[i]), i))
        chosen: list[Exemplar] = []
        for i in order:
            if float(scores[i]) <= 0 or len(chosen) == k:
                break
            if self.allowed(self.reviews[i], query):
                chosen.append(self.reviews[i].exemplar)
        return within_budget(chosen, budget)


def query_of(example: Any, times: dict[tuple[str, int], str] | None = None) -> Query:
    """The leak-free query for a training or evaluation example: its own pull request and that pull
    request's time (from ``times``, else the example's own)."""
    key = (example.repo, int(example.pr))
    when = (times or {}).get(key) or example.created_at or ""
    return Query(example.path, example.hunk, example.repo, int(example.pr), when)
