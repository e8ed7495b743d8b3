"""Dataset formats: files of review examples in other shapes, read into and written from the example
schema (bot.examples). Every format is one ``DatasetFormat`` in ``FORMATS``, the registry that
import, export, training and evaluation all read; ``get_format`` names the known formats when asked
for another. No I/O here: records are read from a stream the caller opened (``parse_dataset``;
``adapters.files.read_dataset`` opens a path), storing what was read is harvest's (`revbot
dataset import`), writing records to a file or stdout is the caller's.

Formats read
  jsonl         our example schema (bot.examples), or any ``diff_hunk + comment`` JSONL with a
                field map (``hunk=code,comment=comment,path=file_path,line=line_number,pr=pr_number,
                time=comment_created_at,repo=repo``; also ``id``, ``side``, ``start_line``; dotted
                names reach into nested objects). The comment sits on ``line`` when the hunk has it,
                else on the hunk's last line (GitHub's diff_hunk ends at the commented line).
  crc           the crc-py dataset (busraicoz/crc-py-dataset): ``code`` is GitHub's diff_hunk,
                ``line_number`` the comment's line on the side of that last line. The comment is
                anchored on the hunk's last line. Repairs, each counted: hunks whose line breaks
                were flattened to spaces and comments that were lower-cased or lost their
                suggestion blocks are restored from the record's ``enriched`` text when that text
                matches; a doubled ``@@ @@`` header prefix is removed. The rows are also returned
                as review comments (source ``import:crc``) for the store.
  codereviewer  CodeReviewer's ``msg`` files (``patch`` = one hunk, ``msg`` = the comment, ``id``,
                ``y``, ``oldf``, ``lang``, ``proj``). The comment addresses the whole hunk, so it is
                anchored on the hunk's last changed line; an empty ``msg`` or ``y == 0`` is a negative
                example. The file path is not in the data: it is ``unknown`` plus the language's
                extension.
  alpaca, sharegpt, openai  what export writes (below); records without a ``revbot`` block get
                the repo from --repo, PR 0 and an id from their content.

Formats written (built from the prompt contract, so training elsewhere sees what revbot trains on)
  alpaca    {"instruction": system prompt, "input": the rendered hunk, "output": answer + ANSWER_END}
  sharegpt  {"conversations": [{"from": "system"|"human"|"gpt", "value": ...}]}
  openai    {"messages": [{"role": "system"|"user"|"assistant", "content": ...}]}
  jsonl     the example schema itself
Each record carries a ``revbot`` block (id, repo, pr, created_at, source, meta, and the raw hunk
only where the rendering cannot give it back exactly) so export -> import returns the same
examples; ``meta=False`` leaves it out for tools that refuse unknown keys.

A malformed record raises DataError naming file:line; ``skip_bad`` skips it and counts why.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import IO

from bot.diff import HUNK_HEADER, LEFT, RIGHT, Hunk, parse_hunk
from bot.errors import DataError, DiffError, UsageError
from bot.examples import Example, ExampleComment, example_id
from bot.json_types import JSON, JSONObject
from bot.prompt import ANSWER_END, SYSTEM_PROMPTS, PromptInput, canonical, normalize_body, parse_output
from bot.records import StoredComment, utc_timestamp
from bot.review_tools import review_tool_stamp
from bot.templates import find_templates

FIELD_MAP_KEYS = ("hunk", "comment", "path", "line", "pr", "time", "repo", "id", "side", "start_line")
CRC_FIELD_MAP = {
    "hunk": "code",
    "comment": "comment",
    "path": "file_path",
    "line": "line_number",
    "pr": "pr_number",
    "time": "comment_created_at",
    "repo": "repo",
    "id": "comment_id",
}
MAX_HUNK_LINES = 200
DEFAULT_REPO = "imported"
_EXTENSIONS = {
    "py": "py",
    "python": "py",
    "java": "java",
    "go": "go",
    "js": "js",
    "javascript": "js",
    "ts": "ts",
    "c": "c",
    "cpp": "cpp",
    "c++": "cpp",
    "cs": "cs",
    "c#": "cs",
    "rb": "rb",
    "ruby": "rb",
    "php": "php",
    "rust": "rs",
    "rs": "rs",
    "kotlin": "kt",
    "swift": "swift",
    "scala": "scala",
}


class _Bad(Exception):
    """One bad record: ``reason`` is the short category counted with ``skip_bad``."""

    def __init__(self, reason: str, message: str | None = None):
        self.reason = reason
        super().__init__(message or reason)


@dataclass
class ReadContext:
    """What a record reader is given besides the record: where it is (``source``:``line``), the
    repository for records that name none, the field map of mapped JSONL, and the counters and
    review comments it adds to."""

    source: str
    default_repo: str = DEFAULT_REPO
    field_map: Mapping[str, str] | None = None
    line: int = 0
    notes: Counter[str] = field(default_factory=Counter)
    comments: list[StoredComment] = field(default_factory=list)


RecordReader = Callable[[JSONObject, ReadContext], Example]
"""One decoded record -> one Example; a bad record raises DataError (or the module's own _Bad)."""
RecordWriter = Callable[[Example, bool], JSONObject]
"""One Example -> one JSON object; the flag says whether to add the ``revbot`` block."""


@dataclass(frozen=True)
class DatasetFormat:
    """A dataset format: its name, a line about it, and how one record is read and written (None
    where the format is read only or written only)."""

    name: str
    summary: str
    read: RecordReader | None = None
    write: RecordWriter | None = None


@dataclass
class ImportResult:
    path: str
    fmt: str
    records: int = 0
    examples: list[Example] = field(default_factory=list)
    comments: list[StoredComment] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> records skipped (skip_bad)
    notes: Counter[str] = field(default_factory=Counter)  # repairs and anchoring decisions, per record
    errors: list[str] = field(default_factory=list)  # the first messages of skipped records
    duplicates: list[str] = field(default_factory=list)  # file:line of records dropped or replaced as duplicates
    tool_comments: Counter[str] = field(default_factory=Counter)  # AI review tool -> records dropped as its comments
    templated: Counter[str] = field(default_factory=Counter)  # template skeleton -> comments dropped (bot.templates)
    written: tuple[int, int] = (0, 0)  # (inserted, updated) examples, set by whoever stores them

    @property
    def positives(self) -> int:
        return sum(1 for e in self.examples if not e.is_negative)

    @property
    def negatives(self) -> int:
        return len(self.examples) - self.positives

    def to_dict(self) -> JSONObject:
        return {
            "file": self.path,
            "format": self.fmt,
            "records": self.records,
            "examples": len(self.examples),
            "positive": self.positives,
            "negative": self.negatives,
            "inserted": self.written[0],
            "updated": self.written[1],
            "comments_stored": len(self.comments),
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),
            "errors": self.errors,
            "duplicates": self.duplicates,
            "review_tool_comments_dropped": dict(self.tool_comments),
            "templated_comments_dropped": dict(self.templated),
        }

    def text(self) -> str:
        lines = [
            f"{self.path}: {self.records} record(s) read as {self.fmt}: {len(self.examples)} example(s) "
            f"({self.positives} positive, {self.negatives} negative); {self.written[0]} new and {self.written[1]} "
            "updated in the store" + (f"; {len(self.comments)} review comment(s) stored" if self.comments else "")
        ]
        if self.skipped:
            lines.append(
                f"  skipped {sum(self.skipped.values())}: "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
            )
            lines += [f"    {e}" for e in self.errors[:5]]
        bots = sum(self.tool_comments.values())
        if bots:
            lines.append(
                f"  AI review tool comments dropped {bots}: "
                + ", ".join(f"{k} {v}" for k, v in self.tool_comments.most_common())
                + " (recognised by their badges and footers; --keep-review-tool-comments keeps them)"
            )
        templated = sum(self.templated.values())
        if templated:
            lines.append(
                f"  templated comments dropped {templated} (one text filled in across many PRs; "
                "--keep-templates keeps them): " + "; ".join(f"{k!r} {v}" for k, v in self.templated.most_common(5))
            )
        if len(self.examples) < self.records:
            gone = self.records - len(self.examples) - sum(self.skipped.values()) - bots
            lines.append(
                f"  {self.records} record(s) -> {len(self.examples)} example(s): {sum(self.skipped.values())} skipped, "
                f"{bots} AI-review-tool, {gone} duplicate(s) or templated"
            )
        for note, n in sorted(self.notes.items()):
            lines.append(f"  {note}: {n}")
        lines += [f"    {d}" for d in self.duplicates[:10]]
        return "\n".join(lines)


# --------------------------------------------------------------------------- reading records


def _records(stream: IO[bytes]) -> Iterator[tuple[int, JSON]]:
    """(line number, decoded JSON) for JSONL or a JSON array, read from ``stream``. A line that is
    not JSON yields a _Bad in place of the value, so the caller can skip it or raise with name:line.
    JSONL is read a line at a time; only a JSON array is read whole."""
    head = stream.read(4096)
    if head.lstrip().startswith(b"["):
        yield from _array_records((head + stream.read()).decode("utf-8", errors="replace"))
        return
    for number, raw in enumerate(_lines(head, stream), start=1):
        text = raw.decode("utf-8", errors="replace")
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as exc:
            cut = "" if raw.endswith(b"\n") else " (the line is cut off: truncated file?)"
            yield number, _Bad("invalid JSON", f"invalid JSON ({exc.msg} at column {exc.colno}){cut}")


def _lines(head: bytes, stream: IO[bytes]) -> Iterator[bytes]:
    """The lines of ``head`` followed by the rest of ``stream``, each with its newline (the last may
    have none): what iterating the whole stream gives, without seeking back, so a pipe works too."""
    *complete, partial = head.split(b"\n")
    for line in complete:
        yield line + b"\n"
    partial += stream.readline()
    if partial:
        yield partial
    yield from stream


_WHITESPACE = re.compile(r"\s*")


def _skip_space(text: str, pos: int) -> int:
    m = _WHITESPACE.match(text, pos)
    return m.end() if m else pos


def _array_records(text: str) -> Iterator[tuple[int, JSON]]:
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        pos = _skip_space(text, pos)
        if pos >= len(text):
            yield text.count("\n", 0, pos) + 1, _Bad("invalid JSON", "the JSON array is not closed (truncated file?)")
            return
        if text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield (
                text.count("\n", 0, exc.pos) + 1,
                _Bad("invalid JSON", f"invalid JSON ({exc.msg}); cannot read further"),
            )
            return
        yield line, value
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] != "]":
            yield text.count("\n", 0, pos) + 1, _Bad("invalid JSON", "expected ',' or ']' between array items")
            return


def parse_field_map(spec: str | None) -> dict[str, str] | None:
    """``"hunk=code,comment=msg"`` -> {"hunk": "code", "comment": "msg"}; unknown keys are refused."""
    if spec is None or not spec.strip():
        return None
    out: dict[str, str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise UsageError(f"--field-map entries are KEY=FIELD, got {part.strip()!r}")
        if key not in FIELD_MAP_KEYS:
            raise UsageError(f"--field-map: unknown key {key!r}; keys are {', '.join(FIELD_MAP_KEYS)}")
        out[key] = value
    if "hunk" not in out:
        raise UsageError("--field-map must name the hunk field (hunk=FIELD)")
    return out


def _get(record: Mapping[str, JSON], dotted: str | None) -> JSON:
    if not dotted:
        return None
    value: JSON = record
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


# --------------------------------------------------------------------------- hunks and anchors


def _clean_hunk(text: JSON, notes: Counter[str]) -> Hunk:
    """Text of one hunk -> Hunk whose header matches its lines (a diff_hunk is cut at the comment,
    so GitHub's header announces more lines than it holds), at most MAX_HUNK_LINES long."""
    if not isinstance(text, str) or not text.strip():
        raise _Bad("no hunk", "the hunk field is empty or missing")
    m = re.match(r"^\s*@@ @@ (?=@@ -|-\d)", text)
    if m:
        text = text[m.end() :]
        if not text.startswith("@@"):
            text = "@@ " + text
        notes["doubled '@@ @@' header prefix removed"] += 1
    try:
        hunk = parse_hunk(text)
    except DiffError as exc:
        raise _Bad("no hunk header", "the hunk has no '@@ -a,b +c,d @@' header") from exc
    if not hunk.lines:
        raise _Bad("hunk has no lines", "the hunk has a header but no lines (line breaks lost?)")
    n = len(hunk.lines)
    if n > MAX_HUNK_LINES:
        notes[f"hunk longer than {MAX_HUNK_LINES} lines: kept the last {MAX_HUNK_LINES}"] += 1
    return hunk.sub_hunk(max(0, n - MAX_HUNK_LINES), n)


def _end_anchor(hunk: Hunk, line_hint: int | None = None, side_hint: str | None = None) -> tuple[int, str]:
    """The hunk's last line as an anchor: LEFT for a deleted line, RIGHT for an added one; for a
    context line the side whose number is ``line_hint`` (else ``side_hint``, else RIGHT)."""
    last = hunk.lines[-1]
    if last.kind == "-":
        return last.old_no, LEFT  # type: ignore[return-value]
    if last.kind == "+":
        return last.new_no, RIGHT  # type: ignore[return-value]
    if line_hint is not None and line_hint == last.old_no and line_hint != last.new_no:
        return last.old_no, LEFT
    if side_hint == LEFT and line_hint is None:
        return last.old_no, LEFT  # type: ignore[return-value]
    return last.new_no, RIGHT  # type: ignore[return-value]


def _last_change_anchor(hunk: Hunk) -> tuple[int, str]:
    for ln in reversed(hunk.lines):
        if ln.kind == "+":
            return ln.new_no, RIGHT  # type: ignore[return-value]
    for ln in reversed(hunk.lines):
        if ln.kind == "-":
            return ln.old_no, LEFT  # type: ignore[return-value]
    return _end_anchor(hunk)


def _int(value: JSON, what: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise _Bad(f"bad {what}", f"field {what!r} must be an integer, got {value!r}") from exc


def _time(value: JSON) -> str:
    try:
        return utc_timestamp(value) or ""
    except DataError as exc:
        raise _Bad("bad time", f"not an ISO-8601 time: {value!r}") from exc


def _content_id(repo: str, pr: int, path: str, hunk: Hunk, body: str, extra: str = "") -> str:
    digest = hashlib.sha1(f"{hunk.text()}\0{body}\0{extra}".encode()).hexdigest()[:12]
    return example_id(repo, pr, path, hunk.header, digest)


def _single_comment_example(
    *,
    repo: str,
    pr: int,
    path: str,
    hunk: Hunk,
    body: str,
    line: int,
    side: str,
    start: int | None,
    created_at: str,
    source: str,
    ident: str | None,
    meta: JSONObject | None = None,
) -> Example:
    comments: list[ExampleComment] = []
    body = normalize_body(body or "")
    if body:
        if start is not None and (start >= line or not hunk.is_commentable(start, side)):
            start = None
        comments = [
            ExampleComment(c.line, c.side, c.body, c.start_line)
            for c in canonical([ExampleComment(line, side, body, start)])
        ]
    eid = example_id(repo, pr, path, hunk.header, ident) if ident else _content_id(repo, pr, path, hunk, body)
    return Example(eid, repo, pr, path, hunk.text(), comments, created_at, source, meta or {})


# --------------------------------------------------------------------------- readers, per format


def _mapped(
    record: Mapping[str, JSON],
    fmap: Mapping[str, str],
    default_repo: str,
    source: str,
    notes: Counter[str],
    anchor_at_end: bool,
) -> Example:
    hunk = _clean_hunk(_get(record, fmap["hunk"]), notes)
    body = _get(record, fmap.get("comment")) if "comment" in fmap else ""
    if body is not None and not isinstance(body, str):
        raise _Bad("bad comment", f"field {fmap.get('comment')!r} must be a string")
    path = _get(record, fmap.get("path")) or "unknown"
    pr = _int(_get(record, fmap.get("pr")), "pr") or 0
    repo = str(_get(record, fmap.get("repo")) or default_repo)
    line_hint = _int(_get(record, fmap.get("line")), "line")
    side_hint = str(_get(record, fmap.get("side")) or "").upper() or None
    if side_hint not in (None, LEFT, RIGHT):
        raise _Bad("bad side", f"field {fmap.get('side')!r} must be LEFT or RIGHT, got {side_hint!r}")
    start = _int(_get(record, fmap.get("start_line")), "start_line")
    if anchor_at_end or line_hint is None:
        line, side = _end_anchor(hunk, line_hint, side_hint)
        if line_hint is not None and line_hint != line:
            notes["line differs from the hunk's last line (anchored on the last line)"] += 1
    else:
        side = side_hint or (RIGHT if hunk.is_commentable(line_hint, RIGHT) else LEFT)
        if hunk.is_commentable(line_hint, side):
            line = line_hint
        else:
            line, side = _end_anchor(hunk, None, side_hint)
            notes["line not in the hunk (anchored on the last line)"] += 1
    ident = _get(record, fmap.get("id"))
    meta = {"source_id": ident} if ident is not None else {}
    return _single_comment_example(
        repo=repo,
        pr=pr,
        path=str(path),
        hunk=hunk,
        body=body or "",
        line=line,
        side=side,
        start=start,
        created_at=_time(_get(record, fmap.get("time"))),
        source=source,
        ident=str(ident) if ident is not None else None,
        meta=meta,
    )


def _read_jsonl(record: JSONObject, ctx: ReadContext) -> Example:
    """The example schema itself, or (with a field map) any hunk + comment JSONL."""
    if ctx.field_map is not None:
        return _mapped(record, ctx.field_map, ctx.default_repo, "import:jsonl", ctx.notes, anchor_at_end=False)
    try:
        return Example.from_dict(record, ctx.source, ctx.line)
    except DataError as exc:
        hint = "" if "hunk" in record else " (for other JSONL datasets give --field-map hunk=FIELD,comment=FIELD,...)"
        raise _Bad("invalid example", str(exc).split(": ", 1)[-1] + hint) from exc


def _skeleton(text: str) -> str:
    """Letters and digits only, lower-cased: what survives the crc authors' normalisation."""
    return re.sub(r"[\W_]+", "", text).lower()


def _same_comment(normalised: str, original: str) -> bool:
    """Is ``normalised`` (lower-cased, code spans and suggestion blocks dropped) derived from
    ``original``? Its letters must appear in order in the original, and each word of 3+ letters
    as a whole: the first test alone passes by chance for short comments."""
    big = _skeleton(original)
    it = iter(big)
    if not all(ch in it for ch in _skeleton(normalised)):
        return False
    return all(w in big for w in (_skeleton(w) for w in re.findall(r"\w+", normalised)) if len(w) >= 3)


def _read_crc(record: JSONObject, ctx: ReadContext) -> Example:
    """One crc-py row. Its ``enriched`` text ("File: P\nCode: HUNK\nComment: TEXT") was made from
    the original comment and hunk, before the dataset's authors lower-cased the comment, stripped
    code spans and suggestion blocks and (in some rows) flattened the hunk's line breaks. The row is
    also added to ``ctx.comments`` as a review comment when it has a comment id."""
    notes = ctx.notes
    record = dict(record)
    owner, name = record.get("owner"), record.get("repo")
    if owner and name and "/" not in str(name):
        record["repo"] = f"{owner}/{name}"
    enriched = record.get("enriched")
    path = record.get("file_path") or ""
    raw_code = record.get("code")
    code: str = raw_code if isinstance(raw_code, str) else ""
    if isinstance(enriched, str) and isinstance(record.get("comment"), str):
        prefix = f"File: {path}\nCode: "
        cut = enriched.find("\nComment: ", len(prefix))
        e_code, original = enriched[len(prefix) : cut], enriched[cut + len("\nComment: ") :]
        if not enriched.startswith(prefix) or cut < 0 or " ".join(e_code.split()) != " ".join(code.split()):
            notes["'enriched' does not match the row's path and hunk: ignored"] += 1
        else:
            if "\n" not in code and "\n" in e_code:
                record["code"] = e_code
                notes["hunk line breaks restored from 'enriched'"] += 1
            if not _same_comment(record["comment"], original):
                notes["'comment' is another row's text; used 'enriched' (it matches the row's path and hunk)"] += 1
                record["comment"] = original
            elif original.strip() != record["comment"].strip():
                record["comment"] = original
                notes["comment text restored from 'enriched' (case, code spans, suggestion blocks)"] += 1
    example = _mapped(record, CRC_FIELD_MAP, ctx.default_repo, "import:crc", notes, anchor_at_end=True)
    for key in ("category", "subcategory"):  # the dataset's labels, kept for per-category evaluation
        if isinstance(record.get(key), str):
            example.meta[key] = record[key]
    comment_id = _int(record.get("comment_id"), "comment_id")
    if comment_id is not None and example.comments:
        c = example.comments[0]
        ctx.comments.append(
            StoredComment(
                repo=example.repo,
                pr=example.pr,
                id=comment_id,
                path=example.path,
                diff_hunk=record.get("code"),
                line=c.line,
                side=c.side,
                original_line=c.line,
                body=c.body,
                created_at=example.created_at or None,
                updated_at=example.created_at or None,
                source="import:crc",
            )
        )
    return example


def _read_codereviewer(record: JSONObject, ctx: ReadContext) -> Example:
    patch = record.get("patch")
    if not isinstance(patch, str) or not patch.strip():
        raise _Bad("no patch", "field 'patch' is empty or missing")
    if not HUNK_HEADER.match(patch.lstrip().split("\n", 1)[0]):
        rows = patch.rstrip("\n").split("\n")
        old = sum(1 for r in rows if not r.startswith("+"))
        new = sum(1 for r in rows if not r.startswith("-"))
        patch = f"@@ -1,{old} +1,{new} @@\n" + patch
        ctx.notes["hunk header synthesised (patch had none)"] += 1
    hunk = _clean_hunk(patch, ctx.notes)
    msg = record.get("msg") or ""
    if not isinstance(msg, str):
        raise _Bad("bad msg", "field 'msg' must be a string")
    if record.get("y") in (0, "0"):
        msg = ""
    line, side = _last_change_anchor(hunk)
    lang = str(record.get("lang") or "").lower()
    path = "unknown" + (f".{_EXTENSIONS[lang]}" if lang in _EXTENSIONS else "")
    repo = str(record.get("proj") or record.get("repo") or ctx.default_repo)
    ident = record.get("id", record.get("idx"))
    return _single_comment_example(
        repo=repo,
        pr=0,
        path=path,
        hunk=hunk,
        body=msg,
        line=line,
        side=side,
        start=None,
        created_at="",
        source="import:codereviewer",
        ident=f"cr:{ident}" if ident is not None else None,
        meta={"source_id": ident} if ident is not None else {},
    )


_PROMPT_ROW = re.compile(r"^([RL])(\d+) ([ +\-])(.*)$")


def hunk_from_prompt(user: str) -> tuple[str, Hunk]:
    """Invert bot.prompt.render_input: (path, hunk) from a rendered prompt's user text."""
    lines = user.split("\n")
    if not lines or not lines[0].startswith("File: "):
        raise _Bad("not a revbot prompt", "the prompt does not start with 'File: PATH'")
    path = lines[0][len("File: ") :]
    start = next((k for k, ln in enumerate(lines) if HUNK_HEADER.match(ln)), None)
    if start is None:
        raise _Bad("not a revbot prompt", "the prompt holds no '@@ -a,b +c,d @@' hunk header")
    rows = [lines[start]]
    for ln in lines[start + 1 :]:
        m = _PROMPT_ROW.match(ln)
        if not m:
            raise _Bad("not a revbot prompt", f"unexpected prompt line {ln[:60]!r}")
        rows.append(m.group(3) + m.group(4))
    try:
        return path, parse_hunk("\n".join(rows), strict=True)
    except DiffError as exc:
        raise _Bad("not a revbot prompt", f"the prompt's hunk does not match its header: {exc}") from exc


def _from_chat(system: JSON, user: JSON, answer: JSON, block: JSON, fmt: str, ctx: ReadContext) -> Example:
    default_repo, notes = ctx.default_repo, ctx.notes
    if not isinstance(user, str) or not isinstance(answer, str):
        raise _Bad(
            "missing prompt or answer", "a record needs the prompt (user/input) and the answer (assistant/output)"
        )
    if user.lstrip().startswith("@@"):
        hunk, path = _clean_hunk(user, notes), "unknown"
        notes["plain hunk as input"] += 1
    else:
        path, hunk = hunk_from_prompt(user)
    block = block if isinstance(block, dict) else {}
    hunk_text = hunk.text()
    if isinstance(block.get("hunk"), str):  # the exact text, where the rendering loses something
        try:
            hunk, hunk_text = parse_hunk(block["hunk"]), block["hunk"]
        except DiffError as exc:
            raise _Bad("bad revbot block", "revbot.hunk is not a hunk") from exc
    parsed = parse_output(answer, hunk)
    if parsed.invalid_anchors:
        where = ", ".join(f"{c.side} {c.line}" for c in parsed.invalid_anchors)
        raise _Bad("anchor not in hunk", f"the answer names lines that are not in the hunk: {where}")
    if parsed.comments or parsed.no_comment:
        comments = parsed.comments
    elif answer.replace(ANSWER_END, "").strip():
        line, side = _last_change_anchor(hunk)  # free text about the whole hunk
        comments = canonical([ExampleComment(line, side, answer.replace(ANSWER_END, ""))])
        notes["free-text answer anchored on the hunk's last changed line"] += 1
    else:
        raise _Bad("empty answer", "the answer is empty (a negative example says 'NO COMMENT')")
    ex_comments = [ExampleComment(c.line, c.side, c.body, c.start_line) for c in comments]
    if system is not None and system not in SYSTEM_PROMPTS.values():
        notes["system prompt differs from revbot's (ignored)"] += 1
    if block.get("id"):
        try:
            pr = int(block.get("pr") or 0)
        except (TypeError, ValueError) as exc:
            raise _Bad("bad revbot block", f"revbot.pr must be an integer, got {block.get('pr')!r}") from exc
        return Example(
            str(block["id"]),
            str(block.get("repo") or default_repo),
            pr,
            path,
            hunk_text,
            ex_comments,
            str(block.get("created_at") or ""),
            str(block.get("source") or f"import:{fmt}"),
            dict(block.get("meta") or {}),
        )
    body = "\n".join(c.body for c in ex_comments)
    return Example(
        _content_id(default_repo, 0, path, hunk, body),
        default_repo,
        0,
        path,
        hunk_text,
        ex_comments,
        "",
        f"import:{fmt}",
        {},
    )


def _turns(record: Mapping[str, JSON], key: str, key_role: str, key_text: str, roles: Mapping[str, str]) -> list[JSON]:
    """(system, user, assistant): the first turn of each role in a conversation list."""
    turns = record.get(key)
    if not isinstance(turns, list):
        raise _Bad("missing conversation", f"field {key!r} must be a list")
    found: JSONObject = {}
    for turn in turns:
        if isinstance(turn, dict):
            role = roles.get(str(turn.get(key_role)))
            if role and role not in found:
                found[role] = turn.get(key_text)
    return [found.get("system"), found.get("user"), found.get("assistant")]


def _read_alpaca(record: JSONObject, ctx: ReadContext) -> Example:
    parts = record.get("instruction"), record.get("input"), record.get("output")
    return _from_chat(*parts, record.get("revbot"), "alpaca", ctx)


_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
_OPENAI_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}


def _read_sharegpt(record: JSONObject, ctx: ReadContext) -> Example:
    system, user, answer = _turns(record, "conversations", "from", "value", _SHAREGPT_ROLES)
    return _from_chat(system, user, answer, record.get("revbot"), "sharegpt", ctx)


def _read_openai(record: JSONObject, ctx: ReadContext) -> Example:
    system, user, answer = _turns(record, "messages", "role", "content", _OPENAI_ROLES)
    return _from_chat(system, user, answer, record.get("revbot"), "openai", ctx)


# --------------------------------------------------------------------------- writers, per format


def _block(ex: Example) -> JSONObject:
    block: JSONObject = {
        "id": ex.id,
        "repo": ex.repo,
        "pr": ex.pr,
        "created_at": ex.created_at,
        "source": ex.source,
    }
    if ex.meta:
        block["meta"] = ex.meta
    try:
        _, rebuilt = hunk_from_prompt(ex.prompt_input().user)
        exact = rebuilt.text() == ex.hunk
    except _Bad:
        exact = False
    if not exact:  # e.g. "\ No newline at end of file" markers, which the prompt does not show
        block["hunk"] = ex.hunk
    return block


def _with_block(out: JSONObject, ex: Example, meta: bool) -> JSONObject:
    if meta:
        out["revbot"] = _block(ex)
    return out


def _write_jsonl(ex: Example, meta: bool) -> JSONObject:
    return ex.to_dict()  # the schema carries its provenance itself


def _write_alpaca(ex: Example, meta: bool) -> JSONObject:
    inp: PromptInput = ex.prompt_input()
    out: JSONObject = {"instruction": inp.system, "input": inp.user, "output": ex.answer()}
    return _with_block(out, ex, meta)


def _write_sharegpt(ex: Example, meta: bool) -> JSONObject:
    inp = ex.prompt_input()
    turns = [
        {"from": "system", "value": inp.system},
        {"from": "human", "value": inp.user},
        {"from": "gpt", "value": ex.answer()},
    ]
    return _with_block({"conversations": turns}, ex, meta)


def _write_openai(ex: Example, meta: bool) -> JSONObject:
    inp = ex.prompt_input()
    turns = [
        {"role": "system", "content": inp.system},
        {"role": "user", "content": inp.user},
        {"role": "assistant", "content": ex.answer()},
    ]
    return _with_block({"messages": turns}, ex, meta)


# --------------------------------------------------------------------------- the registry

FORMATS: Mapping[str, DatasetFormat] = MappingProxyType(
    {
        f.name: f
        for f in (
            DatasetFormat("crc", "the crc-py dataset (GitHub diff_hunk + comment rows)", read=_read_crc),
            DatasetFormat("codereviewer", "CodeReviewer's msg files (patch + msg)", read=_read_codereviewer),
            DatasetFormat("alpaca", "instruction / input / output records", read=_read_alpaca, write=_write_alpaca),
            DatasetFormat("sharegpt", "conversations of from/value turns", read=_read_sharegpt, write=_write_sharegpt),
            DatasetFormat("openai", "messages of role/content turns", read=_read_openai, write=_write_openai),
            DatasetFormat(
                "jsonl",
                "revbot's example schema (read with a field map: any hunk + comment JSONL)",
                read=_read_jsonl,
                write=_write_jsonl,
            ),
        )
    }
)
"""Every dataset format by name, in the order the command line lists them."""

IMPORT_FORMATS = tuple(name for name, f in FORMATS.items() if f.read is not None)
EXPORT_FORMATS = tuple(name for name, f in FORMATS.items() if f.write is not None)


def get_format(name: str, use: str = "") -> DatasetFormat:
    """The format called ``name``; ``use`` ("import" or "export") also requires it to be read or
    written. An unknown name is a UsageError that lists the names that would do."""
    if use == "import":
        known = IMPORT_FORMATS
    elif use == "export":
        known = EXPORT_FORMATS
    else:
        known = tuple(FORMATS)
    if name not in known:
        kind = f"{use} format" if use else "dataset format"
        raise UsageError(f"unknown {kind} {name!r}; choose one of {', '.join(known)}")
    return FORMATS[name]


# --------------------------------------------------------------------------- reading and writing datasets


def parse_dataset(
    stream: IO[bytes],
    name: str,
    fmt: str,
    *,
    field_map: Mapping[str, str] | None = None,
    skip_bad: bool = False,
    repo: str | None = None,
    keep_tool_comments: bool = False,
    keep_templates: bool = False,
) -> ImportResult:
    """Read a dataset from an open binary ``stream`` into examples (and, for crc, review comments).
    ``name`` is what errors and the result call the file (``adapters.files.read_dataset``
    opens a path). Nothing is stored.

    Comments stamped by an AI review tool (bot.review_tools) are dropped unless ``keep_tool_comments``:
    a team's model should learn the team, not the bot. An example that loses all its comments that
    way is dropped, not turned into a negative (a bot did find something there). Comments filled in
    from one template across many pull requests (bot.templates) go the same way unless
    ``keep_templates``."""
    reader = get_format(fmt, "import").read
    assert reader is not None  # get_format(..., "import") returns readable formats only
    result = ImportResult(name, fmt)
    ctx = ReadContext(
        name,
        repo or DEFAULT_REPO,
        field_map if fmt == "jsonl" else None,
        notes=result.notes,
        comments=result.comments,
    )
    seen: dict[str, tuple[int, Example]] = {}
    for number, record in _records(stream):
        result.records += 1
        ctx.line = number
        try:
            if isinstance(record, _Bad):
                raise record
            if not isinstance(record, dict):
                raise _Bad("not an object", f"expected a JSON object, got {type(record).__name__}")
            example = reader(record, ctx)
        except _Bad as bad:
            if not skip_bad:
                raise DataError(str(bad), name, number) from bad
            result.skipped[bad.reason] += 1
            if len(result.errors) < 20:
                result.errors.append(f"{name}:{number}: {bad}")
            continue
        if not keep_tool_comments and example.comments:
            signed = [review_tool_stamp(c.body) for c in example.comments]
            if any(signed):
                for tool in filter(None, signed):
                    result.tool_comments[tool] += 1
                human = [c for c, tool in zip(example.comments, signed, strict=True) if not tool]
                if not human:
                    continue
                example = replace(example, comments=human)
        earlier = seen.get(example.id)
        if earlier is not None:
            first_line, first = earlier
            if replace(first, meta={}) == replace(example, meta={}):  # labels may differ; the comment is the same
                result.notes["duplicate record (same example as an earlier line): dropped"] += 1
                result.duplicates.append(f"{name}:{number}: same example as line {first_line}; dropped")
                continue
            result.notes["same id as an earlier line with other content: the later record kept"] += 1
            result.duplicates.append(f"{name}:{number}: same id as line {first_line}, other content; replaces it")
            result.examples = [e for e in result.examples if e.id != example.id]
        seen[example.id] = (number, example)
        result.examples.append(example)
    result.comments = list(
        {c.id: c for c in result.comments if keep_tool_comments or not review_tool_stamp(c.body)}.values()
    )
    if not keep_templates:
        drop_templated(result)
    return result


def drop_templated(result: ImportResult) -> None:
    """Take the comments bot.templates finds in ``result``'s examples out of them (an example left
    without comments goes: a tool's remark is not a hunk the team left alone), and the same
    comments out of ``result.comments``; count them per template."""
    places = [(e, k) for e, ex in enumerate(result.examples) for k in range(len(ex.comments))]
    report = find_templates(
        [((ex.repo, ex.pr or ex.id), ex.comments[k].body) for ex, k in ((result.examples[e], k) for e, k in places)]
    )
    dropped = {place for place, template in zip(places, report.verdicts, strict=True) if template is not None}
    for template in filter(None, report.verdicts):
        result.templated[template.skeleton] += 1
    if not dropped:
        return
    kept: list[Example] = []
    gone: set[tuple[str, int, str, str]] = set()  # (repo, pr, path, body) of the dropped comments
    for e, ex in enumerate(result.examples):
        left = [c for k, c in enumerate(ex.comments) if (e, k) not in dropped]
        gone |= {(ex.repo, ex.pr, ex.path, c.body) for k, c in enumerate(ex.comments) if (e, k) in dropped}
        if left:
            kept.append(ex if len(left) == len(ex.comments) else replace(ex, comments=left))
    result.examples = kept
    result.comments = [c for c in result.comments if (c.repo, c.pr, c.path, c.body) not in gone]


def export_record(ex: Example, fmt: str, *, meta: bool = True) -> JSONObject:
    """One example in an export format (see the module docstring)."""
    writer = get_format(fmt, "export").write
    assert writer is not None  # get_format(..., "export") returns writable formats only
    return writer(ex, meta)


def export_records(examples: Iterable[Example], fmt: str, *, meta: bool = True) -> Iterator[JSONObject]:
    """Examples as records of ``fmt``, lazily; an unknown ``fmt`` is refused now, before any is made."""
    writer = get_format(fmt, "export").write
    assert writer is not None
    return (writer(ex, meta) for ex in examples)
