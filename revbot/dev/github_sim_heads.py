"""What changed between two heads of one pull request, for the GitHub simulator.

The simulator keeps each head's per-file patches against the PR's base, not the files themselves.
Two patches against the same base still say everything about the lines either of them touches: a
base line inside a hunk of either patch is known (context or deleted lines), and a base line in no
hunk is the same in both heads. So each stretch of the base that some hunk covers is rebuilt as it
reads in the old head and in the new head, and the two are diffed with ``difflib``. This is what the
compare API answers for ``OLD...NEW`` when OLD is an ancestor of NEW, and how review comments move
(or become outdated) after a push. Context lines stop at the edge of what the patches show.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from bot.diff import FileDiff, Hunk

CONTEXT = 3


@dataclass(frozen=True)
class _Span:
    """A hunk's reach in the base: base lines [start, end), empty for a pure insertion at start."""

    start: int
    end: int
    hunk: Hunk


def _spans(fd: FileDiff | None) -> list[_Span]:
    out = []
    for hunk in fd.hunks if fd is not None else []:
        start = hunk.old_start if hunk.old_len else hunk.old_start + 1
        out.append(_Span(start, start + hunk.old_len, hunk))
    return out


def _regions(spans: list[_Span]) -> list[tuple[int, int]]:
    """Touching or overlapping spans merged: the stretches of the base some hunk covers."""
    merged: list[list[int]] = []
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        if merged and span.start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], span.end)
        else:
            merged.append([span.start, span.end])
    return [(a, b) for a, b in merged]


def _head_text(base: dict[int, str], spans: list[_Span], start: int, end: int) -> list[str]:
    """Base lines [start, end) as one head reads them: its hunks there applied."""
    out: list[str] = []
    pos = start
    for span in sorted((s for s in spans if start <= s.start and s.end <= end), key=lambda s: (s.start, s.end)):
        out += [base[n] for n in range(pos, span.start)]
        out += [ln.text for ln in span.hunk.lines if ln.kind in "+ "]
        pos = max(pos, span.end)
    out += [base[n] for n in range(pos, end)]
    return out


def _shift(spans: list[_Span], before: int) -> int:
    """How far a head's line numbers are from the base's at base line ``before`` (a region's first
    line: every span of that head lies wholly before it or inside the region)."""
    return sum(s.hunk.new_len - s.hunk.old_len for s in spans if s.end <= before and s.start < before)


def _hunk_text(old: list[str], new: list[str], old_first: int, new_first: int) -> list[str]:
    """Unified hunks for ``old`` -> ``new`` whose first lines are numbered ``old_first``/``new_first``."""
    out: list[str] = []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for group in matcher.get_grouped_opcodes(CONTEXT):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        o_len, n_len = i2 - i1, j2 - j1
        o_start = old_first + i1 if o_len else old_first + i1 - 1
        n_start = new_first + j1 if n_len else new_first + j1 - 1
        out.append(f"@@ -{o_start},{o_len} +{n_start},{n_len} @@")
        for tag, a1, a2, b1, b2 in group:
            if tag == "equal":
                out += [" " + text for text in old[a1:a2]]
                continue
            out += ["-" + text for text in old[a1:a2]]
            out += ["+" + text for text in new[b1:b2]]
    return out


def compare_patch(old: FileDiff | None, new: FileDiff | None) -> str:
    """The patch from the old head to the new head of one file ("" when they read the same), given
    each head's patch against the common base (None: the head leaves the file as the base has it)."""
    old_spans, new_spans = _spans(old), _spans(new)
    base: dict[int, str] = {}
    for span in old_spans + new_spans:
        for ln in span.hunk.lines:
            if ln.kind in "- " and ln.old_no is not None:
                base[ln.old_no] = ln.text
    out: list[str] = []
    for start, end in _regions(old_spans + new_spans):
        before = _head_text(base, old_spans, start, end)
        after = _head_text(base, new_spans, start, end)
        if before != after:
            out += _hunk_text(before, after, start + _shift(old_spans, start), start + _shift(new_spans, start))
    return "\n".join(out)


def moved_line(change: FileDiff | None, line: int, start_line: int | None = None) -> int | None:
    """Where a new-side line of the old head is in the new head, given ``change`` (the old -> new
    head patch of its file); None when the push changed that line, or any line of
    ``start_line..line`` (also by inserting between them): then GitHub marks a comment outdated."""
    if change is None:
        return line
    first = start_line if start_line is not None and start_line < line else line
    delta = 0
    for hunk in change.hunks:
        if hunk.old_start > line or (not hunk.old_len and hunk.old_start >= line):
            break
        last_old = hunk.old_start - 1 if hunk.old_len else hunk.old_start
        for ln in hunk.lines:
            if ln.kind == "-":
                if first <= (ln.old_no or 0) <= line:
                    return None
                last_old = ln.old_no or last_old
            elif ln.kind == "+":
                if first <= last_old < line:
                    return None
            else:
                if ln.old_no == line:
                    return ln.new_no
                last_old = ln.old_no or last_old
        delta += hunk.new_len - hunk.old_len
    return line + delta
