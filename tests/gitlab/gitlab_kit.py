"""Helpers of the GitLab tests (a module name no other test area uses): the project the simulator
is seeded with, and reading the recorded fixtures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROJECT = "acme/tools/widgets"  # a subgroup: GitLab paths are not OWNER/NAME
BASE = "".join(f"line {i}\n" for i in range(1, 21))
CHANGED = BASE.replace("line 5\n", "line five\n").replace("line 15\n", "")
HOOK_TOKEN = "gl-hook-s3cret"

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "webhooks"))  # webhook_kit: the running service


def load(path: Path):
    """A fixture file without its provenance keys (``_source``, ``_about``...)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if not k.startswith("_")}
    return data


def gitlab_service(tmp: Path, sim, **overrides):
    """webhook_kit's running service (web app + workers on loopback) set up for GitLab: the hook's
    secret token, the simulator as the instance, the bot acting as the simulator's ``revbot``."""
    from types import SimpleNamespace

    from webhook_kit import Service

    settings = dict(
        gitlab_webhook_secret=HOOK_TOKEN,
        gitlab_url=sim.url,
        gitlab_token="t",
        gitlab_options={"notes_per_minute": 10_000, "max_retries": 2},
        bot_logins=("revbot",),
    )
    settings.update(overrides)
    return Service(tmp, SimpleNamespace(url="http://127.0.0.1:9"), **settings)


def deliver(
    svc, event: str, payload: dict | bytes, *, key: str | None = None, token: str | None = HOOK_TOKEN, **headers
):
    """POST one delivery to /webhook/gitlab as GitLab sends it (its recorded headers)."""
    import uuid

    import requests

    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sent = {"Content-Type": "application/json", "User-Agent": "GitLab/18.3.0-pre", "X-Gitlab-Event": event}
    sent["Idempotency-Key"] = key or str(uuid.uuid4())
    sent["X-Gitlab-Event-UUID"] = str(uuid.uuid4())
    sent["X-Gitlab-Instance"] = "https://gitlab.example.com"
    if token is not None:
        sent["X-Gitlab-Token"] = token
    sent.update(headers)
    return requests.post(svc.url + "/webhook/gitlab", data=body, headers=sent, timeout=10)
