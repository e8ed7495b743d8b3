"""The training-example contract: what harvest and import write, and training and evaluation read.

    {id, repo, pr, path, hunk, comments: [{line, side, body, start_line?}], created_at, source}

``hunk`` is one unified-diff hunk with its ``@@`` header; an empty ``comments`` list is a negative
example (a hunk the team left alone), which teaches the model when to stay silent. ``meta`` is
optional free-form provenance (comment ids, reactions, authors) that training ignores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

from bot.diff import LEFT, RIGHT, Hunk, parse_hunk
from bot.errors import DataError, DiffError
from bot.json_types import JSON, JSONObject
from bot.prompt import PromptInput, render_answer, render_input


@dataclass(frozen=True)
class ExampleComment:
    line: int
    side: str
    body: str
    start_line: int | None = None


@dataclass
class Example:
    id: str
    repo: str
    pr: int
    path: str
    hunk: str
    comments: list[ExampleComment] = field(default_factory=list)
    created_at: str = ""
    source: str = "github"
    meta: JSONObject = field(default_factory=dict)

    @property
    def is_negative(self) -> bool:
        return not self.comments

    def parsed_hunk(self) -> Hunk:
        return parse_hunk(self.hunk, source=f"example {self.id}")

    def prompt_input(self) -> PromptInput:
        return render_input(self.path, self.parsed_hunk())

    def answer(self) -> str:
        return render_answer(self.comments, self.parsed_hunk())

    def to_dict(self) -> JSONObject:
        out = asdict(self)
        out["comments"] = [{k: v for k, v in asdict(c).items() if v is not None} for c in self.comments]
        if not self.meta:
            out.pop("meta")
        return out

    @classmethod
    def from_dict(cls, data: JSON, source: str | None = None, line: int | None = None) -> Example:
        """Validate and build; errors name ``source:line`` and the field at fault."""

        def fail(message: str) -> DataError:
            return DataError(message, source, line)

        if not isinstance(data, dict):
            raise fail(f"expected a JSON object, got {type(data).__name__}")
        missing = [k for k in ("id", "repo", "pr", "path", "hunk") if k not in data or data[k] in (None, "")]
        if missing:
            raise fail(f"missing field(s): {', '.join(missing)}")
        try:
            pr = int(data["pr"])
        except (TypeError, ValueError) as exc:
            raise fail(f"field 'pr' must be an integer, got {data['pr']!r}") from exc
        hunk = str(data["hunk"])
        try:
            parse_hunk(hunk)
        except DiffError as exc:
            raise fail("field 'hunk' has no '@@ -a,b +c,d @@' header") from exc
        raw_comments = data.get("comments") or []
        if not isinstance(raw_comments, list):
            raise fail("field 'comments' must be a list")
        comments = []
        for k, c in enumerate(raw_comments):
            if not isinstance(c, dict):
                raise fail(f"comments[{k}] must be an object")
            side = str(c.get("side") or RIGHT).upper()
            if side not in (LEFT, RIGHT):
                raise fail(f"comments[{k}].side must be LEFT or RIGHT, got {c.get('side')!r}")
            try:
                ln = int(c["line"])
                start = int(c["start_line"]) if c.get("start_line") is not None else None
            except (KeyError, TypeError, ValueError) as exc:
                raise fail(f"comments[{k}].line must be an integer") from exc
            body = c.get("body")
            if not isinstance(body, str) or not body.strip():
                raise fail(f"comments[{k}].body must be a non-empty string")
            comments.append(ExampleComment(ln, side, body, start))
        return cls(
            id=str(data["id"]),
            repo=str(data["repo"]),
            pr=pr,
            path=str(data["path"]),
            hunk=hunk,
            comments=comments,
            created_at=str(data.get("created_at") or ""),
            source=str(data.get("source") or "jsonl"),
            meta=dict(data.get("meta") or {}),
        )


def example_id(repo: str, pr: int, path: str, hunk_header: str, extra: str = "") -> str:
    """Stable id: the same hunk of the same PR always gets the same id (idempotent re-harvest)."""
    digest = hashlib.sha1(f"{repo}\0{pr}\0{path}\0{hunk_header}\0{extra}".encode()).hexdigest()[:16]
    return f"{repo}#{pr}:{digest}"


def parse_examples(
    lines: Iterable[str], name: str, skip_bad: bool = False, errors: list[str] | None = None
) -> Iterator[Example]:
    """Examples from JSONL text, one line at a time (an open file, a list of lines); ``name`` is
    what errors call the file (``adapters.files.read_examples`` opens a path). A bad line
    raises DataError naming name:line, or with ``skip_bad`` is skipped and its message appended to
    ``errors``."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON ({exc.msg} at column {exc.colno})", name, number) from exc
            yield Example.from_dict(data, name, number)
        except DataError as exc:
            if not skip_bad:
                raise
            if errors is not None:
                errors.append(str(exc))


def fingerprint(examples: Iterable[Example]) -> str:
    """Content hash of a dataset, recorded with every model trained on it."""
    h = hashlib.sha256()
    for ex in sorted(examples, key=lambda e: e.id):
        h.update(json.dumps(ex.to_dict(), sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:16]
