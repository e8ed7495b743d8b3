"""Settings: the process-wide ones from ``REVBOT_*`` environment variables, and the per-repository
``.revbot.yml`` that a team commits to say how its pull requests are reviewed.

Environment variables (all optional; ``Settings.from_env`` reads them):

  REVBOT_HOME             data directory; relative defaults below live in it (default: current dir)
  REVBOT_DB               SQLite dataset store (default: revbot.db)
  REVBOT_MODELS_DIR       model versions folder with its ``current`` pointer (default: models)
  REVBOT_MODEL            model for `revbot review` / the service when no version is current:
                          a hub id or a local path
  REVBOT_ADAPTER          a peft adapter directory to load on top of REVBOT_MODEL
  REVBOT_BACKEND          ``local`` (transformers, default) or ``openai`` (an OpenAI-compatible server)
  REVBOT_OPENAI_BASE_URL  base URL of that server, e.g. http://127.0.0.1:8000/v1
  REVBOT_OPENAI_MODEL     model name to ask that server for (a vLLM LoRA name works)
  REVBOT_OPENAI_API_KEY   key for that server (never logged)
  REVBOT_QUANTIZE         ``4bit`` or ``none``; default: 4-bit on CUDA, none on CPU
  REVBOT_BATCH_SIZE       prompts generated together (default 8)
  REVBOT_MAX_NEW_TOKENS   longest answer per hunk, in tokens (default 256)
  REVBOT_TOKEN_BUDGET     most tokens one review may spend, prompts plus answers (default 65536)
  REVBOT_WEBHOOK_SECRET   secret shared with GitHub to sign webhook deliveries (never logged)
  REVBOT_QUEUE            job queue: a SQLite file path or sqlite:///PATH (default: revbot-queue.db)
                          or redis://HOST:PORT/DB
  REVBOT_GITHUB_TOKEN     GitHub token (GITHUB_TOKEN is used when this is unset; never logged)
  REVBOT_GITHUB_API_URL   GitHub API root (default https://api.github.com; GitHub Enterprise:
                          https://HOST/api/v3)
  REVBOT_GITHUB_APP_ID    GitHub App id, with REVBOT_GITHUB_PRIVATE_KEY (path of the App's PEM key);
                          GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY_PATH are used when these are unset
  REVBOT_LOG_LEVEL        DEBUG, INFO, WARNING (default) or ERROR

``.revbot.yml`` keys (all optional; unknown keys are an error so a typo never silently does nothing)::

  enabled: true                 # false: never review this repository
  ignore_paths: ["docs/**"]     # gitignore-style globs never reviewed, on top of the defaults
  default_ignores: true         # false: also review vendored/generated paths (DEFAULT_IGNORES)
  max_comments: 10              # per review
  max_comments_per_file: 3
  skip_drafts: true             # do not review draft pull requests
  model_version: null           # e.g. v3: review with this model version instead of `current`
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from bot.errors import DataError, UsageError

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


@lru_cache(maxsize=1024)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """gitignore-flavoured glob -> regex over a whole relative path. ``**`` crosses directories,
    ``*`` and ``?`` do not; a trailing ``/`` means "this directory and everything in it"."""
    directory = pattern.endswith("/")
    body = pattern.strip("/")
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if body.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif body.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[":
            end = body.find("]", i + 1)
            if end < 0:
                out.append(re.escape(ch))
                i += 1
            else:
                inner = body[i + 1 : end]
                if inner.startswith("!"):
                    inner = "^" + inner[1:]
                out.append(f"[{inner.replace(chr(92), chr(92) * 2)}]")
                i = end + 1
        else:
            out.append(re.escape(ch))
            i += 1
    tail = "/.*" if directory else "(?:/.*)?"
    return re.compile("".join(out) + tail + r"\Z", re.S)


def path_matches(path: str, pattern: str) -> bool:
    """Whether ``path`` (relative, ``/``-separated) is matched by a gitignore-style ``pattern``.

    A pattern without a slash in its middle ("*.lock", "vendor/") matches at any depth; one with a
    slash ("docs/*.md", "/setup.py") is anchored at the repository root.
    """
    path = path.lstrip("/")
    if path.startswith("./"):
        path = path[2:]
    stripped = pattern.strip()
    if not stripped:
        return False
    anchored = "/" in stripped.rstrip("/").lstrip("/") or stripped.startswith("/")
    regex = _glob_regex(stripped.lstrip("/"))
    if anchored:
        return bool(regex.match(path))
    parts = path.split("/")
    return any(regex.match("/".join(parts[k:])) for k in range(len(parts)))


def first_match(path: str, patterns: Any) -> str | None:
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

    def replace(self, **changes: Any) -> "RepoConfig":
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update({k: v for k, v in changes.items() if v is not None})
        return RepoConfig(**data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "ignore_paths": list(self.ignore_paths),
            "default_ignores": self.default_ignores,
            "max_comments": self.max_comments,
            "max_comments_per_file": self.max_comments_per_file,
            "skip_drafts": self.skip_drafts,
            "model_version": self.model_version,
        }

    @classmethod
    def from_yaml(cls, text: str | bytes | None, source: str = ".revbot.yml") -> "RepoConfig":
        """Parse and validate ``.revbot.yml``. Errors are DataError naming ``source``, the line and
        the key; an empty file means all defaults."""
        import yaml

        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        try:
            node = yaml.compose(text or "", Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise DataError(f"invalid YAML: {problem}", source, mark.line + 1 if mark else None) from None
        if node is None:
            return cls(source=source)
        if not isinstance(node, yaml.MappingNode):
            raise DataError("expected a mapping of settings (key: value) at the top level", source, node.start_mark.line + 1)
        values: dict[str, Any] = {}
        known = _KEYS
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key not in known:
                hint = _suggest(str(key), known)
                raise DataError(
                    f"unknown key {key!r}{hint}; known keys: {', '.join(sorted(known))}", source, line
                )
            if key in values:
                raise DataError(f"key {key!r} appears twice", source, line)
            try:
                value = _construct(value_node)
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                raise DataError(f"invalid value for {key!r}: {problem}", source, line) from None
            values[key] = _check(key, value, source, value_node.start_mark.line + 1)
        return cls(source=source, **values)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> "RepoConfig":
        p = Path(path)
        try:
            text = p.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read config file {p}: {exc.strerror or exc}") from None
        return cls.from_yaml(text, source=str(p))


CONFIG_NAMES = (".revbot.yml", ".revbot.yaml")


def find_repo_config(root: str | os.PathLike[str]) -> RepoConfig:
    """The ``.revbot.yml`` at a repository root, or the defaults when there is none."""
    for name in CONFIG_NAMES:
        candidate = Path(root) / name
        if candidate.is_file():
            return RepoConfig.from_file(candidate)
    return RepoConfig()


def _construct(node: Any) -> Any:
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
}
_KEYS = frozenset(_TYPES)


def _check(key: str, value: Any, source: str, line: int) -> Any:
    kind = _TYPES[key]

    def fail(expected: str) -> DataError:
        return DataError(f"{key!r} must be {expected}, got {value!r} ({_yaml_type(value)})", source, line)

    if kind == "bool":
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise fail("a whole number, 0 or more")
        return value
    if kind == "globs":
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise fail("a list of path globs (strings)")
        return tuple(v.strip() for v in value)
    if kind == "version":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
            raise fail("a model version such as v3")
        text = str(value).strip()
        return f"v{text}" if text.isdigit() else text
    raise AssertionError(kind)  # pragma: no cover


def _yaml_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _suggest(key: str, known: frozenset[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------- process settings


ENV_VARS: dict[str, str] = {
    "REVBOT_HOME": "data directory that relative defaults live in",
    "REVBOT_DB": "SQLite dataset store",
    "REVBOT_MODELS_DIR": "model versions folder (with the `current` pointer)",
    "REVBOT_MODEL": "hub id or local path of the model used when no version is current",
    "REVBOT_ADAPTER": "peft adapter directory loaded on top of REVBOT_MODEL",
    "REVBOT_BACKEND": "local or openai",
    "REVBOT_OPENAI_BASE_URL": "base URL of an OpenAI-compatible server",
    "REVBOT_OPENAI_MODEL": "model name on that server",
    "REVBOT_OPENAI_API_KEY": "key for that server",
    "REVBOT_QUANTIZE": "4bit or none",
    "REVBOT_BATCH_SIZE": "prompts generated together",
    "REVBOT_MAX_NEW_TOKENS": "longest answer per hunk in tokens",
    "REVBOT_TOKEN_BUDGET": "most tokens one review may spend",
    "REVBOT_WEBHOOK_SECRET": "webhook signing secret",
    "REVBOT_QUEUE": "job queue: SQLite path, sqlite:///PATH or redis://HOST:PORT/DB",
    "REVBOT_GITHUB_TOKEN": "GitHub token (falls back to GITHUB_TOKEN)",
    "REVBOT_GITHUB_API_URL": "GitHub API root",
    "REVBOT_GITHUB_APP_ID": "GitHub App id",
    "REVBOT_GITHUB_PRIVATE_KEY": "path of the GitHub App's private key (PEM)",
    "REVBOT_LOG_LEVEL": "log level",
}

BACKENDS = ("local", "openai")
QUANTIZE = ("4bit", "none")


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Secrets are kept out of ``repr`` so they never reach a log."""

    home: Path = Path(".")
    db: Path = Path("revbot.db")
    models_dir: Path = Path("models")
    model: str | None = None
    adapter: str | None = None
    backend: str = "local"
    openai_base_url: str | None = None
    openai_model: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    quantize: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    token_budget: int = DEFAULT_TOKEN_BUDGET
    webhook_secret: str | None = field(default=None, repr=False)
    queue: str = "revbot-queue.db"
    github_token: str | None = field(default=None, repr=False)
    github_api_url: str = "https://api.github.com"
    github_app_id: str | None = None
    github_private_key: Path | None = None
    log_level: str = "WARNING"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read ``REVBOT_*``; a bad value is a UsageError naming the variable (never its secret value)."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value and value.strip() else None

        def number(name: str, default: int) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise UsageError(f"{name} must be a whole number, got {raw!r}") from None
            if value <= 0:
                raise UsageError(f"{name} must be greater than 0, got {value}")
            return value

        def choice(name: str, options: tuple[str, ...], default: str | None) -> str | None:
            raw = get(name)
            if raw is None:
                return default
            if raw.lower() not in options:
                raise UsageError(f"{name} must be one of {', '.join(options)}, got {raw!r}")
            return raw.lower()

        home = Path(get("REVBOT_HOME") or ".").expanduser()

        def path(name: str, default: str) -> Path:
            p = Path(get(name) or default).expanduser()
            return p if p.is_absolute() else home / p

        level = (get("REVBOT_LOG_LEVEL") or "WARNING").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise UsageError(f"REVBOT_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        queue = get("REVBOT_QUEUE") or "revbot-queue.db"
        if not re.match(r"^(redis|rediss|sqlite)://", queue) and "://" in queue:
            raise UsageError(f"REVBOT_QUEUE must be a file path, sqlite:///PATH or redis://HOST:PORT/DB, got {queue!r}")
        key = get("REVBOT_GITHUB_PRIVATE_KEY") or get("GITHUB_APP_PRIVATE_KEY_PATH")
        return cls(
            home=home,
            db=path("REVBOT_DB", "revbot.db"),
            models_dir=path("REVBOT_MODELS_DIR", "models"),
            model=get("REVBOT_MODEL"),
            adapter=get("REVBOT_ADAPTER"),
            backend=choice("REVBOT_BACKEND", BACKENDS, "local") or "local",
            openai_base_url=get("REVBOT_OPENAI_BASE_URL"),
            openai_model=get("REVBOT_OPENAI_MODEL"),
            openai_api_key=get("REVBOT_OPENAI_API_KEY"),
            quantize=choice("REVBOT_QUANTIZE", QUANTIZE, None),
            batch_size=number("REVBOT_BATCH_SIZE", DEFAULT_BATCH_SIZE),
            max_new_tokens=number("REVBOT_MAX_NEW_TOKENS", DEFAULT_MAX_NEW_TOKENS),
            token_budget=number("REVBOT_TOKEN_BUDGET", DEFAULT_TOKEN_BUDGET),
            webhook_secret=get("REVBOT_WEBHOOK_SECRET"),
            queue=queue if "://" in queue else str(path("REVBOT_QUEUE", queue)),
            github_token=get("REVBOT_GITHUB_TOKEN") or get("GITHUB_TOKEN"),
            github_api_url=(get("REVBOT_GITHUB_API_URL") or "https://api.github.com").rstrip("/"),
            github_app_id=get("REVBOT_GITHUB_APP_ID") or get("GITHUB_APP_ID"),
            github_private_key=Path(key).expanduser() if key else None,
            log_level=level,
        )
