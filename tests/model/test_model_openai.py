"""OpenAIBackend against a real HTTP server on 127.0.0.1 (tests/model/openai_server.py)."""

from __future__ import annotations

import logging
import time

import pytest
from openai_server import FakeOpenAIServer

from adapters.model import BackendOptions, OpenAIBackend, load_backend, trim_answer
from bot.errors import ModelError
from bot.prompt import ANSWER_END, PROMPT_FORMAT_VERSION

KEY = "sk-revbottest-0123456789abcdefghijklmnop"


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch):
    for var in ("REVBOT_OPENAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


def _backend(srv, **kw) -> OpenAIBackend:
    kw.setdefault("backoff_s", 0.01)
    return OpenAIBackend(srv.base_url, kw.pop("model", "team-reviewer"), **kw)


@pytest.mark.parametrize("mode, path", [("chat", "/v1/chat/completions"), ("completions", "/v1/completions")])
def test_both_endpoints_send_the_contract_and_parse_answers(server, prompts, mode, path):
    backend = _backend(server, mode=mode)
    gens = backend.generate(prompts[:3], max_new_tokens=64)
    assert len(server.requests) == 3 and {r["path"] for r in server.requests} == {path}
    bodies = sorted((r["body"] for r in server.requests), key=lambda b: str(b))
    for body in bodies:
        assert body["model"] == "team-reviewer"
        assert body["stop"] == [ANSWER_END] and body["temperature"] == 0 and body["max_tokens"] == 64
        if mode == "chat":
            assert [m["role"] for m in body["messages"]] == ["system", "user"]
            assert "prompt" not in body
        else:
            assert body["prompt"] in {p.plain_text() for p in prompts[:3]}
            assert "messages" not in body
    for inp, gen in zip(prompts[:3], gens):  # results in input order
        first = inp.user.splitlines()[0]
        assert gen.text == f"R1: canned answer for {first}\n"
        assert gen.finish_reason == "stop"
        assert gen.prompt_tokens == len(inp.system.split()) + len(inp.user.split())  # the server's usage
    assert "Authorization" not in server.requests[0]["headers"]  # no key configured, none sent


def test_length_finish_and_missing_usage_and_unstripped_stop(server, prompts):
    backend = _backend(server)
    gen = backend.generate([prompts[0]], max_new_tokens=2)[0]
    assert gen.finish_reason == "length" and gen.text == "R1: canned"

    server.answer = lambda inp: "R2: fine"
    original = server._complete

    def no_usage(inp, body):  # a server that ignores `stop` and reports no usage
        text, finish, _ = original(inp, {**body, "stop": []})
        return text + f"\n{ANSWER_END}\ntrailing", finish, {}

    server._complete = no_usage
    gen = backend.generate([prompts[0]], max_new_tokens=50)[0]
    assert gen.text == "R2: fine\n"
    assert gen.prompt_tokens == backend.count_prompt_tokens(prompts[0]) > 0
    assert gen.completion_tokens == backend.count_tokens(f"R2: fine\n{ANSWER_END}\ntrailing")


def test_retries_500_then_succeeds(server, prompts):
    server.fail_next(500, times=2)
    backend = _backend(server, max_retries=3)
    gen = backend.generate([prompts[0]])[0]
    assert gen.text.startswith("R1: canned answer")
    assert len(server.requests) == 3


def test_429_retry_after_is_honoured(server, prompts):
    server.fail_next(429, headers={"Retry-After": "0.4"})
    backend = _backend(server, max_retries=2, backoff_s=0.01)
    started = time.monotonic()
    backend.generate([prompts[0]])
    assert time.monotonic() - started >= 0.4
    assert len(server.requests) == 2


def test_gives_up_after_retries_and_does_not_retry_client_errors(server, prompts):
    server.fail_next(503, times=3)
    with pytest.raises(ModelError, match=r"HTTP 503.*gave up after 3 attempts"):
        _backend(server, max_retries=2).generate([prompts[0]])
    assert len(server.requests) == 3

    server.requests.clear()
    server.fail_next(400, body='{"error": {"message": "model team-reviewer does not exist"}}')
    with pytest.raises(ModelError, match=r"refused the request with HTTP 400: .*does not exist"):
        _backend(server, max_retries=5).generate([prompts[0]])
    assert len(server.requests) == 1

    server.fail_next(200, body="<html>not json</html>")
    with pytest.raises(ModelError, match="not JSON"):
        _backend(server).generate([prompts[0]])
    server.fail_next(200, body='{"choices": []}')
    with pytest.raises(ModelError, match="without choices"):
        _backend(server).generate([prompts[0]])


def test_requests_overlap_up_to_max_concurrency(server, prompts):
    server.delay = 0.3
    backend = _backend(server, max_concurrency=3)
    inputs = (prompts * 2)[:6]
    started = time.monotonic()
    gens = backend.generate(inputs)
    elapsed = time.monotonic() - started
    assert server.max_in_flight == 3
    assert elapsed < 6 * 0.3 * 0.75, f"no overlap: {elapsed:.2f}s"
    assert [g.text for g in gens] == [f"R1: canned answer for {p.user.splitlines()[0]}\n" for p in inputs]


def test_read_timeout_is_retried_then_reported(server, prompts):
    server.delay = 1.5
    backend = _backend(server, read_timeout=0.2, max_retries=1)
    started = time.monotonic()
    with pytest.raises(
        ModelError,
        match=r"no answer from http://127\.0\.0\.1:\d+/v1/chat/completions within 0\.2s "
        r"\(read timeout\) \(gave up after 2 attempts\)",
    ):
        backend.generate([prompts[0]])
    assert time.monotonic() - started < 1.5
    assert len(server.requests) == 2


def test_connection_refused_is_a_clear_error(prompts):
    with FakeOpenAIServer() as srv:
        url = srv.base_url
    backend = OpenAIBackend(url, "m", max_retries=1, backoff_s=0.01)
    with pytest.raises(ModelError, match=r"cannot connect to http://127\.0\.0\.1:\d+/v1/chat/completions.*2 attempts"):
        backend.generate([prompts[0]])


def test_api_key_is_sent_but_never_logged_or_shown(server, prompts, monkeypatch, caplog):
    monkeypatch.setenv("REVBOT_OPENAI_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    backend = _backend(server, max_retries=1)
    server.fail_next(500)
    backend.generate([prompts[0]])
    assert server.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"
    server.fail_next(401, body='{"error": "bad key"}')
    with pytest.raises(ModelError) as err:
        backend.generate([prompts[0]])
    assert "HTTP 401" in str(err.value) and "REVBOT_OPENAI_API_KEY" in str(err.value)
    assert any("retrying" in r.getMessage() for r in caplog.records)  # the retry was logged...
    for shown in (caplog.text, str(err.value), repr(backend), str(backend.describe())):
        assert KEY not in shown  # ...but never the key
    assert backend.describe()["api_key_set"] is True


def test_openai_api_key_is_the_fallback(server, prompts, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback-abcdefghijklmnopqrstuvwx")
    _backend(server).generate([prompts[0]])
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-fallback-abcdefghijklmnopqrstuvwx"


def test_serving_the_tiny_model_matches_the_local_backend(qwen2_backend, llama_backend, prompts):
    """The same model through HTTP gives what it gives in-process (chat and completions)."""
    for local, mode in ((qwen2_backend, "chat"), (llama_backend, "completions")):
        with FakeOpenAIServer(backend=local) as srv:
            remote = OpenAIBackend(srv.base_url, "tiny", mode=mode)
            got = remote.generate(prompts[:3], max_new_tokens=6)
        want = local.generate(prompts[:3], max_new_tokens=6)
        assert [(g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason) for g in got] == [
            (g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason) for g in want
        ]


def test_token_counts_and_describe(server, tiny_qwen2):
    estimate = _backend(server)
    assert estimate.count_tokens("x" * 41) == 11  # ceil(len / 4)
    exact = _backend(server, tokenizer=str(tiny_qwen2))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    text = "def f(x):\n    return x\n"
    assert exact.count_tokens(text) == len(tok(text, add_special_tokens=False)["input_ids"])
    info = _backend(server, max_context=32768).describe()
    assert info["kind"] == "openai" and info["model"] == "team-reviewer" and info["mode"] == "chat"
    assert info["max_context"] == 32768 and info["prompt_format_version"] == PROMPT_FORMAT_VERSION
    assert info["api_key_set"] is False
    masked = OpenAIBackend("http://user:hunter2secret@127.0.0.1:1/v1", "m")
    assert "hunter2secret" not in repr(masked) and "hunter2secret" not in str(masked.describe())


def test_asserted_prompt_format_and_argument_checks(server):
    assert _backend(server, prompt_format_version=PROMPT_FORMAT_VERSION).prompt_format_version == PROMPT_FORMAT_VERSION
    with pytest.raises(ModelError, match=rf"trained with prompt format version {PROMPT_FORMAT_VERSION + 1}"):
        _backend(server, prompt_format_version=PROMPT_FORMAT_VERSION + 1)
    with pytest.raises(ModelError, match="must start with http"):
        OpenAIBackend("127.0.0.1:8000/v1", "m")
    with pytest.raises(ModelError, match="unknown API mode"):
        _backend(server, mode="responses")
    with pytest.raises(ModelError, match="no served model name"):
        OpenAIBackend(server.base_url, "")
    via_factory = load_backend(
        BackendOptions(kind="openai", base_url=server.base_url + "/", api_model="lora-v3", mode="completions")
    )
    assert isinstance(via_factory, OpenAIBackend)
    assert via_factory.url == server.base_url + "/completions" and via_factory.model == "lora-v3"
    assert via_factory.generate([]) == []
    assert trim_answer("x")[1] is False
