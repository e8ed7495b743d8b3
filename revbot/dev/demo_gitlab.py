"""The demo's forge on GitLab (``revbot demo --forge gitlab``): the same sample project and steps as
on GitHub, with the GitLab simulator (``revbot.dev.gitlab_sim``) as the instance, merge requests
with DiffNote threads as the history, a Merge Request Hook with ``X-Gitlab-Token`` as the webhook,
and the review read back as positioned discussions plus the summary note.

``GitLabDemoForge`` offers what the demo's steps (``revbot.dev.demo``) ask of a forge other than
GitHub: ``start`` (the simulator seeded with the project's history), ``client`` (the harvest's
client), ``service_env`` (what `revbot serve` needs to act on it), ``open_pull`` (a new merge
request and its webhook) and ``wait_for_review``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from bot.formats import REVIEW_MARK, extract_fingerprints

BOT_USER = "project_1_bot_revbot"  # how GitLab names a project access token's user
HOOK_EVENT = "Merge Request Hook"


class GitLabDemoForge:
    """The GitLab simulator seeded with the demo's project; ``token`` is the bot's access token,
    ``secret`` the webhook's secret token."""

    name = "GitLab"
    bot_login = BOT_USER

    def __init__(self, token: str, secret: str):
        from revbot.dev.gitlab_sim import GitLabSimulator

        self.token, self.secret = token, secret
        self.sim = GitLabSimulator(tokens={token: BOT_USER})
        self.sim.user(BOT_USER, bot=True)

    @property
    def url(self) -> str:
        return self.sim.url

    def start(self, project: Any) -> GitLabDemoForge:
        """Start the simulator with the project's merged merge requests and their review threads."""
        self.sim.start()
        reviewers = {c.user for c in project.comments()}
        self.sim.add_project(project.repo, files=project.base_files, members={name: 30 for name in reviewers})
        for pull in project.pulls:
            self._seed_pull(project.repo, pull)
        return self

    def _seed_pull(self, repo: str, pull: Any) -> None:
        files = [{"filename": f.filename, "status": f.status, "patch": f.patch} for f in pull.files]
        mr = self.sim.add_merge_request_from_patches(
            repo, files, author=pull.author, title=pull.title, created_at=pull.created_at, state="merged"
        )
        threads: dict[int, str] = {}
        for c in sorted(pull.comments, key=lambda c: c.id):
            if c.user_type == "Bot":
                self.sim.user(c.user, bot=True)
            reply_to = threads.get(c.in_reply_to_id) if c.in_reply_to_id is not None else None
            note = self.sim.add_note(
                repo,
                mr["iid"],
                c.body,
                author=c.user,
                file=None if reply_to else c.path,
                line=None if reply_to else c.line,
                side="new" if c.side == "RIGHT" else "old",
                reply_to=reply_to,
                created_at=c.created_at,
            )
            threads[c.id] = note["discussion"]
            for name, count in (c.reactions or {}).items():
                emoji = {"+1": "thumbsup", "-1": "thumbsdown"}.get(name, name)
                for i in range(int(count)):
                    self.sim.award(repo, mr["iid"], note["id"], emoji, user=f"teammate{i + 1}")

    def client(self) -> Any:
        from adapters.gitlab import GitLabClient

        return GitLabClient(self.token, url=self.sim.url)

    def service_env(self) -> dict[str, str]:
        """What `revbot serve` reads to act on this instance (and nothing of GitHub)."""
        return {
            "REVBOT_GITLAB_URL": self.sim.url,
            "REVBOT_GITLAB_TOKEN": self.token,
            "REVBOT_GITLAB_WEBHOOK_SECRET": self.secret,
            "REVBOT_BOT_LOGINS": BOT_USER,
        }

    def open_pull(self, repo: str, demo_pull: Any, service_url: str) -> tuple[int, Any]:
        """A new merge request with the demo's changes and its Merge Request Hook to the service."""
        import requests

        files = [{"filename": f.filename, "status": f.status, "patch": f.patch} for f in demo_pull.files]
        mr = self.sim.add_merge_request_from_patches(repo, files, author=demo_pull.author, title=demo_pull.title)
        payload = self.sim.merge_request_hook(repo, mr["iid"], "open")
        answer = requests.post(
            service_url + "/webhook/gitlab",
            data=json.dumps(payload).encode(),
            headers={
                "Content-Type": "application/json",
                "X-Gitlab-Event": HOOK_EVENT,
                "X-Gitlab-Token": self.secret,
                "Idempotency-Key": str(uuid.uuid4()),
                "User-Agent": "GitLab/demo",
            },
            timeout=10,
        )
        return mr["iid"], answer

    def wait_for_review(self, repo: str, number: int, alive: Any, timeout: float) -> tuple[dict, list[dict]]:
        """The bot's summary note and its positioned comments, once the summary is there (it is posted
        last). ``alive()`` raises when the service died."""
        client = self.client()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive()
            summaries = [
                r
                for r in client.list_reviews(repo, number)
                if r["user"]["login"] == BOT_USER and REVIEW_MARK in r["body"]
            ]
            if summaries:
                comments = [
                    {"path": c["path"], "line": c["line"], "side": c["side"], "body": c["body"]}
                    for c in client.pull_review_comments(repo, number)
                    if c["user"]["login"] == BOT_USER and extract_fingerprints(c["body"])
                ]
                return summaries[-1], comments
            time.sleep(0.5)
        raise TimeoutError(f"no review was posted on {repo}!{number} within {timeout:.0f}s")

    def stop(self) -> None:
        self.sim.stop()
