"""THE prompt contract: the one place that turns a hunk into model input and model output back into
comments anchored to (line, side). Training, evaluation and review all go through it, and every
adapter records PROMPT_FORMAT_VERSION so a model is never served a format it was not trained on.

Format version 1
----------------
Input (user part): the file path, the hunk header, then every hunk line with an explicit anchor
label, ``R<n>`` for a line of the new file (added or context) and ``L<n>`` for a deleted line::

    File: src/app.py
    @@ -10,3 +10,4 @@ def load(path):
    R10  with open(path) as fh:
    L11 -    data = fh.read()
    R11 +    data = fh.read().strip()

Answer: one block per comment, ``<anchor>: <first line>`` at the start of a line, further lines of
the same comment indented by two spaces; a range is ``R10-12``. Or the explicit ``NO COMMENT``.
The answer always ends with a line holding only ANSWER_END::

    R11: Strip in the parser, not here.
      ```suggestion
      data = fh.read()
      ```
    </review>

Small models break formats, so parsing is tolerant: unknown lines are skipped and counted, never
raised; the caller validates every anchor against the diff before anything is posted.

Format version 2
----------------
The same input and answer as version 1 under a system prompt that an untuned small instruct model
can follow: what the labels mean, what to answer, and that silence is an answer. An untuned model
also gets a few worked examples (``FEW_SHOT``) as earlier chat turns, so "tuned beats base" compares
a trained model with a fairly prompted one; a trained adapter is served without them, as it was
trained. Every version in SUPPORTED_PROMPT_FORMATS can still be served: ``for_model`` swaps in the
system prompt of the version a model was trained with (v1 adapters keep working).

Format version 3
----------------
Version 2 with the team's own past reviews beside the hunk (``bot.exemplars``): the k most similar
earlier commented hunks, each as a few labelled lines and the comment the team wrote, under
``EXEMPLARS_HEADER`` in the last user turn, before ``HUNK_HEADER`` and the hunk. Everything every
prompt shares (system text, worked examples) comes first, so the prompts of a batch share a token
prefix. A model that was not trained on the format (``few_shot``) gets the same exemplars as
earlier chat turns after the worked examples instead; a v1/v2 adapter gets none, as before.
``PromptInput.answer_prefix`` starts the answer for the model (a chosen anchor, ``R12:``), whose
body it then writes.

Format version 4
----------------
Version 3's input; the answer names a line by quoting it instead of by its label. Each comment is
``QUOTE_MARK`` and the commented line as the hunk shows it (its ``+``, ``-`` or space sign, then its
code, cut to ``QUOTE_CHARS``), then the comment on the lines after it::

    >>> +    data = fh.read().strip()
    Strip in the parser, not here.
    </review>

A small model matches a label to its line poorly (it wrote the team's comment one line off); quoting
the line is copying, which it does well, and the code it quotes is what the comment is about. The
parse maps a quote back to the last line of the hunk that shows it; a quote no line shows is an
invalid anchor. A range comment keeps its label form (``R10-12: ...``). The parse reads both answer forms,
so every version's adapter is parsed by one function; what differs per version is the answer a
model is trained on and the answer start a chosen anchor gets (``bot.anchoring.candidates``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from bot.diff import LEFT, RIGHT, Hunk, Line

PROMPT_FORMAT_VERSION = 4
SUPPORTED_PROMPT_FORMATS = (1, 2, 3, 4)
QUOTE_MARK = ">>> "
QUOTE_CHARS = 80  # a quote is the line's sign and code, cut here: long lines are told apart by then
ANSWER_END = "</review>"
NO_COMMENT = "NO COMMENT"
ANSWER_HEADER = "### Review"
EXEMPLARS_HEADER = "Past reviews by this team on similar code:"
HUNK_HEADER = "Review this hunk:"

SYSTEM_PROMPTS = {
    1: (
        "You review code changes for this team, in the team's own style. "
        "Comment only where a reviewer on this team would. "
        "Write each comment as `R<n>: text` for line n of the new file or `L<n>: text` for a deleted "
        "line n, indenting further lines of a comment by two spaces. "
        f"If nothing needs saying, answer `{NO_COMMENT}`. End with `{ANSWER_END}`."
    ),
    2: (
        "You review one diff hunk as a reviewer on this team would. Each line starts with a label: "
        "R<n> is line n of the new file, L<n> is deleted line n of the old file. For each line that "
        "needs a comment, answer `R<n>: comment`. If no line needs one, answer `NO COMMENT`. "
        f"End your answer with `{ANSWER_END}`."
    ),
    3: (
        "You review one diff hunk as a reviewer on this team would. Each line starts with a label: "
        "R<n> is line n of the new file, L<n> is deleted line n of the old file. Past reviews by this "
        "team on similar code may come first: write like them. For each line of the hunk that needs a "
        "comment, answer `R<n>: comment`. If no line needs one, answer `NO COMMENT`. "
        f"End your answer with `{ANSWER_END}`."
    ),
    4: (
        "You review one diff hunk as a reviewer on this team would. Past reviews by this team on "
        "similar code may come first: write like them. For each line of the hunk that needs a comment, "
        f"write `{QUOTE_MARK.strip()}` and that line as the hunk shows it (its sign and code), then the comment "
        f"on the next line. If no line needs one, answer `{NO_COMMENT}`. End your answer with `{ANSWER_END}`."
    ),
}
SYSTEM_PROMPT = SYSTEM_PROMPTS[PROMPT_FORMAT_VERSION]

_SIDE_LETTER = {RIGHT: "R", LEFT: "L"}
_LETTER_SIDE = {"R": RIGHT, "L": LEFT}
_ANCHOR = re.compile(
    r"^(?:[-*]\s+)?[\[(`]?(?P<side>[LR])(?P<first>\d{1,7})(?:\s*-\s*[LR]?(?P<last>\d{1,7}))?[\])`]?\s*:[ \t]?(?P<body>.*)$"
)
MAX_COMMENTS_PER_HUNK = (
    3  # an answer with more is cut there: a hunk rarely needs more, a looping model always writes more
)
_NO_COMMENT = re.compile(r"^\W*no[ _-]?comments?\W*$", re.I)


class Tokenizer(Protocol):
    """What prompt rendering needs from a model's tokenizer: its chat template (None or empty for a
    plain model) and a way to apply it to a conversation."""

    @property
    def chat_template(self) -> str | None: ...

    def apply_chat_template(
        self, conversation: list[dict[str, str]], /, *, tokenize: bool, add_generation_prompt: bool
    ) -> str: ...


class CommentLike(Protocol):
    """A comment anchored in a hunk (read-only, so frozen records such as ``PromptComment`` qualify)."""

    @property
    def line(self) -> int: ...

    @property
    def side(self) -> str: ...

    @property
    def body(self) -> str: ...

    @property
    def start_line(self) -> int | None: ...


@dataclass(frozen=True)
class PromptComment:
    """A comment as the prompt contract sees it: anchored within one hunk."""

    line: int
    side: str
    body: str
    start_line: int | None = None  # first line of a range, same side, < line

    def key(self) -> tuple[int, str, str]:
        return (self.line, self.side, self.body)


@dataclass(frozen=True)
class Exemplar:
    """A past review of the team, compact: the file, a few labelled lines ending at the commented one,
    and the answer the team gave (``R12: text``)."""

    path: str
    code: str
    answer: str
    label_answer: str = ""  # the answer as formats 1-3 write it (``answer`` is the current format's)

    def user_text(self) -> str:
        return f"File: {self.path}\n{self.code}"

    def for_version(self, version: int) -> Exemplar:
        """This exemplar as a model trained on prompt format ``version`` reads it."""
        if version < 4 and self.label_answer:
            return replace(self, answer=self.label_answer)
        return self


@dataclass(frozen=True)
class PromptInput:
    """What a backend receives for one hunk. ``shots`` are worked (user, answer) pairs shown before
    it, for models that were not trained on the format; ``exemplars`` the team's similar past reviews
    (format v3), shown in the last user turn before the hunk; ``answer_prefix`` the start of the
    answer, written for the model (constrained anchors)."""

    system: str
    user: str
    shots: tuple[tuple[str, str], ...] = ()
    exemplars: tuple[Exemplar, ...] = ()
    answer_prefix: str = ""

    def user_text(self) -> str:
        """The last user turn: the exemplars (if any), then the hunk."""
        if not self.exemplars:
            return self.user
        shown = "\n\n".join(f"{ex.user_text()}\n{ex.answer}" for ex in self.exemplars)
        return f"{EXEMPLARS_HEADER}\n\n{shown}\n\n{HUNK_HEADER}\n{self.user}"

    def messages(self) -> list[dict[str, str]]:
        turns = [{"role": "system", "content": self.system}]
        for user, answer in self.shots:
            turns += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        return turns + [{"role": "user", "content": self.user_text()}]

    def plain_text(self) -> str:
        """Prompt for plain (non-chat) models; the answer starts right after it."""
        shots = "".join(f"{user}\n\n{ANSWER_HEADER}\n{answer}\n\n" for user, answer in self.shots)
        return f"{self.system}\n\n{shots}{self.user_text()}\n\n{ANSWER_HEADER}\n{self.answer_prefix}"


@dataclass
class ParseResult:
    comments: list[PromptComment] = field(default_factory=list)
    no_comment: bool = False
    failures: int = 0  # lines or blocks that could not be understood
    invalid_anchors: list[PromptComment] = field(default_factory=list)  # well-formed, but not in the hunk

    @property
    def failed(self) -> bool:
        """Nothing usable came out although something was expected."""
        return self.failures > 0 and not self.comments and not self.no_comment


# --------------------------------------------------------------------------- rendering


def anchor_label(line: int, side: str) -> str:
    return f"{_SIDE_LETTER[side]}{line}"


def quote(line: Line) -> str:
    """How a format-4 answer names ``line``: its sign and code as the hunk shows them, cut to QUOTE_CHARS."""
    return (line.kind + line.text)[:QUOTE_CHARS].rstrip()


def quoted_lines(hunk: Hunk) -> list[tuple[str, int, str]]:
    """(quote, line, side) of every line the prompt shows, in hunk order; where several lines show the
    same quote only the last is kept, the line the parse maps that quote to (``find_quote``)."""
    last = {quote(ln): i for i, ln in enumerate(hunk.lines)}
    return [(quote(ln), ln.number, ln.side) for i, ln in enumerate(hunk.lines) if last[quote(ln)] == i]


def find_quote(hunk: Hunk, text: str) -> tuple[int, str] | None:
    """(line, side) of the line of ``hunk`` that ``text`` quotes: exactly, else with white space
    collapsed; None when no line shows it. Where several lines show it, the last: the lines a hunk
    repeats are mostly block ends and blank lines, and a comment sits at the end of what it is about
    (a forge's comment context ends at the commented line)."""
    wanted = text[:QUOTE_CHARS].rstrip()
    loose = " ".join(wanted.split())
    for same in (lambda q: q == wanted, lambda q: bool(loose) and " ".join(q.split()) == loose):
        found = [ln for ln in hunk.lines if same(quote(ln))]
        if found:
            return found[-1].number, found[-1].side
    return None


def render_hunk(hunk: Hunk) -> str:
    rows = [hunk.header]
    for ln in hunk.lines:
        label = anchor_label(ln.old_no, LEFT) if ln.kind == "-" else anchor_label(ln.new_no, RIGHT)  # type: ignore[arg-type]
        rows.append(f"{label} {ln.kind}{ln.text}")
    return "\n".join(rows)


def render_input(path: str, hunk: Hunk, context: str | None = None) -> PromptInput:
    """The model input for one hunk of ``path``. ``context`` is optional extra text shown above it."""
    parts = [f"File: {path}"]
    if context:
        parts.append(f"Context:\n{context.rstrip()}")
    parts.append(render_hunk(hunk))
    return PromptInput(SYSTEM_PROMPT, "\n".join(parts))


def with_exemplars(inp: PromptInput, exemplars: Sequence[Exemplar]) -> PromptInput:
    """``inp`` with the team's past reviews shown before its hunk (format v3)."""
    return replace(inp, exemplars=tuple(exemplars))


def with_answer_prefix(inp: PromptInput, prefix: str) -> PromptInput:
    """``inp`` with its answer started for the model (``R12:``): the model writes the rest."""
    return replace(inp, answer_prefix=prefix)


def for_model(inp: PromptInput, version: int, *, few_shot: bool = False) -> PromptInput:
    """``inp`` as a model trained on prompt format ``version`` must see it. Input and answer are the
    same in every supported version; the system prompt differs, so the contract's own is swapped for
    the version's (a caller's own system text is left as it is). Exemplars: a v3 model reads them
    before the hunk; an untuned model (``few_shot``) gets the worked examples and then the exemplars
    as earlier turns; a v1/v2 adapter never saw them and gets none."""
    if version not in SYSTEM_PROMPTS:
        raise ValueError(f"unknown prompt format version {version}")
    system = SYSTEM_PROMPTS[version] if inp.system in SYSTEM_PROMPTS.values() else inp.system
    exemplars = tuple(ex.for_version(version) for ex in inp.exemplars)
    if few_shot:
        turns = few_shot_examples(version) + tuple((ex.user_text(), f"{ex.answer}\n{ANSWER_END}") for ex in exemplars)
        return PromptInput(system, inp.user, turns, (), inp.answer_prefix)
    return PromptInput(system, inp.user, (), exemplars if version >= 3 else (), inp.answer_prefix)


# Worked examples for untuned models: short, generic, one of each answer kind (a comment, silence,
# a comment on a later line), in the exact format and through the same renderer as real hunks.
FEW_SHOT = (
    (
        "app/client.py",
        '@@ -30,3 +30,4 @@ def fetch_rates(base_url):\n     url = f"{base_url}/rates"\n'
        "-    resp = requests.get(url)\n+    resp = requests.get(url, headers=HEADERS)\n+    resp.raise_for_status()\n"
        "     return resp.json()",
        ((31, "Pass a timeout; without one a stalled server hangs this worker."),),
    ),
    (
        "app/report.py",
        "@@ -12,2 +12,2 @@ class Report:\n     def title(self):\n-        return self.name.title()\n"
        "+        return self.name.strip().title()",
        (),
    ),
    (
        "app/orders.py",
        "@@ -51,2 +51,3 @@ def find_orders(db, customer):\n"
        '-    rows = db.execute("SELECT * FROM orders")\n'
        "+    query = \"SELECT * FROM orders WHERE customer = '%s'\" % customer\n"
        "+    rows = db.execute(query)\n     return [Order(*row) for row in rows]",
        ((51, "Pass the customer as a query parameter; formatting it into the SQL allows injection."),),
    ),
)


def few_shot_examples(version: int = PROMPT_FORMAT_VERSION) -> tuple[tuple[str, str], ...]:
    """(user text, answer) pairs for ``PromptInput.shots``, answered in prompt format ``version``."""
    from bot.diff import parse_hunk

    shots = []
    for path, hunk_text, notes in FEW_SHOT:
        comments = [PromptComment(line, RIGHT, body) for line, body in notes]
        hunk = parse_hunk(hunk_text)
        shots.append((render_input(path, hunk).user, render_answer(comments, hunk, version)))
    return tuple(shots)


def normalize_body(body: str) -> str:
    """Canonical body: LF line ends, no trailing spaces, no blank lines at either end."""
    lines = [ln.rstrip() for ln in body.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def render_target(
    comments: Sequence[CommentLike], hunk: Hunk | None = None, version: int = PROMPT_FORMAT_VERSION
) -> str:
    """The answer a model is trained to give for these comments (without ANSWER_END). From format 4 a
    comment names its line by quoting it from ``hunk``; without the hunk, for a line it does not show,
    and for a range (``R10-12:``, a quote names one line) by its label, as formats 1-3 do."""
    blocks = []
    for c in canonical(comments):
        first, *rest = c.body.split("\n")
        more = [("  " + ln) if ln else "" for ln in rest]
        quotable = hunk is not None and version >= 4 and c.start_line is None
        line = hunk.line_at(c.line, c.side) if quotable and hunk is not None else None
        if line is not None:
            blocks.append("\n".join([f"{QUOTE_MARK}{quote(line)}", first, *more]))
            continue
        label = anchor_label(c.line, c.side)
        if c.start_line is not None:
            label = f"{anchor_label(c.start_line, c.side)}-{c.line}"
        blocks.append("\n".join([f"{label}: {first}", *more]))
    return "\n".join(blocks) if blocks else NO_COMMENT


def canonical(comments: Iterable[CommentLike]) -> list[PromptComment]:
    """Comments as the contract carries them: normalised bodies, empty ones and duplicates dropped,
    a one-line range collapsed to a single line."""
    out = []
    for c in comments:
        body = normalize_body(c.body)
        start = getattr(c, "start_line", None)
        if start is not None and start >= c.line:
            start = None
        if body:
            out.append(PromptComment(c.line, c.side, body, start))
    return _dedupe(out)


def render_answer(
    comments: Sequence[CommentLike], hunk: Hunk | None = None, version: int = PROMPT_FORMAT_VERSION
) -> str:
    """Target plus the end marker: exactly what training puts after the prompt."""
    return f"{render_target(comments, hunk, version)}\n{ANSWER_END}"


def prompt_text(inp: PromptInput, tokenizer: Tokenizer | None = None) -> str:
    """Text fed to a local model: its chat template when it has one, else the plain format; then the
    answer prefix, if any."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(inp.messages(), tokenize=False, add_generation_prompt=True)
        return text + inp.answer_prefix
    return inp.plain_text()


def training_text(
    inp: PromptInput,
    comments: Sequence[CommentLike],
    tokenizer: Tokenizer | None = None,
    hunk: Hunk | None = None,
    version: int = PROMPT_FORMAT_VERSION,
) -> tuple[str, str]:
    """(prompt, answer) for training in prompt format ``version``: loss goes on the answer only.
    ``hunk`` is the hunk the prompt shows, whose lines a format-4 answer quotes."""
    return prompt_text(inp, tokenizer), render_answer(comments, hunk, version)


# --------------------------------------------------------------------------- parsing


def cut_at_end(text: str) -> str:
    """Output up to the first line that is only ANSWER_END (at column 0: an indented one is body text)."""
    lines = text.replace("\r\n", "\n").split("\n")
    kept = []
    for ln in lines:
        if ln.rstrip() == ANSWER_END:
            break
        kept.append(ln)
    return "\n".join(kept)


def degenerate_at(text: str, max_comments: int = MAX_COMMENTS_PER_HUNK) -> int | None:
    """Where a degenerate answer should be cut (an index into ``text``), or None when it is sound.

    Small models loop: ``R75:\nR76:\nR77:...`` (anchors without bodies) or the same comment again
    and again. The cut falls at the start of the first comment past ``max_comments``, of an anchor
    whose body is empty and that is followed by another anchor, or of a comment repeating an earlier
    one's text. Only complete lines are judged, so a generator can call this at every new line and
    stop there (``adapters.decoding``)."""
    offset = 0
    count = 0
    bodies: set[str] = set()
    empty_anchor_at: int | None = None
    quote_at: int | None = None  # a quote (format 4) whose body has not started yet
    complete = text.split("\n")[:-1]  # the last piece has no newline yet
    for raw in complete:
        start, offset = offset, offset + len(raw) + 1
        quoted = _is_quote(raw)
        match = None if quoted else _ANCHOR.match(raw)
        if not quoted and not match:
            if quote_at is not None and raw.strip():
                body = " ".join(raw.split()).casefold()
                if body in bodies:
                    return quote_at
                bodies.add(body)
                quote_at = None
            elif raw.strip():
                empty_anchor_at = None
            continue
        if empty_anchor_at is not None:
            return empty_anchor_at
        if quote_at is not None:
            return quote_at
        count += 1
        if quoted:
            if count > max_comments:
                return start
            quote_at = start
            continue
        assert match is not None
        body = " ".join(match.group("body").split()).casefold()
        if count > max_comments or (body and body in bodies):
            return start
        bodies.add(body)
        empty_anchor_at = start if not body else None
    return None


def _is_quote(raw: str) -> bool:
    return raw.startswith(QUOTE_MARK) or raw.rstrip() == QUOTE_MARK.strip()


def parse_output(text: str | None, hunk: Hunk | None = None) -> ParseResult:
    """Model output -> comments. Never raises; what cannot be read is counted in ``failures``.

    Both answer forms are read: ``R<n>: body`` (formats 1-3) and a quoted line with the body after it
    (format 4), which needs ``hunk`` to find the line; a quote no line of the hunk shows is an
    invalid anchor (line 0). With ``hunk``, comments whose anchor is not in the hunk are moved to
    ``invalid_anchors``.
    """
    result = ParseResult()
    body_lines: list[str] | None = None
    current: tuple[int, str, int | None] | None = None  # (line, side, start) of the comment being read
    unresolved: list[PromptComment] = []

    def close() -> None:
        nonlocal current, body_lines
        if current is not None and body_lines is not None:
            body = normalize_body("\n".join(body_lines))
            if body:
                line, side, start = current
                (unresolved if line == 0 else result.comments).append(PromptComment(line, side, body, start))
            else:
                result.failures += 1
        current, body_lines = None, None

    cleaned = cut_at_end(text or "")
    if cleaned.strip().startswith(ANSWER_HEADER):
        cleaned = cleaned.strip()[len(ANSWER_HEADER) :]
    if not cleaned.strip():
        result.failures += 1
        return result
    cleaned = _unwrap_fence(cleaned)
    for raw in cleaned.split("\n"):
        if _is_quote(raw):
            close()
            found = find_quote(hunk, raw[len(QUOTE_MARK) :]) if hunk is not None else None
            current = (found[0], found[1], None) if found else (0, RIGHT, None)
            body_lines = []
            continue
        match = _ANCHOR.match(raw)
        if match:
            close()
            side = _LETTER_SIDE[match.group("side")]
            first, last = int(match.group("first")), match.group("last")
            line, start = (int(last), first) if last is not None else (first, None)
            if start is not None and start >= line:
                start, line = (None, first) if start == line else (line, start)
            current = (line, side, start)
            body_lines = [match.group("body")]
        elif body_lines is not None:
            body_lines.append(raw[2:] if raw.startswith("  ") else raw)
        elif _NO_COMMENT.match(raw.strip()):
            result.no_comment = True
        elif raw.strip():
            result.failures += 1
    close()
    if result.comments:
        result.no_comment = False
    result.comments = _dedupe(result.comments)
    if hunk is not None:
        valid: list[PromptComment] = []
        invalid: list[PromptComment] = []
        for c in result.comments:
            ok = hunk.is_commentable(c.line, c.side) and (
                c.start_line is None or hunk.is_commentable(c.start_line, c.side)
            )
            (valid if ok else invalid).append(c)
        result.comments, result.invalid_anchors = valid, invalid
    result.invalid_anchors += _dedupe(unresolved)
    return result


_WRAPPING_FENCE = re.compile(r"^(`{3,}|~{3,})[\w+-]*\s*$")


def _unwrap_fence(text: str) -> str:
    """Chat models like to put the whole answer in a code block; take it out. Only a fence at
    column 0 wrapping the entire answer counts: fences inside comments are indented, and a comment
    never starts with one."""
    lines = text.strip("\n").split("\n")
    if len(lines) >= 2:
        opening = _WRAPPING_FENCE.match(lines[0])
        if opening and lines[-1].rstrip() == opening.group(1):
            return "\n".join(lines[1:-1])
    return text


def _dedupe(comments: Iterable[PromptComment]) -> list[PromptComment]:
    seen: set[tuple[int, str, str]] = set()
    out = []
    for c in comments:
        if c.key() not in seen:
            seen.add(c.key())
            out.append(c)
    return out
