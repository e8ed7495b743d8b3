"""The service's settings: what the webhook service and its workers use of
``adapters.settings.Settings`` (the environment), and what only they need (worker leases, body
cap, bot logins). One frozen object, built once per process and passed down, so the web view and the
workers never read the environment themselves.

Draft pull requests are skipped or reviewed as each repository's ``.revbot.yml`` says
(``skip_drafts``, default true), so drafts are queued and the worker decides.

Service-only environment variables (all optional; read and checked by the settings model):

  REVBOT_WEBHOOK_MAX_BODY   largest delivery accepted, in bytes (default 10 MiB; GitHub caps at 25 MB)
  REVBOT_BOT_LOGINS         comma-separated logins the bot posts as (its own comments are never
                            recorded as human reviews); ``<app slug>[bot]`` for a GitHub App
  REVBOT_WORKER_LEASE       seconds a worker holds a job between heartbeats (default 60): a killed
                            worker's job is run again after at most this long
  REVBOT_JOB_ATTEMPTS       runs of a job before it is marked failed (default 5)
  REVBOT_JOB_RETENTION_DAYS finished jobs and remembered delivery ids are deleted after this many
                            days (default 7; GitHub lets you redeliver a delivery for 3 days)
  REVBOT_METRICS_TOKEN      a bearer token /metrics and the details of /healthz require; unset,
                            they are answered only to loopback clients that came through no proxy
  REVBOT_UI_TOKEN           the token the operator's pages under /ui/ ask for (REVBOT_UI_TOKEN_FILE:
                            a file holding it); unset, the pages answer 404 (docs/ui.md)
  REVBOT_WEB_WORKERS        gunicorn web processes of `revbot serve` (default 2)
  REVBOT_WEB_THREADS        threads per web process (default 8)
  REVBOT_READ_TIMEOUT       seconds a client may stay silent while sending a request before the
                            connection is closed (default 10)
  REVBOT_WORKER_TIMEOUT     seconds a web process may be unresponsive before gunicorn replaces
                            it (default 30); also the grace period of a stop
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from adapters.settings import DEFAULT_MAX_BODY, Settings
from bot.errors import UsageError


@dataclass(frozen=True)
class ServiceConfig:
    """Everything ``create_app`` and the workers need. Secrets stay out of ``repr``."""

    secret: str | None = field(default=None, repr=False)
    insecure_no_signature: bool = False
    home: Path = Path(".")
    queue: str = "revbot-queue.db"
    db: Path = Path("revbot.db")
    models_dir: Path = Path("models")
    max_body_bytes: int = DEFAULT_MAX_BODY
    bot_logins: tuple[str, ...] = ()
    dry_run: bool = False
    # GitHub
    github_api_url: str = "https://api.github.com"
    github_token: str | None = field(default=None, repr=False)
    github_app_id: str | None = None
    github_private_key: Path | None = None  # the App's PEM key file
    github_private_key_pem: str | None = field(default=None, repr=False)  # or the PEM text itself
    github_options: Mapping[str, Any] = field(default_factory=dict)  # extra GitHubClient keywords (tests)
    # model
    model: str | None = None
    adapter: str | None = None
    backend: str = "local"
    openai_base_url: str | None = None
    openai_model: str | None = None
    quantize: str | None = None
    batch_size: int = 8
    max_new_tokens: int = 256
    token_budget: int = 65536
    # worker
    workers: int = 1
    lease_s: float = 60.0
    max_attempts: int = 5
    retry_delay_s: float = 5.0
    reap_interval_s: float = 2.0
    reload_check_s: float = 5.0
    retention_s: float = 7 * 86400.0
    # web server (`revbot serve`) and who may read /metrics
    metrics_token: str | None = field(default=None, repr=False)
    ui_token: str | None = field(default=None, repr=False)  # the operator pages (/ui/) are off without it
    web_workers: int = 2
    web_threads: int = 8
    read_timeout_s: float = 10.0
    worker_timeout_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServiceConfig:
        """The environment's settings (``env``: a mapping instead of ``os.environ``, read now), then
        ``overrides`` (field names of this class, e.g. from command-line options)."""
        s = Settings.from_env(env)
        base = cls(
            secret=s.secret("webhook_secret"),
            home=s.home,
            queue=s.queue,
            db=s.db,
            models_dir=s.models_dir,
            max_body_bytes=s.webhook_max_body,
            bot_logins=s.bot_logins,
            github_api_url=s.github_api_url,
            github_token=s.secret("github_token"),
            github_app_id=s.github_app_id,
            github_private_key=s.github_app_private_key_file,
            github_private_key_pem=s.secret("github_app_private_key"),
            model=s.model,
            adapter=s.adapter,
            backend=s.backend,
            openai_base_url=s.openai_base_url,
            openai_model=s.openai_model,
            quantize=s.quantize,
            batch_size=s.batch_size,
            max_new_tokens=s.max_new_tokens,
            token_budget=s.token_budget,
            lease_s=s.worker_lease,
            max_attempts=s.job_attempts,
            retention_s=s.job_retention_days * 86400.0,
            metrics_token=s.secret("metrics_token"),
            ui_token=s.ui_token_text(),
            web_workers=s.web_workers,
            web_threads=s.web_threads,
            read_timeout_s=s.read_timeout,
            worker_timeout_s=s.worker_timeout,
        )
        return base.with_overrides(overrides)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> ServiceConfig:
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UsageError(f"unknown service setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        changes = {k: v for k, v in overrides.items()}
        for key in ("home", "db", "models_dir", "github_private_key"):
            if changes.get(key) is not None:
                changes[key] = Path(changes[key])
        if "bot_logins" in changes:
            changes["bot_logins"] = tuple(changes["bot_logins"] or ())
        return replace(self, **changes)

    def check(self) -> None:
        """Refuse settings the service must not run with."""
        if not self.secret and not self.insecure_no_signature:
            raise UsageError(
                "REVBOT_WEBHOOK_SECRET is not set: the service refuses unsigned deliveries. Set it to the "
                "webhook secret configured on GitHub (or pass --insecure-no-signature for a local experiment)"
            )
        if self.max_body_bytes <= 0:
            raise UsageError("the body size cap must be greater than 0")
        if self.workers < 0:
            raise UsageError("--workers must be 0 or more")
        if self.lease_s <= 0:
            raise UsageError("the worker lease must be greater than 0 seconds")
        if self.retention_s <= 0:
            raise UsageError("the job retention must be greater than 0 days")
        for name in ("web_workers", "web_threads"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', ' ')} must be at least 1")
        for name in ("read_timeout_s", "worker_timeout_s"):
            if getattr(self, name) <= 0:
                raise UsageError(f"the {name[:-2].replace('_', ' ')} must be greater than 0 seconds")

    def check_bind(self, host: str) -> None:
        """Unsigned deliveries are for experiments on one machine: refuse them on any other address."""
        if self.insecure_no_signature and not is_loopback(host):
            raise UsageError(
                f"--insecure-no-signature is refused on {host}: it is allowed only on a loopback "
                "address (127.0.0.1, ::1, localhost); set REVBOT_WEBHOOK_SECRET instead"
            )

    @property
    def heartbeat_s(self) -> float:
        return max(self.lease_s / 3.0, 0.05)

    def own_logins(self) -> frozenset[str]:
        return frozenset(login.lower() for login in self.bot_logins)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or "localhost") is this machine's loopback."""
    import ipaddress

    text = (host or "").strip().strip("[]")
    if text.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
