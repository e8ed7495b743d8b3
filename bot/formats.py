"""Output formats of a ``Review``: text for a terminal, JSON, SARIF 2.1.0 (GitHub code scanning and
IDEs), reviewdog's rdjson, and the body of GitHub's "create a review" request.

GitHub bodies follow three rules, because the bot posts where people work:
  * every comment carries a hidden fingerprint ``<!-- revbot:fp=HEX -->`` of (path, the commented
    line's code, the normalised body): not the line number, so a re-review after a push recognises
    what it already said even when lines moved, and posts only what is new;
  * @mentions are neutralised (a zero-width space after the ``@``) so the bot never pings anyone;
    code spans and fenced blocks are left alone, as GitHub does not ping from them and a
    ``suggestion`` must stay exact;
  * bodies are capped (GitHub refuses more than 65,536 characters; a wall of text helps nobody).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from typing import TextIO

from bot.diff import LEFT, RIGHT
from bot.json_types import JSONObject
from bot.review import Review, ReviewComment

FORMATS = ("text", "json", "sarif", "rdjson", "github", "codeclimate")
JSON_FORMAT_VERSION = 1
TOOL_NAME = "revbot"
RULE_ID = "revbot/review-comment"
RULE_UNANCHORED = "revbot/review-note"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

MAX_COMMENT_CHARS = 4000
MAX_REVIEW_BODY_CHARS = 60000
TRUNCATION_MARKER = "\n\n*[comment truncated by revbot]*"
FINGERPRINT_RE = re.compile(r"<!--\s*revbot:fp=([0-9a-f]{8,64})\s*-->")
ZWSP = "\u200b"


def tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("revbot")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0+unknown"


# --------------------------------------------------------------------------- fingerprints


def _normal_code(code: str) -> str:
    return " ".join(code.split())


def _normal_body(body: str) -> str:
    text = body.replace(ZWSP, "")
    text = FINGERPRINT_RE.sub("", text)
    return " ".join(text.split()).casefold()


def fingerprint(path: str, code: str, body: str) -> str:
    """16 hex digits identifying a comment by what it says about which code, not by line number."""
    data = "\0".join([path, _normal_code(code), _normal_body(body)]).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:16]


def comment_fingerprint(comment: ReviewComment) -> str:
    return fingerprint(comment.path, comment.code, comment.body)


def fingerprint_marker(fp: str) -> str:
    return f"<!-- revbot:fp={fp} -->"


REVIEW_MARK = "<!-- revbot:review sha="


def review_marker(head_sha: str) -> str:
    """Hidden in every posted review's body: which head commit it covers (one review per head)."""
    return f"{REVIEW_MARK}{head_sha} -->"


def extract_fingerprints(text: str | None) -> list[str]:
    """Fingerprints hidden in a posted comment or review body, in order, without repeats."""
    seen: dict[str, None] = {}
    for match in FINGERPRINT_RE.finditer(text or ""):
        seen.setdefault(match.group(1), None)
    return list(seen)


# --------------------------------------------------------------------------- safe bodies

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_MENTION = re.compile(r"(?<![\w`@/.])@(?=[A-Za-z0-9])")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)


def neutralize_mentions(text: str) -> str:
    """``@user`` and ``@org/team`` -> ``@\u200buser``: shown the same, pings nobody. Code blocks and
    code spans are left unchanged (GitHub does not ping from them, and a suggestion must stay
    exact); e-mail addresses are not mentions and are left alone."""
    out: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            out.append(line)
            continue
        if m:
            fence = m.group(1)
            out.append(line)
            continue
        out.append(_outside_code_spans(line, lambda s: _MENTION.sub("@" + ZWSP, s)))
    return "\n".join(out)


def _outside_code_spans(line: str, fix: Callable[[str], str]) -> str:
    parts, last = [], 0
    for m in _CODE_SPAN.finditer(line):
        parts.append(fix(line[last : m.start()]))
        parts.append(m.group(0))
        last = m.end()
    parts.append(fix(line[last:]))
    return "".join(parts)


def cap_length(text: str, limit: int = MAX_COMMENT_CHARS, marker: str = TRUNCATION_MARKER) -> str:
    """At most ``limit`` characters; a cut text ends with ``marker`` and any open code fence is
    closed so the rest of the page still renders."""
    if len(text) <= limit:
        return text
    room = max(0, limit - len(marker) - 5)
    cut = text[:room]
    newline = cut.rfind("\n")
    if newline > room * 0.8:
        cut = cut[:newline]
    fence = None
    for line in cut.split("\n"):
        m = _FENCE.match(line)
        if m and fence is None:
            fence = m.group(1)
        elif m and fence is not None and m.group(1)[0] == fence[0]:
            fence = None
    if fence is not None:
        cut += "\n" + fence
    return cut + marker


def github_comment_body(comment: ReviewComment, limit: int = MAX_COMMENT_CHARS) -> str:
    """What is posted for one comment: neutralised, capped, with its hidden fingerprint."""
    marker = "\n\n" + fingerprint_marker(comment_fingerprint(comment))
    return cap_length(neutralize_mentions(comment.body), limit - len(marker)) + marker


# --------------------------------------------------------------------------- text


def _location(c: ReviewComment) -> str:
    line = f"{c.start_line}-{c.line}" if c.start_line else str(c.line)
    return f"{c.path}:{line}" + (" (old)" if c.side == LEFT else "")


def _comment_lines(comments: Iterable[ReviewComment], indent: str = "") -> list[str]:
    """``path:line: body`` per comment at ``indent``; a body's further lines four spaces deeper."""
    lines: list[str] = []
    for c in comments:
        first, *rest = c.body.split("\n")
        lines.append(f"{indent}{_location(c)}: {first}")
        lines += [f"{indent}    {ln}" if ln else "" for ln in rest]
    return lines


def to_text(review: Review, max_skipped: int = 20) -> str:
    """``path:line: body`` per comment (grep- and editor-friendly), then what was left out, then
    one summary line."""
    sections: list[list[str]] = [_comment_lines(review.comments)]
    if review.unanchored:
        sections.append(["Not on a changed line:", *_comment_lines(review.unanchored, "  ")])
    if review.skipped:
        lines = ["Not reviewed:"]
        for s in review.skipped[:max_skipped]:
            what = f" ({len(s.hunks)} hunk{'s' if len(s.hunks) != 1 else ''})" if s.hunks else ""
            lines.append(f"  {s.path}{what}: {s.reason}")
        if len(review.skipped) > max_skipped:
            lines.append(f"  ... and {len(review.skipped) - max_skipped} more")
        sections.append(lines)
    sections.append([f"warning: {w}" for w in review.warnings])
    sections.append([review.summary])
    return "\n\n".join("\n".join(sec) for sec in sections if sec) + "\n"


# --------------------------------------------------------------------------- json


def to_data(review: Review) -> JSONObject:
    data: JSONObject = {
        "format": "revbot-review",
        "version": JSON_FORMAT_VERSION,
        "tool": {"name": TOOL_NAME, "version": tool_version()},
    }
    data.update(review.to_dict())
    for key in ("comments", "unanchored"):
        for item, c in zip(data[key], getattr(review, key)):
            item["fingerprint"] = comment_fingerprint(c)
    return data


def to_json(review: Review) -> str:
    return json.dumps(to_data(review), indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- SARIF 2.1.0


def _region(c: ReviewComment) -> dict[str, int]:
    end = c.new_line or c.line
    start = c.start_line if (c.side == RIGHT and c.start_line) else end
    return {"startLine": max(1, start), "endLine": max(1, end)}


# the two rules of revbot's results: a comment on a changed line, and a note it could not anchor
SARIF_RULES: list[JSONObject] = [
    {
        "id": RULE_ID,
        "name": "ReviewComment",
        "shortDescription": {"text": "Review comment"},
        "fullDescription": {"text": "A comment a reviewer on this team would likely make on this change."},
        "defaultConfiguration": {"level": "note"},
        "help": {
            "text": "Written by revbot, a model trained on this team's past code reviews. Treat it as a "
            "colleague's remark, not a verdict."
        },
        "properties": {"tags": ["review", "maintainability"]},
    },
    {
        "id": RULE_UNANCHORED,
        "name": "ReviewNote",
        "shortDescription": {"text": "Review note not on a changed line"},
        "fullDescription": {"text": "A review comment whose line is not part of the change."},
        "defaultConfiguration": {"level": "note"},
        "help": {"text": "The model named a line outside the diff; the note is kept at file level."},
        "properties": {"tags": ["review"]},
    },
]


def _sarif_location(path: str, region: dict[str, int]) -> list[JSONObject]:
    return [{"physicalLocation": {"artifactLocation": {"uri": _uri(path), "uriBaseId": "%SRCROOT%"}, "region": region}}]


def _sarif_result(c: ReviewComment) -> JSONObject:
    """A comment on a changed line; one on a deleted line sits where the deletion is, and says so."""
    text = c.body if c.side == RIGHT else f"(on deleted line {c.line} of the old file) {c.body}"
    return {
        "ruleId": RULE_ID,
        "ruleIndex": 0,
        "level": "note",
        "message": {"text": text},
        "locations": _sarif_location(c.path, _region(c)),
        "partialFingerprints": {"revbot/v1": comment_fingerprint(c)},
        "properties": {"side": c.side, "line": c.line, **({"startLine": c.start_line} if c.start_line else {})},
    }


def _sarif_note(c: ReviewComment) -> JSONObject:
    """A comment the model put outside the diff, kept at file level."""
    return {
        "ruleId": RULE_UNANCHORED,
        "ruleIndex": 1,
        "level": "note",
        "message": {"text": f"(line {c.line}{' of the old file' if c.side == LEFT else ''}) {c.body}"},
        # the line the model named, if it is one of the new file; it is not a changed line
        "locations": _sarif_location(c.path, {"startLine": c.line if c.side == RIGHT else 1}),
        "partialFingerprints": {"revbot/v1": comment_fingerprint(c)},
    }


def to_sarif_data(review: Review) -> JSONObject:
    """A SARIF 2.1.0 log with one run. What GitHub code scanning needs is there: the tool driver's
    name and rules, and per result a ruleId, a message and a physical location (relative uri plus
    a region with start and end lines). Comments on deleted lines are placed on the new-file line
    where the deletion is, and say so."""
    results = [_sarif_result(c) for c in review.comments] + [_sarif_note(c) for c in review.unanchored]
    notifications = [
        {"level": "note", "message": {"text": f"{s.path}: not reviewed ({s.reason})"}} for s in review.skipped
    ]
    rules = [dict(rule) for rule in SARIF_RULES]  # a log of its own: the caller may edit it
    driver = {"name": TOOL_NAME, "version": tool_version(), "semanticVersion": tool_version(), "rules": rules}
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": driver},
                "automationDetails": {"id": "revbot/"},
                "results": results,
                "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": notifications}],
                "properties": {"summary": review.summary, "model": review.model},
            }
        ],
    }


def _uri(path: str) -> str:
    """A relative URI reference for a repository path (spaces and the like percent-encoded)."""
    from urllib.parse import quote

    return quote(path.lstrip("/"), safe="/")


def to_sarif(review: Review) -> str:
    return json.dumps(to_sarif_data(review), indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- reviewdog rdjson


def to_rdjson_data(review: Review) -> JSONObject:
    """reviewdog's Diagnostic Format (rdjson): ``reviewdog -f=rdjson`` posts these where it posts."""
    diagnostics = []
    for c in review.comments:
        region = _region(c)
        diagnostics.append(
            {
                "message": c.body if c.side == RIGHT else f"(on deleted line {c.line} of the old file) {c.body}",
                "location": {
                    "path": c.path,
                    "range": {"start": {"line": region["startLine"]}, "end": {"line": region["endLine"]}},
                },
                "severity": "INFO",
                "source": {"name": TOOL_NAME},
                "code": {"value": RULE_ID},
                "original_output": c.body,
            }
        )
    return {"source": {"name": TOOL_NAME}, "severity": "INFO", "diagnostics": diagnostics}


def to_rdjson(review: Review) -> str:
    return json.dumps(to_rdjson_data(review), indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- GitLab Code Quality

CODECLIMATE_SEVERITIES = ("info", "minor", "major", "critical", "blocker")


def to_codeclimate_data(review: Review) -> list[JSONObject]:
    """GitLab's Code Quality report (the Code Climate subset its merge-request widget reads): one
    issue per comment with ``description``, ``check_name``, ``fingerprint`` (revbot's, so a re-run
    names the same issue the same), ``severity`` and ``location.path`` + ``location.lines``. A
    comment on a deleted line is placed on the new file's line next to it and says so."""
    issues: list[JSONObject] = []
    seen: set[str] = set()
    for c in [*review.comments, *review.unanchored]:
        fp = comment_fingerprint(c)
        if fp in seen:
            continue
        seen.add(fp)
        region = _region(c)
        text = c.body if c.side == RIGHT else f"(on deleted line {c.line} of the old file) {c.body}"
        issues.append(
            {
                "type": "issue",
                "description": text,
                "check_name": RULE_ID,
                "fingerprint": fp,
                "severity": "info",
                "categories": ["Style"],
                "location": {"path": c.path, "lines": {"begin": region["startLine"], "end": region["endLine"]}},
            }
        )
    return issues


def to_codeclimate(review: Review) -> str:
    return json.dumps(to_codeclimate_data(review), indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- GitHub create-review


def github_review_payload(
    review: Review,
    commit_id: str | None = None,
    *,
    known_fingerprints: Iterable[str] = (),
    max_inline: int | None = None,
    event: str = "COMMENT",
    header: str = "**revbot review**",
) -> JSONObject:
    """The JSON body of ``POST /repos/{owner}/{repo}/pulls/{n}/reviews``.

    Comments whose fingerprint is in ``known_fingerprints`` (already on the PR) are left out.
    Inline comments beyond ``max_inline`` go into the body with the unanchored ones; so do the files
    that were not reviewed, and the summary. Every anchor must already be validated against the diff
    (``bot.review`` does it).
    """
    known = set(known_fingerprints)
    inline: list[ReviewComment] = []
    extra: list[ReviewComment] = []
    for c in review.comments:
        if comment_fingerprint(c) in known:
            continue
        (inline if max_inline is None or len(inline) < max_inline else extra).append(c)
    notes = [c for c in review.unanchored if comment_fingerprint(c) not in known]
    comments = []
    for c in inline:
        item: JSONObject = {"path": c.path, "line": c.line, "side": c.side}
        if c.start_line is not None and c.start_line < c.line:
            item["start_line"] = c.start_line
            item["start_side"] = c.side
        item["body"] = github_comment_body(c)
        comments.append(item)
    payload: JSONObject = {}
    if commit_id:
        payload["commit_id"] = commit_id
    payload["body"] = review_body(review, extra + notes, header=header)
    payload["event"] = event
    payload["comments"] = comments
    return payload


def review_body(
    review: Review,
    notes: list[ReviewComment],
    *,
    header: str = "**revbot review**",
    max_skipped: int = 50,
    limit: int = MAX_REVIEW_BODY_CHARS,
) -> str:
    """The review's top-level text: summary, comments that could not be placed inline (each with
    its fingerprint, so they too are not repeated), and what was not reviewed."""
    parts = [header, "", neutralize_mentions(review.summary)]
    if notes:
        parts += ["", "Comments not on a changed line:"]
        for c in notes:
            where = f"`{c.path}` line {c.line}" + (" (old file)" if c.side == LEFT else "")
            body = cap_length(neutralize_mentions(c.body), MAX_COMMENT_CHARS // 2)
            quoted = "\n".join(f"  {ln}" if ln else "" for ln in body.split("\n"))
            parts.append(f"- {where}:\n{quoted}\n  {fingerprint_marker(comment_fingerprint(c))}")
    if review.skipped:
        parts += ["", "<details><summary>Not reviewed</summary>", ""]
        for s in review.skipped[:max_skipped]:
            what = f" ({len(s.hunks)} hunk{'s' if len(s.hunks) != 1 else ''})" if s.hunks else ""
            parts.append(f"- `{s.path}`{what}: {s.reason}")
        if len(review.skipped) > max_skipped:
            parts.append(f"- ... and {len(review.skipped) - max_skipped} more")
        parts += ["", "</details>"]
    return cap_length("\n".join(parts), limit, "\n\n*[review body truncated by revbot]*")


def to_github(review: Review, commit_id: str | None = None) -> str:
    return json.dumps(github_review_payload(review, commit_id), indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- dispatch


def render(review: Review, fmt: str, *, commit_id: str | None = None) -> str:
    """``review`` in one of FORMATS."""
    if fmt == "text":
        return to_text(review)
    if fmt == "json":
        return to_json(review)
    if fmt == "sarif":
        return to_sarif(review)
    if fmt == "rdjson":
        return to_rdjson(review)
    if fmt == "github":
        return to_github(review, commit_id)
    if fmt == "codeclimate":
        return to_codeclimate(review)
    from bot.errors import UsageError

    raise UsageError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")


class StreamSink:
    """A review sink that writes one format to a text stream (the CLI's stdout or -o file)."""

    def __init__(self, fmt: str, stream: TextIO, *, commit_id: str | None = None):
        if fmt not in FORMATS:
            from bot.errors import UsageError

            raise UsageError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")
        self.fmt, self.stream, self.commit_id = fmt, stream, commit_id

    def write(self, review: Review) -> None:
        self.stream.write(render(review, self.fmt, commit_id=self.commit_id))
        self.stream.flush()
