"""Every environment variable revbot reads, in one settings model (pydantic-settings).

``Settings.from_env()`` reads the environment at call time (``os.environ``, or a mapping a test
passes) and validates every value; a bad one is a UsageError naming the variable, what is wrong
with the value and the form expected, never a secret's value. Empty values count as unset, and
values are stripped.

Paths: ``REVBOT_HOME`` is the data directory; a relative ``REVBOT_DB``, ``REVBOT_MODELS_DIR`` or
SQLite ``REVBOT_QUEUE`` lives in it (default: the current directory).

GitHub App credentials have one set of names for every command (serve, worker, harvest, retrain):
``REVBOT_GITHUB_APP_ID``, ``REVBOT_GITHUB_APP_PRIVATE_KEY_FILE`` (path of the PEM key) or
``REVBOT_GITHUB_APP_PRIVATE_KEY`` (the PEM text itself, for platforms that hand secrets over as
variables) and ``REVBOT_GITHUB_APP_INSTALLATION_ID`` (harvest and retrain; the service reads the
installation from each delivery). Each variable has one name; ``GITHUB_TOKEN``, ``GITHUB_API_URL``
and ``OPENAI_API_KEY`` are read as fallbacks because CI systems and other tools set them.

``ENV_VARS`` lists every variable with a line of documentation (docs/configuration.md's table is generated from the fields).
"""

from __future__ import annotations

import logging
import os
import re
import reprlib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.config import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, DEFAULT_TOKEN_BUDGET
from bot.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_GITLAB_URL = "https://gitlab.com"
DEFAULT_QUEUE = "revbot-queue.db"
DEFAULT_MAX_BODY = 10 * 1024 * 1024
BACKENDS = ("local", "openai")
QUANTIZE = ("4bit", "none")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
UI_TOKEN_MIN = 16  # characters: the login is rate-limited, but a short token is still guessable

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]

# The mapping the next Settings() reads; None: os.environ. A ContextVar, so threads never mix them.
_SOURCE: ContextVar[Mapping[str, str] | None] = ContextVar("revbot_settings_env", default=None)


def _env(*names: str, doc: str, expected: str = "", secret: bool = False, default: Any = None) -> Any:
    """A field read from the first set variable of ``names`` (the current name first)."""
    return Field(
        default,
        validation_alias=AliasChoices(*names),
        description=doc,
        json_schema_extra={"expected": expected, "secret": secret},
    )


def _positive(name: str, *, default: float, doc: str, unit: str = "") -> Any:
    """A field for a number greater than 0 (its type says int or float), whose expected form names
    ``unit`` ("seconds": "a number of seconds ..."; none: "a whole number ...") and the default."""
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    form = f"a number of {unit}" if unit else "a whole number"
    return _env(name, default=default, doc=doc, expected=f"{form} greater than 0, e.g. {shown}")


class _EnvironmentSource(PydanticBaseSettingsSource):
    """The variables the fields name, from one mapping: stripped, empty ones left out. The model's
    aliases then pick the first name present, so revbot's own name wins over a fallback."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._env = env

    def _value(self, name: str) -> str | None:
        value = self._env.get(name)
        return value.strip() if isinstance(value, str) and value.strip() else None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        for name in env_names(field):
            value = self._value(name)
            if value is not None:
                return value, name, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field in self.settings_cls.model_fields.values():
            for name in env_names(field):
                value = self._value(name)
                if value is not None:
                    values[name] = value
        return values


def env_names(field: FieldInfo) -> tuple[str, ...]:
    """The variables a field is read from, the current name first."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(choice for choice in alias.choices if isinstance(choice, str))
    return (alias,) if isinstance(alias, str) else ()


class Settings(BaseSettings):
    """Process-wide settings from the environment. Secrets are SecretStr: never in repr or a dump."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
        hide_input_in_errors=True,  # a ValidationError kept as a cause must not carry a secret
    )

    # -- where things live (home first: the paths after it are resolved against it)
    home: Path = _env(
        "REVBOT_HOME",
        default=Path("."),
        doc="data directory the relative paths below live in (default: the current directory)",
    )
    db: Path = _env("REVBOT_DB", default=Path("revbot.db"), doc="SQLite dataset store")
    models_dir: Path = _env(
        "REVBOT_MODELS_DIR", default=Path("models"), doc="model versions folder with its `current` pointer"
    )
    cache_dir: Path | None = _env(
        "REVBOT_CACHE_DIR", doc="where embedded models are converted to (default $REVBOT_HOME/cache or ~/.cache/revbot)"
    )
    xdg_cache_home: Path | None = _env("XDG_CACHE_HOME", doc="the user's cache directory (default ~/.cache)")
    queue: str = _env(
        "REVBOT_QUEUE",
        default=DEFAULT_QUEUE,
        doc="job queue: a SQLite file, sqlite:///PATH or redis://HOST:PORT/DB",
        expected="a file path, sqlite:///PATH or redis://HOST:PORT/DB",
    )
    # -- the model
    model: str | None = _env(
        "REVBOT_MODEL",
        doc="hub id, local path or embedded name used when no version is current (unset: the embedded smollm2-135m)",
    )
    adapter: str | None = _env(
        "REVBOT_ADAPTER", doc="a peft adapter directory loaded on top of REVBOT_MODEL (pins the model: no hot reload)"
    )
    backend: Literal["local", "openai"] = _env(
        "REVBOT_BACKEND",
        default="local",
        doc="local (transformers in the process) or openai (an OpenAI-compatible server)",
        expected="one of local, openai",
    )
    openai_base_url: str | None = _env(
        "REVBOT_OPENAI_BASE_URL", doc="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
    )
    openai_model: str | None = _env("REVBOT_OPENAI_MODEL", doc="model name on that server (a vLLM LoRA name works)")
    openai_api_key: SecretStr | None = _env(
        "REVBOT_OPENAI_API_KEY", "OPENAI_API_KEY", secret=True, doc="key for that server (OPENAI_API_KEY: fallback)"
    )
    quantize: Literal["4bit", "none"] | None = _env(
        "REVBOT_QUANTIZE", doc="4bit or none (default: 4-bit on CUDA, none on CPU)", expected="one of 4bit, none"
    )
    batch_size: PositiveInt = _positive(
        "REVBOT_BATCH_SIZE", default=DEFAULT_BATCH_SIZE, doc="prompts generated together"
    )
    max_new_tokens: PositiveInt = _positive(
        "REVBOT_MAX_NEW_TOKENS", default=DEFAULT_MAX_NEW_TOKENS, doc="longest answer per hunk, in tokens"
    )
    token_budget: PositiveInt = _positive(
        "REVBOT_TOKEN_BUDGET",
        default=DEFAULT_TOKEN_BUDGET,
        doc="most tokens one review may spend, prompts and answers; files beyond it are listed as skipped",
    )
    hf_hub_offline: str | None = _env("HF_HUB_OFFLINE", doc="1: never download from the Hugging Face hub")
    transformers_offline: str | None = _env("TRANSFORMERS_OFFLINE", doc="1: the same, transformers' older name")
    # -- GitHub
    github_token: SecretStr | None = _env(
        "REVBOT_GITHUB_TOKEN", "GITHUB_TOKEN", secret=True, doc="GitHub token (GITHUB_TOKEN: fallback)"
    )
    github_api_url: str = _env(
        "REVBOT_GITHUB_API_URL",
        "GITHUB_API_URL",
        default=DEFAULT_API_URL,
        doc="GitHub API root; GitHub Enterprise: https://HOST/api/v3 (GITHUB_API_URL: fallback)",
        expected="an http:// or https:// URL such as https://HOST/api/v3",
    )
    github_app_id: str | None = _env(
        "REVBOT_GITHUB_APP_ID", doc="GitHub App id: serve, worker, harvest and retrain act as the App"
    )
    github_app_private_key_file: Path | None = _env(
        "REVBOT_GITHUB_APP_PRIVATE_KEY_FILE",
        doc="path of the GitHub App's private key (PEM)",
    )
    github_app_private_key: SecretStr | None = _env(
        "REVBOT_GITHUB_APP_PRIVATE_KEY",
        secret=True,
        doc="the GitHub App's private key itself (PEM text), instead of a file",
        expected="the PEM text of the App's private key (-----BEGIN ... PRIVATE KEY-----); "
        "a path goes in REVBOT_GITHUB_APP_PRIVATE_KEY_FILE",
    )
    github_app_installation_id: PositiveInt | None = _env(
        "REVBOT_GITHUB_APP_INSTALLATION_ID",
        doc="the App's installation to act as (harvest, retrain)",
        expected="the installation's number, e.g. 12345678",
    )
    # -- GitLab
    gitlab_token: SecretStr | None = _env(
        "REVBOT_GITLAB_TOKEN",
        "GITLAB_TOKEN",
        secret=True,
        doc="GitLab access token, scope api (GITLAB_TOKEN: fallback)",
    )
    gitlab_url: str = _env(
        "REVBOT_GITLAB_URL",
        "GITLAB_URL",
        default=DEFAULT_GITLAB_URL,
        doc="GitLab instance root (GITLAB_URL: fallback)",
        expected="an http:// or https:// URL such as https://gitlab.example.com",
    )
    gitlab_webhook_secret: SecretStr | None = _env(
        "REVBOT_GITLAB_WEBHOOK_SECRET", secret=True, doc="the GitLab webhook's secret token (X-Gitlab-Token)"
    )
    gitlab_webhook_signing_token: SecretStr | None = _env(
        "REVBOT_GITLAB_WEBHOOK_SIGNING_TOKEN",
        secret=True,
        doc="GitLab 19+: the hook's signing token, whsec_<base64> (webhook-signature is then checked)",
        expected="whsec_ followed by the base64 key GitLab shows",
    )
    # -- the webhook service
    webhook_secret: SecretStr | None = _env(
        "REVBOT_WEBHOOK_SECRET", secret=True, doc="webhook signing secret; the service refuses to start without it"
    )
    webhook_max_body: PositiveInt = _positive(
        "REVBOT_WEBHOOK_MAX_BODY", default=DEFAULT_MAX_BODY, doc="largest delivery accepted, in bytes", unit="bytes"
    )
    bot_logins: tuple[str, ...] = _env(
        "REVBOT_BOT_LOGINS",
        default=(),
        doc="comma-separated logins the bot posts as (their comments are never recorded as human reviews)",
        expected="login,login...",
    )
    worker_lease: PositiveFloat = _positive(
        "REVBOT_WORKER_LEASE",
        default=60.0,
        doc="seconds a worker holds a job between heartbeats; a killed worker's job runs again after it",
        unit="seconds",
    )
    job_attempts: PositiveInt = _positive(
        "REVBOT_JOB_ATTEMPTS", default=5, doc="runs of a job before it is marked failed"
    )
    job_retention_days: PositiveFloat = _positive(
        "REVBOT_JOB_RETENTION_DAYS", default=7.0, doc="days finished jobs and delivery ids are kept", unit="days"
    )
    metrics_token: SecretStr | None = _env(
        "REVBOT_METRICS_TOKEN",
        secret=True,
        doc="bearer token /metrics and the details of /healthz require (unset: this machine only)",
    )
    ui_token: SecretStr | None = _env(
        "REVBOT_UI_TOKEN",
        secret=True,
        doc="token the operator's pages (/ui/) ask for at login; unset (and no file): the pages are off",
        expected=f"a random string of at least {UI_TOKEN_MIN} characters, e.g. from `openssl rand -hex 24`",
    )
    ui_token_file: Path | None = _env(
        "REVBOT_UI_TOKEN_FILE", doc="a file holding that token (a mounted secret), read when REVBOT_UI_TOKEN is unset"
    )
    web_workers: PositiveInt = _positive(
        "REVBOT_WEB_WORKERS", default=2, doc="gunicorn web processes of `revbot serve`"
    )
    web_threads: PositiveInt = _positive("REVBOT_WEB_THREADS", default=8, doc="threads per web process")
    read_timeout: PositiveFloat = _positive(
        "REVBOT_READ_TIMEOUT", default=10.0, doc="seconds a client may stay silent mid-request", unit="seconds"
    )
    # -- issue 22: slow and oversized requests (read by webhooks.server)
    web_worker_class: Literal["gevent", "gthread"] = _env(
        "REVBOT_WEB_WORKER_CLASS",
        default="gevent",
        doc="web worker of `revbot serve`: gevent (event loop) or gthread (thread pool)",
        expected="gevent or gthread",
    )
    web_connections: PositiveInt = _positive(
        "REVBOT_WEB_CONNECTIONS", default=1000, doc="connections one gevent web process holds at once"
    )
    header_timeout: PositiveFloat = _positive(
        "REVBOT_HEADER_TIMEOUT", default=10.0, doc="seconds a client has to send a request's headers", unit="seconds"
    )
    body_timeout: PositiveFloat = _positive(
        "REVBOT_BODY_TIMEOUT", default=10.0, doc="seconds a client has to send a request's body", unit="seconds"
    )
    # -- end issue 22
    worker_timeout: PositiveFloat = _positive(
        "REVBOT_WORKER_TIMEOUT",
        default=30.0,
        doc="seconds before a hung web process is replaced; also the grace period of a stop",
        unit="seconds",
    )
    prometheus_multiproc_dir: str | None = _env(
        "PROMETHEUS_MULTIPROC_DIR", doc="where the processes of `revbot serve` share their counters (set by serve)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = _env(
        "REVBOT_LOG_LEVEL", default="WARNING", doc="log level", expected="DEBUG, INFO, WARNING, ERROR or CRITICAL"
    )

    # ----------------------------------------------------------------- reading

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env = _SOURCE.get()
        return init_settings, _EnvironmentSource(settings_cls, os.environ if env is None else env)

    def replace(self, **changes: Any) -> Settings:
        """These settings with ``changes`` (field names, e.g. from command-line options), each checked
        as its variable would be; nothing is read from the environment. A bad value is a UsageError."""
        fields = type(self).model_fields
        values = {env_names(fields[name])[0]: value for name, value in {**dict(self), **changes}.items()}
        return type(self)._checked({}, values)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, only: tuple[str, ...] = ()) -> Settings:
        """The settings from ``env`` (default: ``os.environ``, read now). A bad value is a UsageError
        naming the variable, the problem and the expected form (a secret's value is never shown).
        ``only``: read and check just these fields' variables, the others keep their defaults (for a
        value needed before the rest is checked, such as the log level every command sets first, and
        for library helpers that need one value: a bad unrelated variable is the command's to report)."""
        source: Mapping[str, str] = os.environ if env is None else env
        if only:
            names = {name for field in only for name in env_names(cls.model_fields[field])}
            source = {name: value for name, value in source.items() if name in names}
        return cls._checked(source, {})

    @classmethod
    def _checked(cls, source: Mapping[str, str], values: Mapping[str, Any]) -> Settings:
        """Settings from ``values`` (keyed by variable) and the variables in ``source``, every value
        checked; a bad one is a UsageError (``_explain``)."""
        token = _SOURCE.set(source)
        try:
            return cls(**values)
        except ValidationError as exc:
            raise UsageError(_explain(exc)) from exc
        finally:
            _SOURCE.reset(token)

    # ----------------------------------------------------------------- checks and conversions

    @field_validator(
        "home", "cache_dir", "xdg_cache_home", "github_app_private_key_file", "ui_token_file", mode="after"
    )
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("db", "models_dir", mode="after")
    @classmethod
    def _in_home(cls, value: Path, info: ValidationInfo) -> Path:
        return _under_home(value, info)

    @field_validator("queue", mode="after")
    @classmethod
    def _queue(cls, value: str, info: ValidationInfo) -> str:
        if "://" in value:
            if not re.match(r"^(redis|rediss|sqlite)://", value):
                raise ValueError("is a URL of an unknown kind")
            return value
        return str(_under_home(Path(value), info))

    @field_validator("backend", "quantize", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("github_api_url", "gitlab_url", mode="after")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"https?://[^/]+", value):
            raise ValueError("does not start with http:// or https://")
        return value.rstrip("/")

    @field_validator("github_app_private_key", mode="after")
    @classmethod
    def _pem(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and "-----BEGIN" not in value.get_secret_value():
            raise ValueError("is not PEM text")
        return value

    @field_validator("ui_token", mode="after")
    @classmethod
    def _ui_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < UI_TOKEN_MIN:
            raise ValueError(f"is shorter than {UI_TOKEN_MIN} characters")
        return value

    @field_validator("bot_logins", mode="before")
    @classmethod
    def _logins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(login.strip() for login in value.split(",") if login.strip())
        return value

    # ----------------------------------------------------------------- derived values

    @property
    def hub_offline(self) -> bool:
        """Whether HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE asks for no downloads."""
        return any(
            (value or "").upper() in {"1", "ON", "YES", "TRUE"}
            for value in (self.hf_hub_offline, self.transformers_offline)
        )

    @property
    def embedded_cache(self) -> Path:
        """Where embedded models are converted to: REVBOT_CACHE_DIR, else $REVBOT_HOME/cache when a
        home is set, else $XDG_CACHE_HOME/revbot (~/.cache/revbot)."""
        if self.cache_dir is not None:
            return self.cache_dir
        if "home" in self.model_fields_set:
            return self.home / "cache"
        return (self.xdg_cache_home or Path.home() / ".cache") / "revbot"

    def ui_token_text(self) -> str | None:
        """The operator pages' token: REVBOT_UI_TOKEN, else the stripped text of REVBOT_UI_TOKEN_FILE;
        None when neither is set (the pages are off). A file that cannot be read, or holds too short
        a token, is a UsageError naming the file (never its contents)."""
        value = self.secret("ui_token")
        if value is not None or self.ui_token_file is None:
            return value
        path = self.ui_token_file
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"REVBOT_UI_TOKEN_FILE {path} cannot be read: {getattr(exc, 'strerror', None) or exc}"
            ) from exc
        if len(text) < UI_TOKEN_MIN:
            raise UsageError(
                f"REVBOT_UI_TOKEN_FILE {path} holds a token shorter than {UI_TOKEN_MIN} characters "
                "(value not shown); write a random string such as `openssl rand -hex 24` into it"
            )
        return text

    def secret(self, name: str) -> str | None:
        """A secret field's plain value (``secret("github_token")``), or None when unset."""
        value = getattr(self, name)
        if value is not None and not isinstance(value, SecretStr):
            raise AttributeError(f"{name} is not a secret setting")
        return value.get_secret_value() if value is not None else None


def _under_home(path: Path, info: ValidationInfo) -> Path:
    """``path`` (``~`` expanded) as it is when absolute, else inside REVBOT_HOME (validated before it)."""
    path = path.expanduser()
    return path if path.is_absolute() else Path(info.data.get("home") or ".") / path


def _fields_by_variable() -> dict[str, FieldInfo]:
    return {name: field for field in Settings.model_fields.values() for name in env_names(field)}


ENV_VARS: dict[str, str] = {
    name: field.description or "" for field in Settings.model_fields.values() for name in env_names(field)
}


_SHOW = reprlib.Repr()
_SHOW.maxstring = 60


def _problem(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind == "value_error" and ctx.get("error") is not None:
        return str(ctx["error"])
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return "is not a whole number"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return "is not a number"
    if kind in ("greater_than", "greater_than_equal"):
        return f"is not greater than {ctx.get('gt', ctx.get('ge', 0))}"
    if kind == "literal_error":
        return "is not one of the choices"
    return "is not valid"


def _explain(exc: ValidationError) -> str:
    """One line per bad variable: NAME, what is wrong (the value unless it is a secret), the form expected."""
    fields = _fields_by_variable()
    lines = []
    for error in exc.errors():
        loc = error.get("loc") or ("?",)
        name = str(loc[0])
        field = fields.get(name)
        extra = field.json_schema_extra if field is not None and isinstance(field.json_schema_extra, dict) else {}
        shown = "value not shown" if extra.get("secret") else f"got {_SHOW.repr(error.get('input'))}"
        expected = extra.get("expected") or "a valid value"
        lines.append(f"{name} {_problem(error)} ({shown}); expected {expected}")
    return "; ".join(lines)
