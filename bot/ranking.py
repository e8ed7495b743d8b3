"""Which files of a diff get the token budget first: source, then tests, then configuration and
other files, then documentation, and generated, vendored and lock files last.

A review has a budget; in diff order it goes to whatever sorts first (``docs/`` before ``src/``),
so a large pull request was reviewed on its prose and its code was skipped. Ranking first spends
the budget where review comments matter. The rules follow GitHub Linguist's ideas (paths that are
vendored, generated or documentation; extensions that are code) and a repository's own
``.gitattributes`` wins over them: ``linguist-generated``, ``linguist-vendored`` and
``linguist-documentation`` set a file's kind, and ``-linguist-generated`` (or ``=false``) takes a
file out of a rule that would have matched it.

Pure: paths and attribute values in, an order out. Where the attributes come from is the caller's
business: ``git check-attr`` for a local repository (``adapters.sources.GitSource``), or the text of a
``.gitattributes`` file read through the GitHub API (``GitAttributes.parse``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from bot.config import GlobParts, components_match, first_match, glob_components

# tiers, in the order the budget is spent
SOURCE, TEST, OTHER, DOCUMENTATION, LAST = range(5)

LINGUIST_ATTRIBUTES = ("linguist-generated", "linguist-vendored", "linguist-documentation")

# gitignore-style globs (bot.config.path_matches): no slash inside = any depth, "dir/" = a directory
LOCK_FILES: tuple[str, ...] = (
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "bun.lockb",
    "poetry.lock",
    "Pipfile.lock",
    "pdm.lock",
    "uv.lock",
    "Cargo.lock",
    "Gemfile.lock",
    "composer.lock",
    "go.sum",
    "mix.lock",
    "pubspec.lock",
    "Podfile.lock",
    "Package.resolved",
    "packages.lock.json",
    "flake.lock",
    "gradle.lockfile",
    "*.lock",
)
GENERATED: tuple[str, ...] = (
    "*_pb2.py",
    "*_pb2.pyi",
    "*_pb2_grpc.py",
    "*.pb.go",
    "*.pb.gw.go",
    "*.pb.cc",
    "*.pb.h",
    "*.pb.swift",
    "*.pb.dart",
    "*.pbobjc.[hm]",
    "*_grpc.pb.go",
    "*.generated.*",
    "*.g.dart",
    "*.freezed.dart",
    "*.g.cs",
    "*.designer.cs",
    "*.Designer.cs",
    "zz_generated.*",
    "*_generated.go",
    "*.min.js",
    "*.min.css",
    "*-min.js",
    "*.js.map",
    "*.css.map",
    "*.tsbuildinfo",
    "*.pyc",
    "__snapshots__/",
    "*.snap",
    "dist/",
    "build/",
    "__pycache__/",
    "coverage/",
    ".next/",
    "/target/",
)
VENDORED: tuple[str, ...] = (
    "vendor/",
    "vendors/",
    "node_modules/",
    "bower_components/",
    "jspm_packages/",
    "third_party/",
    "third-party/",
    "thirdparty/",
    "3rdparty/",
    "Godeps/",
    ".yarn/",
    "Carthage/",
    "Pods/",
    "/deps/",
    "*.egg-info/",
)
DOCUMENTATION_PATHS: tuple[str, ...] = (
    "docs/",
    "doc/",
    "Documentation/",
    "documentation/",
    "man/",
    "examples/",
    "example/",
    "samples/",
    "*.md",
    "*.markdown",
    "*.mdx",
    "*.rst",
    "*.adoc",
    "*.asciidoc",
    "*.rdoc",
    "*.textile",
    "*.pod",
    "*.org",
    "README*",
    "CHANGES*",
    "CHANGELOG*",
    "HISTORY*",
    "NEWS*",
    "CONTRIBUTING*",
    "LICENSE*",
    "LICENCE*",
    "COPYING*",
    "AUTHORS*",
    "NOTICE*",
    "CODE_OF_CONDUCT*",
    "SECURITY*",
    "SUPPORT*",
    "MAINTAINERS*",
)
TEST_PATHS: tuple[str, ...] = (
    # a singular test/ only at the root: django/test/ and numpy/testing/ are the frameworks' own code
    "/test/",
    "tests/",
    "__tests__/",
    "spec/",
    "specs/",
    "testdata/",
    "**/src/test/",
    "test_*.py",
    "*_test.py",
    "*_tests.py",
    "conftest.py",
    "*_test.go",
    "*.test.[jt]s",
    "*.test.[jt]sx",
    "*.test.mjs",
    "*.spec.[jt]s",
    "*.spec.[jt]sx",
    "*Test.java",
    "*Tests.java",
    "*Test.kt",
    "*Tests.cs",
    "*Test.cs",
    "*_spec.rb",
    "*_test.rb",
    "*Tests.swift",
    "*_test.exs",
    "*_test.dart",
)
SOURCE_EXTENSIONS = frozenset(
    ".py .pyi .pyx .pxd .js .jsx .mjs .cjs .ts .tsx .mts .cts .vue .svelte .go .rs .java .kt .kts .scala .sc "
    ".groovy .gradle .c .h .cc .cpp .cxx .hpp .hh .hxx .ipp .inl .m .mm .cs .fs .fsx .vb .swift .dart .rb .rake "
    ".php .pl .pm .lua .r .jl .ex .exs .erl .hrl .hs .lhs .ml .mli .clj .cljs .cljc .elm .nim .zig .cr .d .f90 "
    ".f95 .for .asm .s .sh .bash .zsh .fish .ps1 .psm1 .bat .cmd .sql .html .htm .jinja .jinja2 .j2 .tmpl "
    ".hbs .ejs .erb .haml .css .scss .sass .less .styl .tf .hcl .nix .proto .graphql .gql .cu .cuh .metal "
    ".glsl .hlsl .wgsl .sol .v .sv .vhd .vhdl .ino .cmake .mk .bzl .star".split()
)
SOURCE_NAMES = frozenset(
    "Makefile GNUmakefile makefile Dockerfile Containerfile Jenkinsfile Rakefile Vagrantfile Justfile "
    "justfile Earthfile Tiltfile BUILD BUILD.bazel WORKSPACE CMakeLists.txt meson.build SConstruct "
    "SConscript".split()
)


@dataclass(frozen=True)
class Linguist:
    """What ``.gitattributes`` says of one path: True (set), False (unset) or None (unspecified)."""

    generated: bool | None = None
    vendored: bool | None = None
    documentation: bool | None = None

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> Linguist:
        """From git's answers (``set``, ``unset``, ``unspecified`` or a value such as ``true``)."""
        return cls(*(_truth(values.get(name)) for name in LINGUIST_ATTRIBUTES))

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.generated, self.vendored, self.documentation))


def _truth(value: str | bool | None) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    text = value.strip().lower()
    if text in ("set", "true", "1", "yes"):
        return True
    if text in ("unset", "false", "0", "no"):
        return False
    return None  # "unspecified", or a value linguist does not read as either


@dataclass(frozen=True)
class FileRank:
    """A file's place in the queue: its ``tier`` (lower first), its ``kind`` and ``why`` it got it."""

    tier: int
    kind: str  # source | test | other | documentation | generated | vendored | lock file
    why: str

    @property
    def label(self) -> str:
        """Shown next to a file the budget did not reach, e.g. ``generated (matches '*_pb2.py')``."""
        return f"{self.kind}, {self.why}" if self.why else self.kind


def classify(path: str, linguist: Linguist | None = None, first_line: str | None = None) -> FileRank:
    """The kind of file ``path`` is. ``linguist`` (from .gitattributes) wins over the built-in
    rules; ``first_line`` (the first line of a new file, if known) lets a script without an
    extension be recognised as code by its ``#!`` line."""
    attrs = linguist or Linguist()
    if attrs.generated:
        return FileRank(LAST, "generated", "linguist-generated in .gitattributes")
    if attrs.vendored:
        return FileRank(LAST, "vendored", "linguist-vendored in .gitattributes")
    if attrs.documentation:
        return FileRank(DOCUMENTATION, "documentation", "linguist-documentation in .gitattributes")
    if attrs.generated is not False:
        for kind, patterns in (("lock file", LOCK_FILES), ("generated", GENERATED)):
            pattern = first_match(path, patterns)
            if pattern is not None:
                return FileRank(LAST, kind, f"matches {pattern!r}")
    if attrs.vendored is not False:
        pattern = first_match(path, VENDORED)
        if pattern is not None:
            return FileRank(LAST, "vendored", f"matches {pattern!r}")
    if attrs.documentation is not False:
        pattern = first_match(path, DOCUMENTATION_PATHS)
        if pattern is not None:
            return FileRank(DOCUMENTATION, "documentation", f"matches {pattern!r}")
    pattern = first_match(path, TEST_PATHS)
    if pattern is not None:
        return FileRank(TEST, "test", f"matches {pattern!r}")
    name = path.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    extension = name[dot:].lower() if dot > 0 else ""
    if extension in SOURCE_EXTENSIONS or name in SOURCE_NAMES or name.startswith(("Dockerfile.", "Makefile.")):
        return FileRank(SOURCE, "source", "")
    if not extension and first_line is not None and first_line.startswith("#!"):
        return FileRank(SOURCE, "source", "a #! script")
    return FileRank(OTHER, "other", "configuration or data" if extension else "")


def rank(
    paths: Sequence[str],
    attributes: Mapping[str, Linguist] | None = None,
    first_lines: Mapping[str, str] | None = None,
) -> list[tuple[int, FileRank]]:
    """(index into ``paths``, its rank) for every path, best first; diff order within a tier."""
    attributes, first_lines = attributes or {}, first_lines or {}
    ranked = [(i, classify(p, attributes.get(p), first_lines.get(p))) for i, p in enumerate(paths)]
    return sorted(ranked, key=lambda item: (item[1].tier, item[0]))


# --------------------------------------------------------------------------- .gitattributes text

MAX_ATTRIBUTES_BYTES = 256 * 1024  # git reads larger files, but a review need not: the rest is ignored
MAX_PATTERN_CHARS = 2048


@dataclass(frozen=True)
class _Rule:
    parts: GlobParts
    basename: bool  # a pattern without a slash matches the file name at any depth
    values: tuple[tuple[str, str], ...]  # (attribute, "set" | "unset" | "unspecified" | value)


class GitAttributes:
    """The linguist attributes of a ``.gitattributes`` file at the repository root, read from its
    text (the GitHub API gives file contents, not a checkout). As in git: the last matching line
    decides each attribute; ``name``, ``-name``, ``!name`` and ``name=value``; ``[attr]`` macros
    expand where they are set; a pattern matches as in .gitignore except that it never matches the
    files inside a directory it names (write ``dir/**``). Nested ``.gitattributes`` files (in
    subdirectories) are not read. Malformed lines are skipped, as git skips them: an odd line must not
    stop a review."""

    def __init__(self, rules: Iterable[_Rule] = ()):
        self.rules = tuple(rules)

    @classmethod
    def parse(cls, text: str | bytes | None) -> GitAttributes:
        if isinstance(text, bytes):
            text = text[:MAX_ATTRIBUTES_BYTES].decode("utf-8", errors="replace")
        lines = [raw.strip() for raw in (text or "")[:MAX_ATTRIBUTES_BYTES].splitlines()]
        # git applies a macro wherever it is set, even above the line that defines it
        macros = {}
        for line in lines:
            if line.startswith("[attr]"):
                name, _, rest = line[len("[attr]") :].replace("\t", " ").partition(" ")
                macros[name] = rest.split()
        rules = []
        for line in lines:
            rule = _parse_line(line, macros)
            if rule is not None:
                rules.append(rule)
        return cls(rules)

    def linguist(self, path: str) -> Linguist:
        values: dict[str, str] = {}
        names = path.lstrip("/").split("/")
        for rule in self.rules:
            if _rule_matches(rule, names):
                values.update(rule.values)
        return Linguist.from_values(values)

    def for_paths(self, paths: Iterable[str]) -> dict[str, Linguist]:
        """Only the paths the file says something about."""
        out = {}
        for path in paths:
            attrs = self.linguist(path)
            if attrs:
                out[path] = attrs
        return out


_ESCAPE = re.compile(r"\\([0-7]{1,3}|.)", re.S)
_SIMPLE_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13}


def _split_quoted(line: str) -> tuple[str, str] | None:
    """(pattern, the rest) of a line whose pattern git C-quoted (``"a b\\303\\251" attr``); None
    when the quote never closes."""
    out = bytearray()
    i = 1
    while i < len(line):
        if line[i] == '"':
            return out.decode("utf-8", errors="replace"), line[i + 1 :]
        m = _ESCAPE.match(line, i)
        if m is None:
            out.extend(line[i].encode("utf-8"))
            i += 1
            continue
        code = m.group(1)
        if code[0] in "01234567":
            out.append(int(code, 8) & 0xFF)
        elif code in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[code])
        else:
            out.extend(code.encode("utf-8"))
        i = m.end()
    return None


def _values(tokens: Iterable[str], macros: Mapping[str, list[str]], depth: int = 0) -> list[tuple[str, str]]:
    """The linguist (attribute, value) pairs that ``tokens`` say, in order, macros expanded."""
    values = []
    for token in tokens:
        if token.startswith("-"):
            name, value = token[1:], "unset"
        elif token.startswith("!"):
            name, value = token[1:], "unspecified"
        elif "=" in token:
            name, value = token.split("=", 1)
        else:
            name, value = token, "set"
        if name in LINGUIST_ATTRIBUTES:
            values.append((name, value))
        elif value == "set" and name in macros and depth < 8:
            values += _values(macros[name], macros, depth + 1)
    return values


def _parse_line(line: str, macros: Mapping[str, list[str]]) -> _Rule | None:
    if not line or line.startswith("#") or line.startswith("[attr]"):
        return None
    if line.startswith('"'):
        split = _split_quoted(line)
        if split is None:
            return None
        pattern, rest = split
    else:
        pattern, _, rest = line.replace("\t", " ").partition(" ")
    if not pattern or pattern.startswith("!") or len(pattern) > MAX_PATTERN_CHARS or pattern.endswith("/"):
        return None  # negation is forbidden and a directory pattern never matches a file
    values = _values(rest.split(), macros)
    if not values:
        return None
    return _Rule(_compile(pattern.lstrip("/")), "/" not in pattern, tuple(values))


@lru_cache(maxsize=512)
def _compile(pattern: str) -> GlobParts:
    return glob_components(pattern)


def _rule_matches(rule: _Rule, names: list[str]) -> bool:
    """Whether the rule matches the whole path (never a directory it lies in)."""
    if rule.basename:
        return bool(rule.parts[0] is not None and rule.parts[0].match(names[-1]))
    return components_match(rule.parts, names)
