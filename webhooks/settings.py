"""The service's settings: the environment's ``adapters.settings.Settings`` (every REVBOT_* variable,
its default and its check, in one place: docs/configuration.md is generated from it), read once per
process, and what only the command line or a test decides (worker threads, dry run, unsigned
deliveries on loopback, the timings tests shorten). One frozen object, passed down, so the web view
and the workers never read the environment themselves.

Draft pull requests are skipped or reviewed as each repository's ``.revbot.yml`` says
(``skip_drafts``, default true), so drafts are queued and the worker decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from adapters.settings import Settings
from bot.errors import UsageError


def _no_environment() -> Settings:
    return Settings.from_env({})


@dataclass(frozen=True)
class ServiceConfig:
    """Everything ``create_app`` and the workers need. ``settings`` holds the environment's values
    (secrets stay SecretStr: out of ``repr``); the other fields are the service's own."""

    settings: Settings = field(default_factory=_no_environment)
    insecure_no_signature: bool = False
    dry_run: bool = False
    workers: int = 1  # queue worker threads
    retry_delay_s: float = 5.0
    reap_interval_s: float = 2.0
    reload_check_s: float = 5.0
    github_options: Mapping[str, Any] = field(default_factory=dict)  # extra GitHubClient keywords (tests)
    gitlab_options: Mapping[str, Any] = field(default_factory=dict)  # extra GitLabClient keywords (tests)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServiceConfig:
        """The environment's settings (``env``: a mapping instead of ``os.environ``, read now), then
        ``overrides``: field names of this class or of ``Settings`` (from command-line options)."""
        return cls(Settings.from_env(env)).with_overrides(overrides)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> ServiceConfig:
        if not overrides:
            return self
        own = {f.name for f in fields(self)} - {"settings"}
        known = own | set(Settings.model_fields)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UsageError(f"unknown service setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        changes = {k: v for k, v in overrides.items() if k in own}
        settings = {k: v for k, v in overrides.items() if k not in own}
        return replace(self, settings=self.settings.replace(**settings) if settings else self.settings, **changes)

    @property
    def secret(self) -> str | None:
        """The webhook secret (REVBOT_WEBHOOK_SECRET)."""
        return self.settings.secret("webhook_secret")

    @property
    def gitlab_secret(self) -> str | None:
        """The GitLab hook's secret token (REVBOT_GITLAB_WEBHOOK_SECRET), sent as X-Gitlab-Token."""
        return self.settings.secret("gitlab_webhook_secret")

    @property
    def gitlab_signing_token(self) -> str | None:
        """GitLab 19+: the hook's signing token (REVBOT_GITLAB_WEBHOOK_SIGNING_TOKEN)."""
        return self.settings.secret("gitlab_webhook_signing_token")

    @property
    def retention_s(self) -> float:
        return self.settings.job_retention_days * 86400.0

    @property
    def heartbeat_s(self) -> float:
        return max(self.settings.worker_lease / 3.0, 0.05)

    @property
    def has_github_credentials(self) -> bool:
        return bool(self.settings.github_token or self.settings.github_app_id)

    def own_logins(self) -> frozenset[str]:
        return frozenset(login.lower() for login in self.settings.bot_logins)

    def check(self) -> None:
        """Refuse settings the service must not run with (the values of ``settings`` were checked
        when they were read)."""
        if not (self.secret or self.gitlab_secret or self.gitlab_signing_token or self.insecure_no_signature):
            raise UsageError(
                "REVBOT_WEBHOOK_SECRET is not set: the service refuses unsigned deliveries. Set it to the "
                "webhook secret configured on GitHub (or REVBOT_GITLAB_WEBHOOK_SECRET to the GitLab hook's "
                "secret token; or pass --insecure-no-signature for a local experiment)"
            )
        if self.workers < 0:
            raise UsageError("--workers must be 0 or more")

    def check_bind(self, host: str) -> None:
        """Unsigned deliveries are for experiments on one machine: refuse them on any other address."""
        if self.insecure_no_signature and not is_loopback(host):
            raise UsageError(
                f"--insecure-no-signature is refused on {host}: it is allowed only on a loopback "
                "address (127.0.0.1, ::1, localhost); set REVBOT_WEBHOOK_SECRET instead"
            )


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
