"""Helpers of the webhook tests (a module name no other test area uses): a scripted model backend,
simulator seeds, signed deliveries built from GitHub's published payload examples, and a running
service (web app on a loopback port + worker pool) to send them to."""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from adapters.model import Backend, Generation
from bot.prompt import PROMPT_FORMAT_VERSION, PromptInput

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ROOT.parent / "shared" / "fixtures" / "github" / "webhooks"
SECRET = "hook-s3cret-for-tests"
TOKEN = "ghp_" + "W3bh00kT0k3n" * 3 + "xyz"
REPO = "acme/widgets"
BOT_LOGIN = "revbot-app"

PATCH_A = "@@ -1,4 +1,5 @@\n import os\n-x = 1\n+x = 2\n+y = 3\n def f():\n     return x"
PATCH_B = "@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n@@ -20,3 +20,4 @@ def g():\n t\n u\n+v\n w"
PATCH_B2 = "@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n@@ -20,3 +20,4 @@ def g():\n t\n u\n+vv = compute()\n w"
PATCH_CONFIG = "@@ -1 +1 @@\n-max_comments: 10\n+enabled: false"
PATCH_NOTES = "@@ -0,0 +1,2 @@\n+first note\n+second note"

_ADDED = re.compile(r"^R(\d+) \+(.*)$")


class ScriptedBackend(Backend):
    """A deterministic stand-in for a model that answers through the real prompt contract: for
    each hunk it comments on the first added line (text derived from that line, so an unchanged
    hunk gets the same comment after a push), and for files named ``*.md`` it also names a line
    outside the hunk (which must end up in the review body)."""

    name = "scripted"
    prompt_format_version = PROMPT_FORMAT_VERSION
    max_context = 4096

    def __init__(self, tag: str = "v1", delay: float = 0.0, on_generate: Callable[[], None] | None = None):
        self.tag, self.delay, self.on_generate = tag, delay, on_generate
        self.calls = 0

    def answer(self, inp: PromptInput) -> str:
        lines = inp.user.split("\n")
        path = lines[0].removeprefix("File: ")
        added = [m for m in (_ADDED.match(line) for line in lines) if m]
        if not added:
            return "NO COMMENT"
        n, code = added[0].group(1), added[0].group(2).strip()
        out = [f"R{n}: [{self.tag}] Please double-check `{code[:40]}` (cc @alice)."]
        if path.endswith(".md"):
            out.append(f"R9999: [{self.tag}] Also document this in the changelog.")
        return "\n".join(out)

    def generate(self, inputs: list[PromptInput], *, max_new_tokens: int = 256) -> list[Generation]:
        self.calls += 1
        if self.on_generate:
            self.on_generate()
        if self.delay:
            time.sleep(self.delay)
        return [Generation(self.answer(i), 10, 10, "stop") for i in inputs]

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "tag": self.tag}


class FakeModelServer:
    """An OpenAI-compatible chat endpoint on loopback that answers like ScriptedBackend; the first
    ``slow_requests`` requests wait ``delay`` seconds first, so a test can catch a worker in the
    middle of generating (``requests`` counts what arrived)."""

    def __init__(self, delay: float = 0.0, slow_requests: int = 0, tag: str = "remote"):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.delay, self.slow_requests, self.requests = delay, slow_requests, 0
        self._lock = threading.Lock()
        self.script = ScriptedBackend(tag)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with server._lock:
                    server.requests += 1
                    slow = server.requests <= server.slow_requests
                if slow:
                    time.sleep(server.delay)
                user = data["messages"][-1]["content"]
                answer = server.script.answer(PromptInput("", user)) + "\n</review>"
                body = json.dumps(
                    {
                        "choices": [{"message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 10},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def make_seed(files: list[dict] | None = None, *, draft: bool = False) -> dict:
    """acme/widgets: main holds ``.revbot.yml`` (max 10 comments); PR #1 changes a.py and b.py and
    also rewrites ``.revbot.yml`` on its head branch to ``enabled: false``."""
    return {
        "tokens": [TOKEN],
        "repos": [
            {
                "owner": "acme",
                "name": "widgets",
                "default_branch": "main",
                "files": {
                    "main": {".revbot.yml": "max_comments: 10\n"},
                    "feature": {".revbot.yml": "enabled: false\n"},
                },
                "pulls": [
                    {
                        "number": 1,
                        "title": "Tune x",
                        "user": "alice",
                        "head": "feature",
                        "base": "main",
                        "draft": draft,
                        "files": files
                        if files is not None
                        else [
                            {"filename": "a.py", "status": "modified", "patch": PATCH_A},
                            {"filename": "b.py", "status": "modified", "patch": PATCH_B},
                            {"filename": ".revbot.yml", "status": "modified", "patch": PATCH_CONFIG},
                        ],
                    }
                ],
            }
        ],
    }


def hook_payload(name: str, pull: dict | None = None, **changes: Any) -> dict:
    """A payload from GitHub's published examples, moved onto the simulator's repository and, when
    ``pull`` (the simulator's PR JSON) is given, onto that PR's number, head and base."""
    payload = json.loads((HOOKS / name).read_text())
    repo = payload.get("repository")
    if isinstance(repo, dict):
        repo.update(full_name=REPO, name="widgets")
        repo["owner"] = dict(repo.get("owner") or {}, login="acme")
    if pull is not None:
        payload["number"] = pull["number"]
        pr = payload.setdefault("pull_request", {})
        pr.update(
            number=pull["number"], state=pull["state"], draft=pull.get("draft", False), updated_at=pull["updated_at"]
        )
        pr["head"] = dict(pr.get("head") or {}, sha=pull["head"]["sha"], ref=pull["head"]["ref"])
        pr["base"] = dict(pr.get("base") or {}, sha=pull["base"]["sha"], ref=pull["base"]["ref"])
        pr["url"] = pull["url"]
    payload.update(changes)
    return payload


def sign_body(body: bytes, secret: str = SECRET) -> str:
    from webhooks.signature import sign

    return sign(body, secret)


class Service:
    """The webhook app on 127.0.0.1 (real HTTP, threaded werkzeug server) plus, optionally, a
    worker pool, against a GitHub simulator."""

    def __init__(
        self,
        tmp: Path,
        sim: Any,
        *,
        backend_factory: Callable[[Any], Any] | None = None,
        start_workers: bool = True,
        queue_name: str = "revbot",
        **overrides: Any,
    ):
        from werkzeug.serving import make_server

        from webhooks.app import create_app
        from webhooks.queue import open_queue
        from webhooks.runtime import build_pool
        from webhooks.settings import ServiceConfig

        self.sim = sim
        self.backends: list[ScriptedBackend] = []
        settings = dict(
            webhook_secret=SECRET,
            home=tmp,
            queue=str(tmp / "queue.db"),
            db=tmp / "revbot.db",
            models_dir=tmp / "models",
            github_api_url=sim.url,
            github_token=TOKEN,
            bot_logins=(BOT_LOGIN,),
            github_options={"min_write_interval": 0, "backoff_factor": 0.01, "secondary_wait": 0.05, "max_retries": 3},
            worker_lease=3.0,
            reap_interval_s=0.1,
            retry_delay_s=0.05,
            reload_check_s=0.05,
            workers=1,
        )
        settings.update(overrides)
        self.cfg = ServiceConfig.from_env({}, **settings)
        self.queue = open_queue(self.cfg.settings.queue, self.cfg.settings.home, name=queue_name)
        self.app = create_app(self.cfg, queue=self.queue)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        self.backend_factory = backend_factory or self._scripted
        self.pool = build_pool(
            self.cfg, queue=self.queue, loader=self.backend_factory, metrics=self.app.extensions["revbot"].metrics
        )
        if start_workers:
            self.pool.start()

    def _scripted(self, version: Any) -> ScriptedBackend:
        backend = ScriptedBackend(getattr(version, "name", None) or "v1")
        self.backends.append(backend)
        return backend

    @property
    def store(self) -> Any:
        return self.queue.store

    def deliver(
        self,
        event: str,
        payload: dict | bytes,
        *,
        delivery: str | None = None,
        secret: str | None = SECRET,
        signature: str | None = None,
    ) -> requests.Response:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/test",
        }
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        elif secret is not None:
            headers["X-Hub-Signature-256"] = sign_body(body, secret)
        return requests.post(self.url + "/webhook", data=body, headers=headers, timeout=10)

    def wait_idle(self, timeout: float = 20.0) -> dict[str, int]:
        """Wait until no job is queued or running; returns the job counts."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.store.counts()
            if counts["queued"] == 0 and counts["running"] == 0 and not any(w.busy.is_set() for w in self.pool.workers):
                return counts
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs still pending after {timeout}s: {counts}")
            time.sleep(0.05)

    def reviews(self, number: int = 1) -> list[dict]:
        return self.github().list_reviews(REPO, number)

    def review_comments(self, number: int = 1) -> list[dict]:
        return self.github().pull_review_comments(REPO, number)

    def github(self) -> Any:
        from adapters.github import GitHubClient

        return GitHubClient(TOKEN, api_url=self.sim.url, min_write_interval=0)

    def pull(self, number: int = 1) -> dict:
        return self.github().get_pull(REPO, number)

    def close(self) -> None:
        self.pool.stop(timeout=10)
        self.server.shutdown()
        self.server.server_close()
        if self.queue.spec.kind == "redis":
            self.queue.store.flush_all()
        self.queue.close()


def inline_anchors_are_valid(sim: Any, comments: list[dict]) -> bool:
    """Every posted inline comment sits on a line the PR's diff lets GitHub comment on."""
    from adapters.github import GitHubClient
    from bot.diff import parse_diff

    diff = parse_diff(GitHubClient(TOKEN, api_url=sim.url).pull_diff(REPO, 1))
    return all(diff.is_commentable(c["path"], c["line"], c.get("side") or "RIGHT") for c in comments)


def deepcopy(obj: Any) -> Any:
    return copy.deepcopy(obj)


def service_env(tmp: Path, sim_url: str, **extra: str) -> dict[str, str]:
    """The environment of a service process: this checkout, the simulator, files under ``tmp``."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVBOT_", "GITHUB_", "PROMETHEUS_"))}
    env.update(
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        REVBOT_HOME=str(tmp),
        REVBOT_QUEUE=str(tmp / "queue.db"),
        REVBOT_DB=str(tmp / "revbot.db"),
        REVBOT_MODELS_DIR=str(tmp / "models"),
        REVBOT_GITHUB_TOKEN=TOKEN,
        REVBOT_GITHUB_API_URL=sim_url,
        REVBOT_WEBHOOK_SECRET=SECRET,
        REVBOT_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def start_serve(args: list[str], env: dict[str, str], timeout: float = 90.0) -> tuple[Any, str]:
    """`revbot serve --port 0 ARGS` in a child process; (the process, its URL) once it listens."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "webhooks.cli", "-v", "serve", "--port", "0", *args]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}")
        m = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
        if m:
            proc.log_lines = []  # what it logs from now on, for failure messages (and its pipe drained)
            threading.Thread(target=lambda: proc.log_lines.extend(proc.stderr), daemon=True).start()
            return proc, m.group(1)
    proc.kill()
    raise AssertionError("serve did not report its address")


def stop_serve(proc: Any, timeout: float = 30.0) -> int:
    """SIGTERM, as a process manager stops it; the exit code."""
    import signal
    import subprocess

    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError("serve did not stop within the grace period") from None  # the timeout is the message


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out
