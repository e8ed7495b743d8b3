"""A small OpenAI-compatible server on 127.0.0.1 for tests: POST /v1/chat/completions and
/v1/completions, answering from a LocalBackend (a real tiny model) or from a canned function.

Tests steer it through a queue of scripted failures (status code, headers, body) consumed one per
request, a per-request delay, and read back what it saw: every request's path, headers and JSON
body, and the largest number of requests it was serving at the same time.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bot.prompt import ANSWER_HEADER, PromptInput


def split_plain_text(prompt: str) -> PromptInput:
    """Invert PromptInput.plain_text() (the system prompt holds no blank line)."""
    system, _, rest = prompt.partition("\n\n")
    user = rest.removesuffix(f"\n\n{ANSWER_HEADER}\n")
    return PromptInput(system, user)


class FakeOpenAIServer:
    def __init__(self, backend: Any = None, answer: Callable[[PromptInput], str] | None = None):
        self.backend = backend
        self.answer = answer or (lambda inp: f"R1: canned answer for {inp.user.splitlines()[0]}\n</review>\nextra")
        self.failures: deque[tuple[int, dict[str, str], str]] = deque()
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._backend_lock = threading.Lock()  # one generate() at a time on the shared model
        self._httpd: ThreadingHTTPServer | None = None

    # -- lifecycle

    def __enter__(self) -> FakeOpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                server._handle(self)

            def do_GET(self):
                self.send_error(404)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False  # a request sleeping past a client timeout must not stall shutdown
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def fail_next(self, status: int, times: int = 1, headers: dict[str, str] | None = None, body: str = "") -> None:
        for _ in range(times):
            self.failures.append((status, headers or {}, body or json.dumps({"error": {"message": "scripted"}})))

    # -- serving

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length)
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.requests.append({"path": h.path, "headers": dict(h.headers), "body": json.loads(raw or b"{}")})
            failure = self.failures.popleft() if self.failures else None
        try:
            if self.delay:
                time.sleep(self.delay)
            if failure is not None:
                status, headers, body = failure
                self._send(h, status, body, headers)
                return
            body = json.loads(raw)
            if h.path == "/v1/chat/completions":
                messages = {m["role"]: m["content"] for m in body["messages"]}
                inp = PromptInput(messages.get("system", ""), messages.get("user", ""))
            elif h.path == "/v1/completions":
                inp = split_plain_text(body["prompt"])
            else:
                self._send(h, 404, json.dumps({"error": {"message": f"no route {h.path}"}}))
                return
            text, finish, usage = self._complete(inp, body)
            if h.path == "/v1/chat/completions":
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text, "finish_reason": finish}
            answer = {
                "id": "cmpl-test",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [choice],
                "usage": usage,
            }
            self._send(h, 200, json.dumps(answer))
        finally:
            with self._lock:
                self.in_flight -= 1

    def _complete(self, inp: PromptInput, body: dict[str, Any]) -> tuple[str, str, dict[str, int]]:
        if self.backend is not None:
            with self._backend_lock:
                gen = self.backend.generate([inp], max_new_tokens=int(body.get("max_tokens") or 16))[0]
            usage = {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens}
            return gen.text, gen.finish_reason, usage
        text = self.answer(inp)
        finish = "stop"
        for stop in body.get("stop") or []:  # like OpenAI: cut before the stop string, which is dropped
            if stop in text:
                text = text[: text.index(stop)]
        words = text.split(" ")
        limit = int(body.get("max_tokens") or 10**9)
        if len(words) > limit:  # one "token" per word is good enough for a fake
            text, finish = " ".join(words[:limit]), "length"
        usage = {"prompt_tokens": len(inp.system.split()) + len(inp.user.split()), "completion_tokens": len(words)}
        return text, finish, usage

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                h.send_header(key, value)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass
