"""The review pipeline: a diff in, a ``Review`` out.

    Diff -> reviewable files, ranked (source, tests, other, docs, generated last)
         -> prompts (under a token budget) -> batched generation
         -> parse -> validate anchors against the diff -> deduplicate -> cap -> Review

As in reviewdog, where the diff comes from and where the review goes are passed in: the CLI reads a
file or git and prints a format; the webhook worker reads a pull request and posts to GitHub. Both
call ``run(source, backend, sink)`` (or ``review_diff`` directly) and differ only in what they pass.

Nothing is dropped silently: every file or hunk not reviewed is in ``Review.skipped`` with the
reason, every well-formed comment that cannot sit on a changed line is in ``Review.unanchored``
(the GitHub poster puts those in the review body), and comments removed as duplicates or over a cap
are counted. The work is bounded by a token budget, so a 50,000-line diff costs no more than a
normal one; the budget goes to code first (``bot.ranking``), and what it left out is reported with
the kind of file it was.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, cast

from bot.anchoring import DEFAULT_MAX_PER_HUNK, Scorer, answer_hunks, can_score
from bot.config import DEFAULT_MAX_NEW_TOKENS, DEFAULT_TOKEN_BUDGET, RepoConfig
from bot.diff import LEFT, RIGHT, Diff, FileDiff, Hunk, parse_diff
from bot.errors import ModelError, UsageError
from bot.exemplars import Fitted, Query, fit_prompt
from bot.json_types import JSONObject
from bot.ports import Backend
from bot.prompt import (
    ParseResult,
    PromptComment,
    PromptInput,
    normalize_body,
    parse_output,
    render_input,
    with_exemplars,
)
from bot.ranking import LINGUIST_ATTRIBUTES, FileRank, Linguist, rank
from bot.secrets import scrub_text

log = logging.getLogger(__name__)

# Tokens a prompt costs beyond what count_tokens sees (chat-template markers differ per model).
PROMPT_MARGIN_TOKENS = 16


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ReviewComment:
    """A comment ready to post. ``code`` is the text of the commented line (fingerprints use it, so
    a comment is recognised after lines shift); ``new_line`` is where it shows in the new file, for
    formats that only know the new file (SARIF, rdjson): for a LEFT comment, the line the deletion
    sits before. Unanchored comments have ``new_line`` None."""

    path: str
    line: int
    side: str
    body: str
    start_line: int | None = None
    code: str = ""
    new_line: int | None = None

    def to_dict(self) -> JSONObject:
        return asdict(self)


@dataclass(frozen=True)
class Skipped:
    """A file (``hunks`` empty) or some of its hunks (their headers) that were not reviewed."""

    path: str
    reason: str
    hunks: tuple[str, ...] = ()
    lines: int = 0  # diff lines left unreviewed

    def to_dict(self) -> JSONObject:
        return {"path": self.path, "reason": self.reason, "hunks": list(self.hunks), "lines": self.lines}


@dataclass
class Review:
    """What one review produced, and enough about how to trust it."""

    comments: list[ReviewComment] = field(default_factory=list)
    unanchored: list[ReviewComment] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    source: str = "<diff>"
    model: JSONObject = field(default_factory=dict)
    files_total: int = 0
    files_reviewed: int = 0
    hunks_total: int = 0
    hunks_reviewed: int = 0
    prompts: int = 0  # one per reviewed hunk, more where a hunk was split
    parse_failures: int = 0  # answers with lines the parser could not read
    answers_cut: int = 0  # answers that hit max_new_tokens before their end marker
    exemplars_trimmed: int = 0  # prompts shown fewer of the team's past reviews, to fit the model
    duplicates_dropped: int = 0
    over_cap_dropped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_budget: int = 0
    timing: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def nothing_to_review(self) -> bool:
        return self.hunks_total == 0

    @property
    def summary(self) -> str:
        """One paragraph a person reads first: what was found, what was not looked at, and why."""
        if self.nothing_to_review:
            extra = f" ({_skip_phrase(self.skipped)})" if self.skipped else ""
            return f"Nothing to review{extra}."
        n = len(self.comments)
        files = len({c.path for c in self.comments})
        parts = [
            f"{n} comment{'s' if n != 1 else ''}"
            + (f" on {files} file{'s' if files != 1 else ''}" if n else "")
            + (f", {len(self.unanchored)} more not on a changed line" if self.unanchored else "")
            + "."
        ]
        parts.append(
            f"Reviewed {self.hunks_reviewed} of {self.hunks_total} hunk{'s' if self.hunks_total != 1 else ''}"
            f" in {self.files_reviewed} of {self.files_total} file{'s' if self.files_total != 1 else ''}."
        )
        if self.skipped:
            parts.append(f"Skipped: {_skip_phrase(self.skipped)}.")
        dropped = []
        if self.duplicates_dropped:
            dropped.append(f"{self.duplicates_dropped} duplicate{'s' if self.duplicates_dropped != 1 else ''}")
        if self.over_cap_dropped:
            dropped.append(f"{self.over_cap_dropped} over the comment limits")
        if dropped:
            parts.append(f"Dropped {' and '.join(dropped)}.")
        if self.parse_failures:
            parts.append(f"{self.parse_failures} of {self.prompts} model answers were partly unreadable.")
        return " ".join(parts)

    def to_dict(self) -> JSONObject:
        return {
            "source": self.source,
            "summary": self.summary,
            "comments": [c.to_dict() for c in self.comments],
            "unanchored": [c.to_dict() for c in self.unanchored],
            "skipped": [s.to_dict() for s in self.skipped],
            "stats": {
                "files_total": self.files_total,
                "files_reviewed": self.files_reviewed,
                "hunks_total": self.hunks_total,
                "hunks_reviewed": self.hunks_reviewed,
                "prompts": self.prompts,
                "parse_failures": self.parse_failures,
                "answers_cut": self.answers_cut,
                "exemplars_trimmed": self.exemplars_trimmed,
                "duplicates_dropped": self.duplicates_dropped,
                "over_cap_dropped": self.over_cap_dropped,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "token_budget": self.token_budget,
            },
            "timing": dict(self.timing),
            "model": dict(self.model),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: JSONObject) -> Review:
        """The inverse of ``to_dict`` (a review saved as JSON, e.g. a webhook job's plan); extra keys
        such as a format's ``fingerprint`` are ignored."""
        comment_fields = set(ReviewComment.__dataclass_fields__)

        def comment(item: JSONObject) -> ReviewComment:
            return ReviewComment(**{k: v for k, v in item.items() if k in comment_fields})

        stats = {k: v for k, v in (data.get("stats") or {}).items() if k in cls.__dataclass_fields__}
        return cls(
            comments=[comment(c) for c in data.get("comments") or []],
            unanchored=[comment(c) for c in data.get("unanchored") or []],
            skipped=[
                Skipped(s["path"], s["reason"], tuple(s.get("hunks") or ()), int(s.get("lines") or 0))
                for s in data.get("skipped") or []
            ],
            source=data.get("source", "<diff>"),
            model=dict(data.get("model") or {}),
            timing=dict(data.get("timing") or {}),
            warnings=list(data.get("warnings") or []),
            **stats,
        )


def _skip_phrase(skipped: Sequence[Skipped]) -> str:
    """ "2 files (binary: 1, deleted: 1), 3 hunks (token budget)": short reasons, counted."""
    files = Counter(_short_reason(s.reason) for s in skipped if not s.hunks)
    hunks: Counter[str] = Counter()
    for s in skipped:
        if s.hunks:
            hunks[_short_reason(s.reason)] += len(s.hunks)
    out = []
    if files:
        total = sum(files.values())
        out.append(f"{total} file{'s' if total != 1 else ''} ({', '.join(f'{k}: {v}' for k, v in files.items())})")
    if hunks:
        total = sum(hunks.values())
        out.append(f"{total} hunk{'s' if total != 1 else ''} ({', '.join(f'{k}: {v}' for k, v in hunks.items())})")
    return ", ".join(out)


def _short_reason(reason: str) -> str:
    return reason.split(" (", 1)[0].split(":", 1)[0]


@dataclass(frozen=True)
class ReviewOptions:
    """Knobs of one review. ``from_config`` takes a repository's ``.revbot.yml``."""

    max_comments: int = 10
    max_comments_per_file: int = 3
    ignore_paths: tuple[str, ...] = ()
    default_ignores: bool = True
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    token_budget: int = DEFAULT_TOKEN_BUDGET
    scrub_secrets: bool = True
    # where and whether to comment (bot.anchoring): "constrained" scores every label of a hunk under
    # the model (backends that can, on prompt format 3) and comments where the confidence clears the
    # threshold: the larger of the version's calibrated one and ``min_confidence``; "free" lets the
    # model write its anchors
    anchors: str = "constrained"
    min_confidence: float | None = None
    max_comments_per_hunk: int = DEFAULT_MAX_PER_HUNK

    def __post_init__(self) -> None:
        for name in ("max_comments", "max_comments_per_file"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name.replace('_', ' ')} must be 0 or more, got {getattr(self, name)}")
        if self.max_new_tokens < 1:
            raise UsageError(f"max new tokens must be at least 1, got {self.max_new_tokens}")
        if self.token_budget < 1:
            raise UsageError(f"the token budget must be at least 1, got {self.token_budget}")
        if self.anchors not in ("constrained", "free"):
            raise UsageError(f"anchors must be 'constrained' or 'free', got {self.anchors!r}")
        if self.min_confidence is not None and not 0 <= self.min_confidence <= 1:
            raise UsageError(f"the minimum confidence must be from 0 to 1, got {self.min_confidence}")

    @classmethod
    def from_config(
        cls,
        config: RepoConfig,
        *,
        max_comments: int | None = None,
        max_comments_per_file: int | None = None,
        ignore_paths: Iterable[str] | None = None,
        default_ignores: bool | None = None,
        max_new_tokens: int | None = None,
        token_budget: int | None = None,
        scrub_secrets: bool | None = None,
    ) -> ReviewOptions:
        """The configuration's knobs; an override that is not None wins."""
        defaults = cls()
        return cls(
            max_comments=config.max_comments if max_comments is None else max_comments,
            max_comments_per_file=(
                config.max_comments_per_file if max_comments_per_file is None else max_comments_per_file
            ),
            ignore_paths=tuple(config.ignore_paths if ignore_paths is None else ignore_paths),
            default_ignores=config.default_ignores if default_ignores is None else default_ignores,
            max_new_tokens=defaults.max_new_tokens if max_new_tokens is None else max_new_tokens,
            token_budget=defaults.token_budget if token_budget is None else token_budget,
            scrub_secrets=defaults.scrub_secrets if scrub_secrets is None else scrub_secrets,
            min_confidence=config.min_confidence,
        )

    @property
    def repo_config(self) -> RepoConfig:
        return RepoConfig(ignore_paths=self.ignore_paths, default_ignores=self.default_ignores)


# a backend, or a zero-argument function that loads one (called only when there is something to review)
BackendOrFactory = Backend | Callable[[], Backend]


# --------------------------------------------------------------------------- sources and sinks


class DiffSource(Protocol):
    """Where a diff comes from (a file, stdin, git, a pull request). A source that can see the
    repository may also have ``attributes(paths) -> {path: Linguist}``: what its .gitattributes says
    of those paths, which the ranking of files honours (``run`` asks for it)."""

    def read(self) -> Diff: ...


class ReviewSink(Protocol):
    """Where a review goes (a stream in some format, a GitHub review)."""

    def write(self, review: Review) -> None: ...


@dataclass
class TextSource:
    """A diff already in memory (stdin, an HTTP response body)."""

    data: bytes | str
    name: str = "<stdin>"

    def read(self) -> Diff:
        return parse_diff(self.data, self.name)


@dataclass
class CallbackSink:
    """Hands the review to a function (the webhook worker's poster, tests)."""

    callback: Callable[[Review], object]

    def write(self, review: Review) -> None:
        self.callback(review)


# --------------------------------------------------------------------------- the pipeline


@dataclass
class _Job:
    """One prompt: a hunk of a file, or a piece of a hunk too large for one prompt."""

    file_index: int
    hunk_index: int
    path: str
    hunk: Hunk
    inp: PromptInput
    tokens: int
    exemplars_dropped: int = 0  # of the version's exemplars, left out for the prompt to fit


@dataclass(frozen=True)
class _Candidate:
    """A file to review, with its place in the diff and its rank (what the budget goes to first)."""

    index: int
    file: FileDiff
    rank: FileRank


def run(
    source: DiffSource,
    backend: BackendOrFactory,
    sink: ReviewSink | None = None,
    options: ReviewOptions | None = None,
) -> Review:
    """Read the diff, review it, hand the review to ``sink``; returns the review too.

    ``backend`` may be a zero-argument factory: it is called only when there is something to
    review, so an empty or fully ignored diff never loads a model.
    """
    started = time.perf_counter()
    diff = source.read()
    reader = getattr(source, "attributes", None)
    attributes = reader([f.path for f in diff.files]) if callable(reader) else None
    read_s = time.perf_counter() - started
    review = review_diff(diff, backend, options, attributes=attributes)
    review.timing = {"read": round(read_s, 6), **review.timing}
    review.timing["total"] = round(time.perf_counter() - started, 6)
    if sink is not None:
        sink.write(review)
    return review


def review_diff(
    diff: Diff,
    backend: BackendOrFactory,
    options: ReviewOptions | None = None,
    *,
    attributes: Mapping[str, Linguist] | None = None,
) -> Review:
    """Review the reviewable hunks of ``diff`` with ``backend``, best-ranked files first, until the
    token budget is spent. ``attributes``: what the repository's .gitattributes says of its paths
    (``adapters.sources.GitSource.attributes``, or ``bot.ranking.GitAttributes`` over the file's text); a file marked
    ``linguist-generated`` or ``linguist-vendored`` is skipped like the built-in vendored/generated
    paths, and one marked ``-linguist-generated``/``-linguist-vendored`` is reviewed even if a
    built-in pattern matches it. Deterministic for a greedy backend."""
    options = options or ReviewOptions()
    attributes = attributes or {}
    timing: dict[str, float] = {}
    clock = time.perf_counter()
    review = Review(source=diff.source, warnings=list(diff.warnings), token_budget=options.token_budget)

    # 1. which files to look at, in the order the budget is spent on them
    kept: list[tuple[int, FileDiff]] = []
    config = options.repo_config
    for index, f in enumerate(diff.files):
        reason = _file_skip_reason(f, config, attributes.get(f.path))
        if reason is not None:
            review.skipped.append(Skipped(f.path, reason, (), sum(len(h.lines) for h in f.hunks)))
            continue
        kept.append((index, f))
    ranked = rank(
        [f.path for _, f in kept],
        attributes,
        {f.path: line for _, f in kept if (line := _first_added_line(f)) is not None},
    )
    candidates = [_Candidate(kept[k][0], kept[k][1], file_rank) for k, file_rank in ranked]
    review.files_total = len(diff.files)
    review.hunks_total = sum(len(c.file.hunks) for c in candidates)
    timing["select"] = time.perf_counter() - clock
    if not candidates:
        review.timing = _rounded(timing)
        return review

    # 2. the model (a factory is only called now), then prompts under the per-hunk context limit
    #    and the per-review budget
    clock = time.perf_counter()
    model = _loaded(backend)
    timing["load"] = time.perf_counter() - clock
    review.model = _describe(model)
    clock = time.perf_counter()
    jobs = _plan(candidates, model, options, review)
    timing["prompts"] = time.perf_counter() - clock

    # 3. generation (the backend batches; one call keeps its length-sorted batching effective)
    clock = time.perf_counter()
    answers = _answers(jobs, model, options, review)
    timing["generate"] = time.perf_counter() - clock

    # 4. validate, deduplicate, cap
    clock = time.perf_counter()
    anchored: list[ReviewComment] = []
    unanchored: list[ReviewComment] = []
    for job, parsed in zip(jobs, answers):
        a, u = _place(parsed, job, diff, options)
        anchored += a
        unanchored += u
    review.prompts = len(jobs)
    review.exemplars_trimmed = sum(1 for job in jobs if job.exemplars_dropped)
    review.hunks_reviewed = len({(job.file_index, job.hunk_index) for job in jobs})
    review.files_reviewed = len({job.file_index for job in jobs})

    order = _Order(diff, {c.file.path: position for position, c in enumerate(candidates)})
    anchored, dup_a = _dedupe(sorted(anchored, key=order.key))
    unanchored, dup_u = _dedupe(sorted(unanchored, key=order.key))
    review.duplicates_dropped = dup_a + dup_u
    review.comments, over = _cap(anchored, options.max_comments, options.max_comments_per_file)
    review.unanchored, over_u = _cap(unanchored, options.max_comments, options.max_comments_per_file)
    review.over_cap_dropped = over + over_u
    timing["parse"] = time.perf_counter() - clock
    review.timing = _rounded(timing)
    return review


def constrained(backend: object, options: ReviewOptions) -> bool:
    """Whether anchors are chosen by the model's probabilities: asked for, the backend can score
    answers, and its model reads prompt format 3 (older adapters are served as they were)."""
    return (
        options.anchors == "constrained"
        and can_score(backend)
        and int(getattr(backend, "prompt_format_version", 0) or 0) >= 3
    )


def threshold_for(backend: object, options: ReviewOptions) -> float | None:
    """The version's calibrated threshold, raised (never lowered) by the repository's own."""
    values = [v for v in (getattr(backend, "threshold", None), options.min_confidence) if v is not None]
    return max(values) if values else None


def _answers(jobs: list[_Job], model: Backend, options: ReviewOptions, review: Review) -> list[ParseResult]:
    """Every job's answer, parsed against its hunk: constrained anchors where the backend can score
    them, else free-running generation."""
    if not jobs:
        return []
    if constrained(model, options):
        answers = answer_hunks(
            cast(Scorer, model),
            [job.inp for job in jobs],
            [job.hunk for job in jobs],
            threshold=threshold_for(model, options),
            max_new_tokens=options.max_new_tokens,
            max_per_hunk=options.max_comments_per_hunk,
        )
        review.prompt_tokens += sum(job.tokens for job in jobs)  # each prompt is read once to score its labels
        for answer in answers:
            review.prompt_tokens += answer.prompt_tokens
            review.completion_tokens += answer.completion_tokens
            review.answers_cut += int(answer.truncated)
        return [ParseResult(comments=list(a.comments), no_comment=not a.comments) for a in answers]
    generations = model.generate([job.inp for job in jobs], max_new_tokens=options.max_new_tokens)
    if len(generations) != len(jobs):
        raise ModelError(f"the model backend returned {len(generations)} answers for {len(jobs)} prompts")
    out = []
    for job, gen in zip(jobs, generations):
        text = getattr(gen, "text", gen if isinstance(gen, str) else "")
        review.prompt_tokens += int(getattr(gen, "prompt_tokens", 0) or 0)
        review.completion_tokens += int(getattr(gen, "completion_tokens", 0) or 0)
        if getattr(gen, "finish_reason", "stop") == "length":
            review.answers_cut += 1
        parsed = parse_output(text, job.hunk)
        if parsed.failures and not parsed.no_comment:
            review.parse_failures += 1
        out.append(parsed)
    return out


def render_with_exemplars(path: str, hunk: Hunk, backend: object, room: int) -> Fitted:
    """The prompt for ``hunk``, with the team's most similar past reviews when the backend's version
    has an exemplar index (format v3; at review time every indexed review is older than the diff), as
    many as fit: the least similar are dropped until the prompt costs at most ``room`` tokens, and no
    more than the row length the version was trained at while it shows any
    (``bot.exemplars.fit_prompt``, the rule training and evaluation follow). Not fitting even without
    exemplars: the bare prompt, ``fits`` False (the caller splits the hunk)."""
    inp = render_input(path, hunk)
    index, k = getattr(backend, "exemplars", None), int(getattr(backend, "exemplar_k", 0) or 0)
    if index is not None and k > 0:
        inp = with_exemplars(inp, index.top(Query(path, hunk.text()), k))
    trained = getattr(backend, "exemplar_max_length", None)  # compared without our safety margin, as in evaluation
    cap = trained + PROMPT_MARGIN_TOKENS if trained else None
    return fit_prompt(inp, lambda p: _prompt_tokens(cast(Backend, backend), p), room, cap)


def _loaded(backend: BackendOrFactory) -> Backend:
    """The backend, or what the factory loads (an object with ``generate`` is a backend, callable or not)."""
    if hasattr(backend, "generate") or not callable(backend):
        return cast(Backend, backend)
    return backend()


def _rounded(timing: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in timing.items()}


def _describe(backend: Backend) -> JSONObject:
    try:
        return dict(backend.describe())
    except Exception as exc:  # a report must not fail because a backend cannot describe itself
        log.debug("backend.describe() failed: %s", exc, exc_info=True)
        return {"model": type(backend).__name__}


def _file_skip_reason(f: FileDiff, config: RepoConfig, linguist: Linguist | None = None) -> str | None:
    if f.is_binary:
        return "binary file"
    if f.status == "deleted":
        return "deleted file"
    if f.is_symlink:
        return "symlink"
    ignored = config.ignored_by(f.path)
    if ignored is not None and ignored[1] == "config":
        return f"ignored by configuration (matches {ignored[0]!r})"
    if config.default_ignores and linguist is not None:
        for name, value in zip(LINGUIST_ATTRIBUTES[:2], (linguist.generated, linguist.vendored)):
            if value:
                return f"vendored or generated ({name} in .gitattributes)"
        if ignored is not None and False in (linguist.generated, linguist.vendored):
            ignored = None  # the repository says this path is its own code, whatever the pattern says
    if ignored is not None:
        return f"vendored or generated (matches {ignored[0]!r})"
    if not f.hunks:
        return {"renamed": "renamed without changes", "copied": "copied without changes"}.get(
            f.status, "no changed lines"
        )
    return None


def _first_added_line(f: FileDiff) -> str | None:
    """The file's line 1 when the diff shows it (a ``#!`` names the language of a script without an
    extension)."""
    first = f.hunks[0].lines[0] if f.hunks and f.hunks[0].lines else None
    return first.text if first is not None and first.kind in "+ " and first.new_no == 1 else None


def _prompt_tokens(backend: Backend, inp: PromptInput) -> int:
    counter = getattr(backend, "count_prompt_tokens", None)
    if counter is not None:
        return int(counter(inp)) + PROMPT_MARGIN_TOKENS
    return int(backend.count_tokens(inp.plain_text())) + PROMPT_MARGIN_TOKENS


def _plan(candidates: list[_Candidate], backend: Backend, options: ReviewOptions, review: Review) -> list[_Job]:
    """Render and count prompts hunk by hunk, best-ranked files first, until the budget is spent.

    A hunk larger than the model's context is split into pieces that fit (``Hunk.split``); a single
    line that alone does not fit is skipped with its reason. When the budget cannot pay for the next
    piece, the part of it that the rest of the budget pays for is still reviewed (a large hunk is cut,
    not dropped); then that hunk's remainder and everything after it is skipped and reported with
    the kind of file it is. Nothing after that point is even rendered, which is what bounds the time
    a huge diff takes.
    """
    per_prompt = int(getattr(backend, "max_context", 4096)) - options.max_new_tokens
    if per_prompt < 64:
        raise ModelError(
            f"the model takes {getattr(backend, 'max_context', '?')} tokens, too few for a prompt plus "
            f"{options.max_new_tokens} new tokens; lower max_new_tokens"
        )
    # Every rendered line costs at least two tokens (its label and its text), so a hunk of more
    # lines than this cannot fit; cutting it first keeps us from tokenizing megabytes at once.
    max_lines = max(1, per_prompt // 2)
    spent = 0
    jobs: list[_Job] = []
    exhausted = False
    budget_reason = f"token budget of {options.token_budget} tokens spent"
    too_long = f"a line too long for the model's context ({per_prompt} prompt tokens)"
    # (file index, reason) -> [(hunk index, lines left unreviewed)], in diff order
    skipped: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)

    for c in candidates:
        f, index = c.file, c.index
        for h_index, hunk in enumerate(f.hunks):
            if exhausted:
                skipped[(index, budget_reason)].append((h_index, len(hunk.lines)))
                continue
            pieces, unfit_lines = _fit(f.path, hunk, backend, per_prompt, max_lines)
            if unfit_lines:
                skipped[(index, too_long)].append((h_index, unfit_lines))
            for k, (fitted, piece) in enumerate(pieces):
                cost = fitted.tokens + options.max_new_tokens
                if spent + cost <= options.token_budget:
                    spent += cost
                    jobs.append(_job(index, h_index, f.path, piece, fitted))
                    continue
                exhausted = True
                head = _head_that_fits(f.path, piece, backend, options.token_budget - spent - options.max_new_tokens)
                if head is not None:
                    spent += head[0].tokens + options.max_new_tokens
                    jobs.append(_job(index, h_index, f.path, head[1], head[0]))
                left = sum(len(p.lines) for _, p in pieces[k:]) - (len(head[1].lines) if head else 0)
                if left:
                    skipped[(index, budget_reason)].append((h_index, left))
                break
    # report: a file none of whose hunks was reviewed, all for one reason, is skipped as a whole
    reviewed_files = {job.file_index for job in jobs}
    reasons_of: dict[int, list[str]] = defaultdict(list)
    for index, reason in skipped:
        reasons_of[index].append(reason)
    for c in candidates:
        f, index = c.file, c.index
        for reason in reasons_of.get(index, []):
            entries = skipped[(index, reason)]
            lines = sum(n for _, n in entries)
            whole = index not in reviewed_files and len(reasons_of[index]) == 1 and len(entries) == len(f.hunks)
            headers = () if whole else tuple(f.hunks[i].header for i, _ in entries)
            shown = f"{reason} ({c.rank.label})" if reason == budget_reason else reason
            review.skipped.append(Skipped(f.path, shown, headers, lines))
    return jobs


def _job(file_index: int, hunk_index: int, path: str, piece: Hunk, fitted: Fitted) -> _Job:
    return _Job(file_index, hunk_index, path, piece, fitted.prompt, fitted.tokens, fitted.dropped)


def _head_that_fits(path: str, piece: Hunk, backend: Backend, room: int) -> tuple[Fitted, Hunk] | None:
    """The longest leading part of ``piece`` whose prompt costs at most ``room`` tokens and that
    changes something: the whole piece with fewer exemplars first, then shorter heads; None when not
    even one line fits."""
    if room <= PROMPT_MARGIN_TOKENS:
        return None
    size = len(piece.lines)
    while size >= 1:
        head = piece if size == len(piece.lines) else piece.sub_hunk(0, size)
        fitted = render_with_exemplars(path, head, backend, room)
        if fitted.fits:
            return (fitted, head) if head.added or head.removed else None
        size = min(size - 1, int(size * room / fitted.tokens))  # shrink in proportion to the overshoot
    return None


def _fit(
    path: str, hunk: Hunk, backend: Backend, per_prompt: int, max_lines: int
) -> tuple[list[tuple[Fitted, Hunk]], int]:
    """(pieces of ``hunk`` that each fit one prompt, in order, each with as many exemplars as fit beside
    it; diff lines that fit nowhere). A hunk is split only when it does not fit without exemplars."""
    out: list[tuple[Fitted, Hunk]] = []
    unfit = 0
    pending = list(reversed(hunk.split(max_lines)))
    while pending:
        piece = pending.pop()
        fitted = render_with_exemplars(path, piece, backend, per_prompt)
        if fitted.fits:
            out.append((fitted, piece))
            continue
        if len(piece.lines) <= 1:
            unfit += len(piece.lines)
            continue
        # split in proportion to the overshoot, at least in halves
        size = max(1, min(len(piece.lines) // 2, int(len(piece.lines) * per_prompt / fitted.tokens * 0.9)))
        pending.extend(reversed(piece.split(size)))
    return out, unfit


def _place(
    parsed: ParseResult, job: _Job, diff: Diff, options: ReviewOptions
) -> tuple[list[ReviewComment], list[ReviewComment]]:
    """Anchor parsed comments on the diff. A range whose first line is not commentable is kept on
    its last line; anything else not commentable becomes unanchored (for the review body)."""
    anchored, unanchored = [], []
    candidates: list[tuple[PromptComment, bool]] = [(c, True) for c in parsed.comments]
    candidates += [(c, False) for c in parsed.invalid_anchors]
    for c, in_hunk in candidates:
        body = scrub_text(c.body) if options.scrub_secrets else c.body
        body = normalize_body(body or "")
        if not body:
            continue
        start = c.start_line
        ok = in_hunk and diff.is_commentable(job.path, c.line, c.side)
        if ok and start is not None and not diff.is_commentable(job.path, start, c.side):
            start = None
        if not ok and job.hunk.is_commentable(c.line, c.side) and diff.is_commentable(job.path, c.line, c.side):
            ok, start = True, None  # the range's start was outside the hunk: keep its last line
        if ok:
            line = job.hunk.line_at(c.line, c.side)
            anchored.append(
                ReviewComment(
                    job.path,
                    c.line,
                    c.side,
                    body,
                    start,
                    line.text if line else "",
                    _new_line(job.hunk, c.line, c.side),
                )
            )
        else:
            unanchored.append(ReviewComment(job.path, c.line, c.side, body, start))
    return anchored, unanchored


def _new_line(hunk: Hunk, line: int, side: str) -> int | None:
    """Where (line, side) shows in the new file: itself on RIGHT; for a deleted line, the new-file
    line it was replaced by or sits before (the previous one at the end of a hunk)."""
    if side == RIGHT:
        return line
    seen = False
    previous = None
    for ln in hunk.lines:
        if ln.kind != "-" and ln.new_no is not None:
            if seen:
                return ln.new_no
            previous = ln.new_no
        if ln.kind in "- " and ln.old_no == line and side == LEFT:
            if ln.kind == " ":
                return ln.new_no
            seen = True
    if previous is not None:
        return previous
    return max(1, hunk.new_start)


class _Order:
    """Review order: files as they were ranked (``rank_of``: path -> position; diff order for any
    other), comments by where their line is in the file's hunks. Caps keep what comes first, so
    comments on code win over comments on docs. Stable across runs, which keeps caps and output
    deterministic."""

    def __init__(self, diff: Diff, rank_of: Mapping[str, int] | None = None):
        self.diff = diff
        self.file_index: dict[str, int] = dict(rank_of or {})
        for i, f in enumerate(diff.files):
            self.file_index.setdefault(f.path, len(diff.files) + i)
        self._positions: dict[str, dict[tuple[int, str], int]] = {}

    def positions(self, path: str) -> dict[tuple[int, str], int]:
        if path not in self._positions:
            table: dict[tuple[int, str], int] = {}
            f = self.diff.file(path)
            pos = 0
            for hunk in f.hunks if f else []:
                for ln in hunk.lines:
                    pos += 1
                    if ln.kind in "+ " and ln.new_no is not None:
                        table.setdefault((ln.new_no, RIGHT), pos)
                    if ln.kind in "- " and ln.old_no is not None:
                        table.setdefault((ln.old_no, LEFT), pos)
            self._positions[path] = table
        return self._positions[path]

    def key(self, c: ReviewComment) -> tuple[int, int, int, str]:
        """Sort key; comments on one line keep the order the model gave them (sorting is stable)."""
        pos = self.positions(c.path).get((c.line, c.side), 10**9)
        return (self.file_index.get(c.path, 10**9), pos, c.line, c.side)


def _same_body(body: str) -> str:
    return re.sub(r"\s+", " ", body).strip().casefold()


def _dedupe(comments: Iterable[ReviewComment]) -> tuple[list[ReviewComment], int]:
    seen: set[tuple[str, int, str, str]] = set()
    out, dropped = [], 0
    for c in comments:
        key = (c.path, c.line, c.side, _same_body(c.body))
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        out.append(c)
    return out, dropped


def _cap(comments: list[ReviewComment], total: int, per_file: int) -> tuple[list[ReviewComment], int]:
    kept: list[ReviewComment] = []
    per: Counter[str] = Counter()
    for c in comments:
        if len(kept) >= total or per[c.path] >= per_file:
            continue
        per[c.path] += 1
        kept.append(c)
    return kept, len(comments) - len(kept)
