"""The one diff model: unified diff text -> files -> hunks -> lines with old and new numbers.

It reads `git diff` output, GitHub's PR `.diff`, GitHub's per-file ``patch`` strings (hunks with no
file headers), hg/bzr/svn flavoured unified diffs and single hunks such as a review comment's
``diff_hunk``. It also answers the question every posted comment depends on: which
(path, line, side) GitHub accepts a review comment on.

GitHub's rule: a comment on side RIGHT names a line number of the new file that appears in a hunk
as an added or context line; on side LEFT a line number of the old file that appears as a deleted
or context line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

from bot.errors import DiffError

LEFT, RIGHT = "LEFT", "RIGHT"
SIDES = (LEFT, RIGHT)

HUNK_HEADER = re.compile(r"^@@+ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@+ ?(.*)$")
_LOOKS_LIKE_HUNK = re.compile(r"^@@+ *[-+]?\d")  # a hunk header, however mangled
_GIT_HEADER = re.compile(r"^diff --git (.+)$")
_NO_NEWLINE = "\\ No newline at end of file"
# what `diff -r` says about files without diffing them: not a diff, but not junk either
_DIFF_NOTES = ("Only in ", "Common subdirectories: ")


class _BadName(ValueError):
    """A quoted file name git could not have written; parse_diff makes it a DiffError naming the
    line (``offset`` lines below the one being read)."""

    offset = 0


@dataclass(frozen=True)
class Line:
    """One line of a hunk. ``kind`` is '+', '-' or ' '."""

    kind: str
    text: str
    old_no: int | None
    new_no: int | None
    no_newline: bool = False  # followed by "\ No newline at end of file"

    @property
    def side(self) -> str:
        return LEFT if self.kind == "-" else RIGHT

    @property
    def number(self) -> int:
        """The line number on this line's own side (new for '+' and ' ', old for '-')."""
        return self.old_no if self.kind == "-" else self.new_no  # type: ignore[return-value]

    def render(self) -> str:
        out = self.kind + self.text
        return out + "\n" + _NO_NEWLINE if self.no_newline else out


@dataclass
class Hunk:
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    section: str = ""
    lines: list[Line] = field(default_factory=list)

    @property
    def header(self) -> str:
        tail = f" {self.section}" if self.section else ""
        return f"@@ -{self.old_start},{self.old_len} +{self.new_start},{self.new_len} @@{tail}"

    def text(self) -> str:
        """The hunk as unified-diff text, header first, no trailing newline."""
        return "\n".join([self.header, *(line.render() for line in self.lines)])

    @cached_property
    def anchors(self) -> frozenset[tuple[int, str]]:
        """Every (line, side) a review comment may sit on within this hunk."""
        out: set[tuple[int, str]] = set()
        for line in self.lines:
            if line.kind in "+ " and line.new_no is not None:
                out.add((line.new_no, RIGHT))
            if line.kind in "- " and line.old_no is not None:
                out.add((line.old_no, LEFT))
        return frozenset(out)

    def is_commentable(self, line: int, side: str) -> bool:
        return (line, side) in self.anchors

    def line_at(self, line: int, side: str) -> Line | None:
        for candidate in self.lines:
            if side == RIGHT and candidate.kind in "+ " and candidate.new_no == line:
                return candidate
            if side == LEFT and candidate.kind in "- " and candidate.old_no == line:
                return candidate
        return None

    @property
    def added(self) -> int:
        return sum(1 for line in self.lines if line.kind == "+")

    @property
    def removed(self) -> int:
        return sum(1 for line in self.lines if line.kind == "-")

    def sub_hunk(self, start: int, end: int) -> Hunk:
        """Lines [start, end) as a hunk of their own, with a header whose numbers match them."""
        part = self.lines[start:end]
        if not part:
            raise ValueError("empty slice of a hunk")
        old_start = next((ln.old_no for ln in part if ln.old_no is not None), None)
        new_start = next((ln.new_no for ln in part if ln.new_no is not None), None)
        old_len = sum(1 for ln in part if ln.kind in "- ")
        new_len = sum(1 for ln in part if ln.kind in "+ ")
        if old_start is None:  # no old lines: git writes the line before the insertion point
            old_start = _count_before(self.lines[:start], "old", self.old_start)
        if new_start is None:
            new_start = _count_before(self.lines[:start], "new", self.new_start)
        return Hunk(old_start, old_len, new_start, new_len, self.section, list(part))

    def split(self, max_lines: int) -> list[Hunk]:
        """Split into hunks of at most ``max_lines`` lines (for hunks too large for one prompt)."""
        if len(self.lines) <= max_lines:
            return [self]
        return [self.sub_hunk(i, min(i + max_lines, len(self.lines))) for i in range(0, len(self.lines), max_lines)]


def _count_before(previous: list[Line], which: str, start: int) -> int:
    attr = "old_no" if which == "old" else "new_no"
    numbers = [getattr(ln, attr) for ln in previous if getattr(ln, attr) is not None]
    return numbers[-1] if numbers else max(start - 1, 0)


@dataclass
class FileDiff:
    """One file of a diff. ``path`` is the new path (the old one for a deleted file)."""

    path: str
    old_path: str | None = None
    status: str = "modified"  # added | deleted | modified | renamed | copied
    is_binary: bool = False
    is_symlink: bool = False
    old_mode: str | None = None
    new_mode: str | None = None
    hunks: list[Hunk] = field(default_factory=list)

    @cached_property
    def anchors(self) -> frozenset[tuple[int, str]]:
        out: set[tuple[int, str]] = set()
        for hunk in self.hunks:
            out |= hunk.anchors
        return frozenset(out)

    def is_commentable(self, line: int, side: str) -> bool:
        return (line, side) in self.anchors

    def hunk_for(self, line: int, side: str) -> Hunk | None:
        for hunk in self.hunks:
            if hunk.is_commentable(line, side):
                return hunk
        return None

    @property
    def added(self) -> int:
        return sum(h.added for h in self.hunks)

    @property
    def removed(self) -> int:
        return sum(h.removed for h in self.hunks)

    def text(self) -> str:
        """The file as a git-style diff (what GitHub's ``.diff`` holds for it)."""
        old = self.old_path or self.path
        head = [f"diff --git a/{old} b/{self.path}"]
        if self.status == "added":
            head.append(f"new file mode {self.new_mode or '100644'}")
        elif self.status == "deleted":
            head.append(f"deleted file mode {self.old_mode or '100644'}")
        elif self.status == "renamed":
            head += ["similarity index 90%", f"rename from {old}", f"rename to {self.path}"]
        if self.is_binary:
            head.append(f"Binary files a/{old} and b/{self.path} differ")
            return "\n".join(head)
        if self.hunks:
            head.append("--- " + ("/dev/null" if self.status == "added" else f"a/{old}"))
            head.append("+++ " + ("/dev/null" if self.status == "deleted" else f"b/{self.path}"))
        return "\n".join(head + [h.text() for h in self.hunks])


@dataclass
class Diff:
    files: list[FileDiff] = field(default_factory=list)
    source: str = "<diff>"
    warnings: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[FileDiff]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    @cached_property
    def _by_path(self) -> dict[str, FileDiff]:
        return {f.path: f for f in self.files}

    def file(self, path: str) -> FileDiff | None:
        return self._by_path.get(path)

    def is_commentable(self, path: str, line: int, side: str) -> bool:
        found = self.file(path)
        return found is not None and found.is_commentable(line, side)

    @property
    def binary_files(self) -> list[FileDiff]:
        return [f for f in self.files if f.is_binary]

    def text(self) -> str:
        return "\n".join(f.text() for f in self.files) + ("\n" if self.files else "")


# --------------------------------------------------------------------------- parsing


def decode(data: bytes | str, source: str = "<diff>") -> tuple[str, list[str]]:
    """Bytes -> text. Invalid UTF-8 is replaced (U+FFFD) and noted rather than refused."""
    if isinstance(data, str):
        return data, []
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        return data.decode("utf-8", errors="replace"), [
            f"{source}: not valid UTF-8 (first bad byte at offset {exc.start}); decoded with replacement characters"
        ]


def _unquote(name: str) -> str:
    """Undo git's C-style quoting ("a/A \\303\\242 B.py") and strip a trailing timestamp."""
    name = name.rstrip("\r")
    if name.startswith('"'):
        end = _closing_quote(name)
        if end > 0:
            raw, out, i = name[1:end], bytearray(), 0
            escapes = {
                "n": b"\n",
                "t": b"\t",
                '"': b'"',
                "\\": b"\\",
                "a": b"\a",
                "b": b"\b",
                "f": b"\f",
                "r": b"\r",
                "v": b"\v",
            }
            while i < len(raw):
                ch = raw[i]
                if ch == "\\" and i + 1 < len(raw):
                    nxt = raw[i + 1]
                    if nxt in "01234567" and re.match(r"[0-7]{3}", raw[i + 1 : i + 4]):
                        byte = int(raw[i + 1 : i + 4], 8)
                        if byte > 0o377:
                            raise _BadName(
                                f"bad escape \\{raw[i + 1 : i + 4]} in the quoted file name {name[:80]!r} "
                                "(git writes a byte as \\000 to \\377)"
                            )
                        out.append(byte)
                        i += 4
                        continue
                    out += escapes.get(nxt, nxt.encode())
                    i += 2
                    continue
                out += ch.encode("utf-8")
                i += 1
            return out.decode("utf-8", errors="replace")
    # "--- path\t2002-02-21 23:30:39.942229878 -0800": the tab starts a timestamp
    return name.split("\t", 1)[0].rstrip() if "\t" in name else name.rstrip()


def _closing_quote(text: str) -> int:
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    return -1


def _split_git_header(rest: str) -> tuple[str | None, str | None]:
    """'a/x b/x' -> ('a/x', 'b/x'); handles quoted names and names with spaces."""
    if rest.startswith('"'):
        end = _closing_quote(rest)
        first, remainder = rest[: end + 1], rest[end + 1 :].strip()
        return _unquote(first), _unquote(remainder) if remainder else None
    if rest.endswith('"'):
        start = rest.rfind(' "')
        if start > 0:
            return rest[:start], _unquote(rest[start + 1 :])
    # unquoted names may contain spaces: find the split where both halves name the same file
    parts = rest.split(" ")
    for i in range(1, len(parts)):
        left, right = " ".join(parts[:i]), " ".join(parts[i:])
        if _strip_prefix(left, "a/") == _strip_prefix(right, "b/") or left.split("/", 1)[-1] == right.split("/", 1)[-1]:
            return left, right
    half = len(parts) // 2
    return " ".join(parts[:half]) or None, " ".join(parts[half:]) or None


def _strip_prefix(name: str, prefix: str) -> str:
    return name[len(prefix) :] if name.startswith(prefix) else name


def _clean_paths(old: str | None, new: str | None) -> tuple[str | None, str | None]:
    """Drop git's a/ b/ prefixes when the pair uses them; map /dev/null to None."""
    old = None if old in (None, "/dev/null") else old
    new = None if new in (None, "/dev/null") else new
    prefixed = (old is None or old.startswith("a/")) and (new is None or new.startswith("b/")) and (old or new)
    if prefixed:
        old = _strip_prefix(old, "a/") if old else None
        new = _strip_prefix(new, "b/") if new else None
    return old, new


class _FileBuilder:
    def __init__(self) -> None:
        self.old: str | None = None
        self.new: str | None = None
        self.git_old: str | None = None
        self.git_new: str | None = None
        self.status: str | None = None
        self.binary = False
        self.old_mode: str | None = None
        self.new_mode: str | None = None
        self.rename_from: str | None = None
        self.rename_to: str | None = None
        self.saw_headers = False  # --- / +++ seen
        self.dev_null_old = False
        self.dev_null_new = False
        self.hunks: list[Hunk] = []

    def build(self) -> FileDiff:
        old, new = self.old, self.new
        if old is None and new is None:
            old, new = _clean_paths(self.git_old, self.git_new)
        if self.rename_from or self.rename_to:
            git_old, git_new = _clean_paths(self.git_old, self.git_new)
            old = _fuller(self.rename_from, git_old) or old
            new = _fuller(self.rename_to, git_new) or new
        status = self.status
        if status is None:
            if self.dev_null_old:
                status = "added"
            elif self.dev_null_new:
                status = "deleted"
            elif old and new and old != new and self.rename_from:
                status = "renamed"
            elif len(self.hunks) == 1 and self.hunks[0].old_start == 0 and self.hunks[0].old_len == 0:
                status = "added"
            elif len(self.hunks) == 1 and self.hunks[0].new_start == 0 and self.hunks[0].new_len == 0:
                status = "deleted"
            else:
                status = "modified"
        path = (old if status == "deleted" else new) or old or new or "<unknown>"
        old_path = old if status != "added" else None
        symlink = "120000" in (self.old_mode or "", self.new_mode or "")
        return FileDiff(path, old_path, status, self.binary, symlink, self.old_mode, self.new_mode, self.hunks)

    def display_path(self) -> str:
        """Best guess at the file's name while it is still being read (for error messages)."""
        if self.new or self.old:
            return self.new or self.old  # type: ignore[return-value]
        old, new = _clean_paths(self.git_old, self.git_new)
        return new or old or "<unknown file>"


def _fuller(short: str | None, full: str | None) -> str | None:
    """``rename from x`` where the git header says ``a/dir/x``: the header's path is the full one."""
    if short and full and full != short and full.endswith("/" + short):
        return full
    return short


def _is_binary_marker(line: str) -> bool:
    return line.startswith("GIT binary patch") or (line.startswith("Binary files ") and line.endswith(" differ"))


def parse_diff(data: str | bytes, source: str = "<diff>") -> Diff:
    """Parse a whole unified diff (git, GitHub .diff, hg, bzr, svn).

    Raises DiffError (naming ``source``, the line and the hunk) when a hunk's lines do not match its
    header, a hunk header is malformed, a quoted file name is not one git writes, or a non-empty
    text holds no file and no hunk at all (not a unified diff: a README passed by mistake must not
    pass for "nothing to review"). Binary files are kept with ``is_binary`` set and no hunks, so
    callers can report them.
    """
    text, warnings = decode(data, source)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    diff = Diff(source=source, warnings=warnings)
    reader = _DiffReader(lines, source, diff)
    try:
        while reader.i < len(lines):
            reader.step()
    except _BadName as exc:
        raise DiffError(str(exc), source, reader.i + 1 + exc.offset) from exc
    reader.finish()
    if not diff.files:
        _refuse_non_diff(lines, source)
    for f in diff.files:
        if f.is_binary:
            f.hunks = []
    return diff


def _refuse_non_diff(lines: list[str], source: str) -> None:
    """A text with something in it but no file and no hunk is not a diff (empty is: nothing to review)."""
    first = next((k for k, ln in enumerate(lines) if ln.strip() and not ln.startswith(_DIFF_NOTES)), None)
    if first is not None:
        raise DiffError(
            "not a unified diff: it has no file header ('diff --git ...', or '--- a/...' and '+++ b/...') and "
            f"no hunk ('@@ -a,b +c,d @@'); line {first + 1} is {lines[first][:60]!r}",
            source,
            first + 1,
        )


class _DiffReader:
    """One pass over a diff's lines: ``step`` reads what starts at line ``i`` (a git header, a pair of
    ---/+++ names, a hunk, or an extended header line) into the file being built."""

    def __init__(self, lines: list[str], source: str, diff: Diff) -> None:
        self.lines, self.source, self.diff = lines, source, diff
        self.current: _FileBuilder | None = None
        self.i = 0

    def finish(self) -> None:
        if self.current is not None:
            self.diff.files.append(self.current.build())
        self.current = None

    def step(self) -> None:
        raw = self.lines[self.i]
        line = raw[:-1] if raw.endswith("\r") else raw
        git = _GIT_HEADER.match(line)
        header = HUNK_HEADER.match(line)
        if git:
            self.finish()
            self.current = _FileBuilder()
            self.current.git_old, self.current.git_new = _split_git_header(git.group(1))
            self.i += 1
        elif line.startswith("--- ") and self.i + 1 < len(self.lines) and self.lines[self.i + 1].startswith("+++ "):
            self._names(line)
            self.i += 2
        elif header:
            if self.current is None:
                self.current = _FileBuilder()
            hunk, self.i = _read_hunk(
                self.lines,
                self.i,
                header,
                self.source,
                len(self.current.hunks) + 1,
                strict=True,
                path=self.current.display_path(),
            )
            self.current.hunks.append(hunk)
        else:
            self._other(line)
            self.i += 1

    def _names(self, line: str) -> None:
        """The ``--- old`` / ``+++ new`` pair: a new file unless it completes a git header."""
        current = self.current
        if current is None or current.saw_headers or current.hunks:
            self.finish()
            current = self.current = _FileBuilder()
        old_name = _unquote(line[4:])
        try:
            new_name = _unquote(self.lines[self.i + 1].rstrip("\r")[4:])
        except _BadName as exc:
            exc.offset = 1
            raise
        current.dev_null_old = old_name == "/dev/null"
        current.dev_null_new = new_name == "/dev/null"
        current.old, current.new = _clean_paths(old_name, new_name)
        if current.old is None and current.new is not None and not current.dev_null_old:
            current.old = current.new
        if current.new is None and current.old is not None and not current.dev_null_new:
            current.new = current.old
        current.saw_headers = True

    def _other(self, line: str) -> None:
        """Anything but a file header or a hunk: a malformed hunk header, a mail signature, a binary
        marker, an extended header line, or a hunk line past what its header counted."""
        current = self.current
        if line.startswith("@@") and (current is not None or _LOOKS_LIKE_HUNK.match(line)):
            where = f" of {current.display_path()}" if current is not None else ""
            raise DiffError(
                f"malformed hunk header{where}: {line[:80]!r} (expected '@@ -a,b +c,d @@')", self.source, self.i + 1
            )
        if line in ("-- ", "--"):
            # `git format-patch` mail signature ("-- " then the git version): the patch is over
            self.finish()
        elif (
            line.startswith("Binary files ")
            and line.endswith(" differ")
            and (current is None or current.hunks or current.saw_headers or current.binary)
        ):
            # a "Binary files" line of its own (diff -u -N, debdiff) starts a new file
            self.finish()
            self.current = _FileBuilder()
            _extended_header(self.current, line)
        elif current is not None and not current.hunks:
            _extended_header(current, line)
        elif line[:1] in ("+", "-") and current is not None and current.hunks:
            last = current.hunks[-1]
            raise DiffError(
                "hunk has more lines than its header says",
                self.source,
                self.i + 1,
                _hunk_label(len(current.hunks), last.header, current.display_path()),
            )


def _extended_header(current: _FileBuilder, line: str) -> None:
    if line.startswith("new file mode "):
        current.status, current.new_mode = "added", line.split()[-1]
        current.dev_null_old = True
    elif line.startswith("deleted file mode "):
        current.status, current.old_mode = "deleted", line.split()[-1]
        current.dev_null_new = True
    elif line.startswith("old mode "):
        current.old_mode = line.split()[-1]
    elif line.startswith("new mode "):
        current.new_mode = line.split()[-1]
    elif line.startswith("rename from ") or line.startswith("copy from "):
        current.rename_from = _unquote(line.split(" ", 2)[2])
        current.status = "renamed" if line.startswith("rename") else "copied"
    elif line.startswith("rename to ") or line.startswith("copy to "):
        current.rename_to = _unquote(line.split(" ", 2)[2])
    elif line.startswith("index ") and " " in line[6:]:
        mode = line.split()[-1]
        if mode.isdigit():
            current.old_mode = current.old_mode or mode
            current.new_mode = current.new_mode or mode
    elif _is_binary_marker(line):
        current.binary = True
        if line.startswith("Binary files "):
            m = re.match(r"Binary files (?:Binary files )?(.+) and (.+) differ$", line)
            if m and current.old is None and current.new is None:
                current.dev_null_old = m.group(1) == "/dev/null"
                current.dev_null_new = m.group(2) == "/dev/null"
                current.old, current.new = _clean_paths(_unquote(m.group(1)), _unquote(m.group(2)))
                current.old = current.old or (None if current.dev_null_old else current.new)
                current.new = current.new or (None if current.dev_null_new else current.old)


def _hunk_label(number: int, header: str, path: str | None) -> str:
    return f"#{number} of {path}: {header}" if path else f"#{number} {header}"


def _read_hunk(
    lines: list[str], i: int, header: re.Match[str], source: str, number: int, strict: bool, path: str | None = None
) -> tuple[Hunk, int]:
    old_start, old_len = int(header.group(1)), int(header.group(2) if header.group(2) is not None else 1)
    new_start, new_len = int(header.group(3)), int(header.group(4) if header.group(4) is not None else 1)
    hunk = Hunk(old_start, old_len, new_start, new_len, header.group(5).rstrip("\r"))
    label = _hunk_label(number, hunk.header, path)
    old_no, new_no = old_start, new_start
    old_left, new_left = old_len, new_len
    i += 1
    n = len(lines)
    while i < n and (old_left > 0 or new_left > 0):
        raw = lines[i]
        line = raw[:-1] if raw.endswith("\r") else raw
        kind = line[:1]
        if line.startswith("\\"):
            if hunk.lines:
                hunk.lines[-1] = _with_no_newline(hunk.lines[-1])
            i += 1
            continue
        if line == "":  # some tools drop the single space of an empty context line
            kind, line = " ", " "
        if kind == " " and old_left > 0 and new_left > 0:
            hunk.lines.append(Line(" ", line[1:], old_no, new_no))
            old_no, new_no, old_left, new_left = old_no + 1, new_no + 1, old_left - 1, new_left - 1
        elif kind == "-" and old_left > 0:
            hunk.lines.append(Line("-", line[1:], old_no, None))
            old_no, old_left = old_no + 1, old_left - 1
        elif kind == "+" and new_left > 0:
            hunk.lines.append(Line("+", line[1:], None, new_no))
            new_no, new_left = new_no + 1, new_left - 1
        else:
            if not strict:
                break
            if kind not in "+- ":
                what = f"hunk ends early: {old_left} old and {new_left} new lines missing, found {line[:60]!r}"
            else:
                over = "old" if old_left == 0 and kind in "- " else "new"
                what = (
                    f"hunk has more {over}-file lines than its header says "
                    f"(expected {old_left} more old and {new_left} more new lines, found {line[:60]!r})"
                )
            raise DiffError(what, source, i + 1, label)
        i += 1
    if strict and (old_left > 0 or new_left > 0):
        raise DiffError(f"diff ends inside a hunk: {old_left} old and {new_left} new lines missing", source, i, label)
    # a trailing "\ No newline at end of file" belongs to this hunk
    if i < n and lines[i].startswith("\\") and hunk.lines:
        hunk.lines[-1] = _with_no_newline(hunk.lines[-1])
        i += 1
    return hunk, i


def _with_no_newline(line: Line) -> Line:
    return Line(line.kind, line.text, line.old_no, line.new_no, True)


def parse_patch(
    patch: str | None,
    path: str,
    old_path: str | None = None,
    status: str = "modified",
    source: str | None = None,
    strict: bool = True,
) -> FileDiff:
    """Parse GitHub's per-file ``patch`` string (hunks, no file headers) of the PR files API.

    GitHub omits ``patch`` for binary and very large files: that yields a FileDiff with no hunks and
    ``is_binary`` left to the caller.
    """
    source = source or path
    hunks: list[Hunk] = []
    if patch:
        lines = patch.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        i = 0
        while i < len(lines):
            header = HUNK_HEADER.match(lines[i].rstrip("\r"))
            if header:
                hunk, i = _read_hunk(lines, i, header, source, len(hunks) + 1, strict)
                hunks.append(hunk)
            elif lines[i].strip() and strict:
                raise DiffError(f"expected a hunk header, found {lines[i][:60]!r}", source, i + 1)
            else:
                i += 1
    return FileDiff(
        path,
        old_path if status in ("renamed", "copied") else (None if status == "added" else path),
        status,
        hunks=hunks,
    )


def parse_hunk(text: str, source: str = "<hunk>", strict: bool = False) -> Hunk:
    """Parse one hunk starting with its ``@@`` header.

    Not strict by default because a review comment's ``diff_hunk`` is cut off at the commented line,
    so it holds fewer lines than its header announces.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    start = next((k for k, ln in enumerate(lines) if HUNK_HEADER.match(ln)), None)
    if start is None:
        raise DiffError("no '@@ -a,b +c,d @@' hunk header", source, 1)
    hunk, _ = _read_hunk(lines, start, HUNK_HEADER.match(lines[start]), source, 1, strict)  # type: ignore[arg-type]
    return hunk


def anchors_of(files: Iterable[FileDiff]) -> set[tuple[str, int, str]]:
    return {(f.path, line, side) for f in files for (line, side) in f.anchors}
