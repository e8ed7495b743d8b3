"""Fixtures of the core tests: a scripted model backend (answers chosen per prompt, so the pipeline's
own logic can be pinned down exactly) and a loopback OpenAI-compatible server that answers the same
way over real HTTP, for end-to-end runs of `revbot review`."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bot.prompt import PromptInput


@dataclass
class Gen:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


def prompt_path(inp: PromptInput) -> str:
    return inp.user.split("\n", 1)[0].removeprefix("File: ")


def prompt_anchors(inp: PromptInput) -> list[str]:
    """The line labels (R12, L3...) of the hunk shown in a prompt, in order."""
    return re.findall(r"^([LR]\d+) ", inp.user, re.M)


class ScriptedBackend:
    """A Backend double: ``answer(inp)`` gives the model's text; tokens are counted as words, so
    budgets in tests are easy to reason about."""

    def __init__(self, answer: Callable[[PromptInput], str], max_context: int = 4096):
        self.answer = answer
        self.max_context = max_context
        self.calls: list[list[PromptInput]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, inputs, *, max_new_tokens=256):
        self.calls.append(list(inputs))
        return [Gen(self.answer(inp), self.count_tokens(inp.plain_text()), 5) for inp in inputs]

    def describe(self):
        return {"kind": "scripted", "model": "test"}

    @property
    def prompts(self) -> list[PromptInput]:
        return [inp for call in self.calls for inp in call]


@pytest.fixture
def scripted():
    return ScriptedBackend


def first_line_comment(inp: PromptInput) -> str:
    """An answer commenting on the first line of whatever hunk it is shown."""
    return f"{prompt_anchors(inp)[0]}: check {prompt_path(inp)}\n"


class _OpenAIHandler(BaseHTTPRequestHandler):
    server: _OpenAIServer

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        messages = body.get("messages") or [{"content": ""}, {"content": body.get("prompt", "")}]
        inp = PromptInput(messages[0]["content"], messages[-1]["content"])
        text = self.server.answer(inp)
        choice = {"index": 0, "finish_reason": "stop"}
        if self.path.endswith("/chat/completions"):
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        data = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "choices": [choice],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _OpenAIServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer):
        super().__init__(("127.0.0.1", 0), _OpenAIHandler)
        self.answer = answer
        self.requests: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@pytest.fixture
def openai_server():
    """Start a loopback OpenAI-compatible server answering with ``server.answer(inp)``."""
    servers = []

    def start(answer):
        server = _OpenAIServer(answer)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def revbot(monkeypatch, capsys, tmp_path):
    """Run `revbot ARGS...` in process through the real entry point (``revbot.cli.main``) from an empty
    directory, with no model configured; returns (exit code, stdout, stderr). The root logger's level
    is put back afterwards (-v changes it)."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("REVBOT_MODELS_DIR", str(tmp_path / "no-models"))
    for var in (
        "REVBOT_MODEL",
        "REVBOT_BACKEND",
        "REVBOT_OPENAI_BASE_URL",
        "REVBOT_OPENAI_MODEL",
        "REVBOT_TOKEN_BUDGET",
        "REVBOT_LOG_LEVEL",
    ):
        monkeypatch.delenv(var, raising=False)
    root = logging.getLogger()
    level = root.level

    def run(*args: str, stdin: bytes = b""):
        from revbot.cli import main

        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    yield run
    root.setLevel(level)
