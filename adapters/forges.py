"""The forge clients the webhook worker's jobs talk through, built from the settings.

A job names its forge (``"gitlab"``, else GitHub) and, for a GitHub App, its installation; the
worker asks ``ForgeClients.client`` for the client and sees only the forge port (``bot.forge``).
One GitHub token client, or one App client per installation (each keeps its installation token
until shortly before it expires); one GitLab client (the ``REVBOT_GITLAB_*`` settings).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from adapters.github import GitHubClient
from adapters.settings import Settings
from bot.errors import UsageError
from bot.forge import GITLAB, Forge


class ForgeClients:
    """Clients per (forge, installation), made on first use and kept; safe to share between threads.
    ``github_options``/``gitlab_options``: extra client keywords (tests: fast retries)."""

    def __init__(
        self,
        settings: Settings,
        *,
        github_options: Mapping[str, Any] | None = None,
        gitlab_options: Mapping[str, Any] | None = None,
    ):
        self.settings = settings
        self.github_options = dict(github_options or {})
        self.gitlab_options = dict(gitlab_options or {})
        self._github: dict[int | None, GitHubClient] = {}
        self._gitlab: Forge | None = None
        self._lock = threading.Lock()

    def client(self, installation_id: int | None, forge: str | None = None) -> Forge:
        """The client for a job: ``forge`` is the job's (``"gitlab"``, else GitHub)."""
        if forge == GITLAB:
            return self._gitlab_client()
        return self._github_client(installation_id)

    def _gitlab_client(self) -> Forge:
        from adapters.gitlab import GitLabClient  # python-gitlab only where GitLab is used

        with self._lock:
            if self._gitlab is None:
                self._gitlab = GitLabClient(
                    self.settings.secret("gitlab_token"), url=self.settings.gitlab_url, **self.gitlab_options
                )
            return self._gitlab

    def _github_client(self, installation_id: int | None) -> GitHubClient:
        settings = self.settings
        as_app = settings.github_app_id is not None and settings.github_token is None
        key = installation_id if as_app else None
        with self._lock:
            if key in self._github:
                return self._github[key]
            if as_app and installation_id is None:
                raise UsageError(
                    "GitHub App auth needs the installation id, and this delivery has none "
                    "(is the webhook configured on the App?)"
                )
            client = GitHubClient.from_settings(settings, installation_id=installation_id, **self.github_options)
            self._github[key] = client
            return client
