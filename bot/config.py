"""The per-repository ``.revbot.yml`` that a team commits to say how its pull requests are reviewed:
text in, a validated RepoConfig out. (Reading the file from disk is ``adapters.repo_config``'s;
process-wide settings from the environment are read by ``adapters.settings``.)

``.revbot.yml`` keys (all optional; unknown keys are an error so a typo never silently does nothing)::

  enabled: true                 # false: never review this repository
  ignore_paths: ["docs/**"]     # gitignore-style globs never reviewed, on top of the defaults
  default_ignores: true         # false: also review vendored/generated paths (DEFAULT_IGNORES)
  max_comments: 10              # per review
  max_comments_per_file: 3
  skip_drafts: true             # do not review draft pull requests
  model_version: null           # e.g. v3: review with this model version instead of `current`
  min_confidence: null          # e.g. 0.4: comment only where the model is at least this sure; raises
                                # (never lowers) the threshold the model version was calibrated with

Limits (the service reads the file from a pull request's base branch, so it is untrusted input):
at most 64 KiB, nesting at most 4 levels, no YAML anchors or aliases, at most 200 ``ignore_paths``
of at most 300 characters, counts at most 1000. Errors name the file and line and stay short.
"""

from __future__ import annotations

import fnmatch
import re
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from bot.errors import DataError
from bot.json_types import JSON, JSONObject

if TYPE_CHECKING:
    import yaml

# Vendored, generated and lock files: nobody reviews them, and they are where large PRs get large.
DEFAULT_IGNORES: tuple[str, ...] = (
    "vendor/",
    "vendors/",
    "node_modules/",
    "bower_components/",
    "third_party/",
    "third-party/",
    "dist/",
    "build/",
    "__pycache__/",
    "*.min.js",
    "*.min.css",
    "*.js.map",
    "*.css.map",
    "*.lock",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "pnpm-lock.yaml",
    "go.sum",
    "*_pb2.py",
    "*_pb2.pyi",
    "*_pb2_grpc.py",
    "*.pb.go",
    "*.pb.cc",
    "*.pb.h",
    "*.pb.swift",
    "*.generated.*",
    "*.g.dart",
    "*.freezed.dart",
)

DEFAULT_TOKEN_BUDGET = 65536
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_BATCH_SIZE = 8


# --------------------------------------------------------------------------- path globs

GlobParts = tuple[re.Pattern[str] | None, ...]  # one regex per path component; None: a ``**`` component


def glob_components(pattern: str) -> GlobParts:
    """A ``/``-separated glob -> one regex per component (None for ``**``), for ``components_match``.

    Components are matched one at a time with ``fnmatch.translate``, whose ``*`` compiles to atomic
    groups: a hostile pattern such as ``*a*a*a*a*a*a*b`` cannot make matching backtrack
    exponentially over a long file name (the whole-path regex this replaced took 1.7 s for six
    stars on a 60-character name)."""
    return tuple(None if name == "**" else re.compile(fnmatch.translate(name)) for name in pattern.split("/"))


@lru_cache(maxsize=1024)
def _glob_parts(pattern: str) -> tuple[GlobParts, bool]:
    """A gitignore-flavoured glob -> its components and whether it names a directory (trailing ``/``)."""
    return glob_components(pattern.strip("/")), pattern.endswith("/")


def components_match(
    parts: GlobParts, names: list[str], start: int = 0, *, whole: bool = True, inside: bool = False
) -> bool:
    """Whether ``parts`` match ``names[start:k]`` for some k: k at the end (the whole path) counts
    when ``whole``, a k before it (a directory the path lies in, as gitignore matches) when
    ``inside``. ``**`` spans zero or more components, a trailing one at least one. Memoised walk
    over (pattern, path) positions."""
    n, m = len(names), len(parts)
    seen: set[tuple[int, int]] = set()
    todo = [(0, start)]
    while todo:
        i, j = todo.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        if i == m:
            if (j < n and inside) or (j == n and whole):
                return True
            continue
        part = parts[i]
        if part is None:
            first = j + 1 if i == m - 1 else j  # a trailing ** names something inside the directory
            todo.extend((i + 1, k) for k in range(first, n + 1))
        elif j < n and part.match(names[j]):
            todo.append((i + 1, j + 1))
    return False


def path_matches(path: str, pattern: str) -> bool:
    """Whether ``path`` (relative, ``/``-separated) is matched by a gitignore-style ``pattern``.

    A pattern without a slash in its middle ("*.lock", "vendor/") matches at any depth; one with a
    slash ("docs/*.md", "/setup.py") is anchored at the repository root. ``*``, ``?`` and ``[...]``
    stay within one path component, ``**`` crosses them.
    """
    path = path.lstrip("/")
    if path.startswith("./"):
        path = path[2:]
    stripped = pattern.strip()
    if not stripped:
        return False
    anchored = "/" in stripped.rstrip("/").lstrip("/") or stripped.startswith("/")
    parts, directory = _glob_parts(stripped.lstrip("/"))
    names = path.split("/")
    starts = range(1) if anchored else range(len(names))
    return any(components_match(parts, names, k, whole=not directory, inside=True) for k in starts)


def first_match(path: str, patterns: Iterable[str]) -> str | None:
    """The first pattern of ``patterns`` that matches ``path``, or None."""
    for pattern in patterns:
        if path_matches(path, pattern):
            return pattern
    return None


# --------------------------------------------------------------------------- per-repo config


@dataclass(frozen=True)
class RepoConfig:
    """How one repository wants its pull requests reviewed (its ``.revbot.yml``)."""

    enabled: bool = True
    ignore_paths: tuple[str, ...] = ()
    default_ignores: bool = True
    max_comments: int = 10
    max_comments_per_file: int = 3
    skip_drafts: bool = True
    model_version: str | None = None
    min_confidence: float | None = None
    source: str = field(default=".revbot.yml", compare=False)

    @property
    def all_ignores(self) -> tuple[str, ...]:
        return (DEFAULT_IGNORES if self.default_ignores else ()) + tuple(self.ignore_paths)

    def ignored_by(self, path: str) -> tuple[str, str] | None:
        """(pattern, "default"|"config") when ``path`` is not to be reviewed, else None."""
        own = first_match(path, self.ignore_paths)
        if own is not None:
            return own, "config"
        if self.default_ignores:
            default = first_match(path, DEFAULT_IGNORES)
            if default is not None:
                return default, "default"
        return None

    def to_dict(self) -> JSONObject:
        return {
            "enabled": self.enabled,
            "ignore_paths": list(self.ignore_paths),
            "default_ignores": self.default_ignores,
            "max_comments": self.max_comments,
            "max_comments_per_file": self.max_comments_per_file,
            "skip_drafts": self.skip_drafts,
            "model_version": self.model_version,
            "min_confidence": self.min_confidence,
        }

    @classmethod
    def from_yaml(cls, text: str | bytes | None, source: str = ".revbot.yml") -> RepoConfig:
        """Parse and validate ``.revbot.yml``. Errors are DataError naming ``source``, the line and
        the key; an empty file means all defaults.

        The service reads this file from a pull request's base branch, which anyone who can push a
        branch controls, so it is parsed defensively: at most MAX_CONFIG_BYTES, no anchors or
        aliases (a 300-byte alias bomb expands to gigabytes), at most MAX_CONFIG_DEPTH levels of
        nesting, and every parser failure becomes a DataError of at most MAX_ERROR_CHARS."""
        import yaml

        raw = text.encode("utf-8", errors="replace") if isinstance(text, str) else (text or b"")
        if len(raw) > MAX_CONFIG_BYTES:
            raise _error(f"the file is {len(raw)} bytes; a .revbot.yml may be at most {MAX_CONFIG_BYTES} bytes", source)
        text = raw.decode("utf-8", errors="replace")
        try:
            _check_structure(text, source)
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, "invalid YAML", source) from exc
        except (RecursionError, MemoryError, ValueError, TypeError, OverflowError) as exc:
            raise _error(f"cannot read it as YAML ({type(exc).__name__})", source) from exc
        if node is None:
            return cls(source=source)
        if not isinstance(node, yaml.MappingNode):
            raise _error(
                "expected a mapping of settings (key: value) at the top level", source, node.start_mark.line + 1
            )
        values: dict[str, JSON] = {}
        known = _KEYS
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key not in known:
                hint = _suggest(str(key)[:100], known)
                raise _error(f"unknown key {_show(key)}{hint}; known keys: {', '.join(sorted(known))}", source, line)
            if key in values:
                raise _error(f"key {key!r} appears twice", source, line)
            try:
                value = _construct(value_node)
            except yaml.YAMLError as exc:
                raise _yaml_error(exc, f"invalid value for {key!r}", source, line) from exc
            except (RecursionError, MemoryError, ValueError, TypeError, OverflowError) as exc:
                detail = str(exc)[:120] if isinstance(exc, ValueError) else type(exc).__name__
                raise _error(f"invalid value for {key!r}: {detail}", source, line) from exc
            values[key] = _check(key, value, source, value_node.start_mark.line + 1)
        return cls(source=source, **values)


# the names a repository's configuration may have at its root, the first found wins
CONFIG_NAMES = (".revbot.yml", ".revbot.yaml")

MAX_CONFIG_BYTES = 64 * 1024  # a real .revbot.yml is a few hundred bytes
MAX_CONFIG_DEPTH = 4  # nested mappings/lists; the schema needs 2 (the settings, a list of globs)
MAX_IGNORE_PATHS = 200
MAX_GLOB_CHARS = 300
MAX_COUNT = 1000  # max_comments and max_comments_per_file
MAX_ERROR_CHARS = 300  # an error message that quotes attacker-chosen text stays short


def _error(message: str, source: str, line: int | None = None) -> DataError:
    """A DataError whose message is cut to MAX_ERROR_CHARS: it goes into logs, job rows and a PR."""
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 3] + "..."
    return DataError(message, source, line)


def _yaml_error(exc: yaml.YAMLError, what: str, source: str, line: int | None = None) -> DataError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    return _error(f"{what}: {problem}", source, mark.line + 1 if mark else line)


def _check_structure(text: str, source: str) -> None:
    """Refuse anchors/aliases and deep nesting from the event stream, before anything is built:
    PyYAML's parser keeps its own stack (no recursion), its composer recurses per level, and
    aliases are how a tiny file becomes a huge value."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _error("YAML anchors and aliases (&name, *name) are not allowed in .revbot.yml", source, line)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                raise _error(f"nested more than {MAX_CONFIG_DEPTH} levels deep", source, line)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 60, 60, 2, 4, 4


def _show(value: object) -> str:
    """A short repr of a configured value for an error message (never the whole value: a long
    string or list would be copied into every log line and job row that carries the error)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit number"
    return _REPR.repr(value)


def _construct(node: yaml.Node) -> JSON:
    import yaml

    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


_TYPES: dict[str, str] = {
    "enabled": "bool",
    "ignore_paths": "globs",
    "default_ignores": "bool",
    "max_comments": "count",
    "max_comments_per_file": "count",
    "skip_drafts": "bool",
    "model_version": "version",
    "min_confidence": "probability",
}
_KEYS = frozenset(_TYPES)


def _check(key: str, value: JSON, source: str, line: int) -> JSON:
    kind = _TYPES[key]

    def fail(expected: str) -> DataError:
        return _error(f"{key!r} must be {expected}, got {_show(value)} ({_yaml_type(value)})", source, line)

    if kind == "bool":
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
            raise fail(f"a whole number, 0 or more (at most {MAX_COUNT})")
        return value
    if kind == "globs":
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise fail("a list of path globs (strings)")
        if len(value) > MAX_IGNORE_PATHS:
            raise _error(f"{key!r} has {len(value)} entries; at most {MAX_IGNORE_PATHS} are allowed", source, line)
        long = next((v for v in value if len(v.strip()) > MAX_GLOB_CHARS), None)
        if long is not None:
            raise _error(f"{key!r}: the glob {_show(long)} is longer than {MAX_GLOB_CHARS} characters", source, line)
        return tuple(v.strip() for v in value)
    if kind == "probability":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise fail("a number from 0 to 1")
        return float(value)
    if kind == "version":
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (str, int))
            or (isinstance(value, int) and value.bit_length() > 32)
        ):
            raise fail("a model version such as v3")
        text = str(value).strip()
        if not text or len(text) > 100:
            raise fail("a model version such as v3")
        return f"v{text}" if text.isdigit() else text
    raise AssertionError(kind)  # pragma: no cover


def _yaml_type(value: object) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _suggest(key: str, known: frozenset[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
