"""`revbot serve` as deployed, bare (no proxy), against clients that send too slowly or too much
(issue 22), over real sockets: slow connections are cut off at their deadline while signed
deliveries are answered at once, and an over-cap body gets a 413 its sender actually reads within
a second however it sends, one at a time and 20 at once."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from webhook_kit import child_pids, hook_payload, service_env, sign_body, start_serve, stop_serve

CAP = 10 * 1024 * 1024
BIG = b"{" + b" " * (30_000_000 - 2) + b"}"  # a signed 30 MB body: three times the default cap
BIG_SIGNATURE = sign_body(BIG)
DEADLINE_S = 1.0  # REVBOT_HEADER_TIMEOUT and REVBOT_BODY_TIMEOUT of the service below


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile-clients")
    env = service_env(
        tmp, "http://127.0.0.1:9", REVBOT_HEADER_TIMEOUT=str(DEADLINE_S), REVBOT_BODY_TIMEOUT=str(DEADLINE_S)
    )
    proc, url = start_serve(["--workers", "0", "--web-workers", "1"], env)
    requests.get(url + "/healthz", timeout=30)  # the web process has loaded the app
    yield proc, url, int(url.rsplit(":", 1)[1])
    assert stop_serve(proc) == 0


def _head(length: int | None, extra: str = "") -> bytes:
    framing = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (
        "POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-GitHub-Event: pull_request\r\n"
        f"X-GitHub-Delivery: {uuid.uuid4()}\r\nX-Hub-Signature-256: {BIG_SIGNATURE}\r\n"
        f"Content-Type: application/json\r\n{framing}{extra}\r\n"
    ).encode()


def _status(reader) -> bytes:
    """The next final status line from ``reader`` (a socket's file), skipping a 100 Continue."""
    while True:
        line = reader.readline().rstrip(b"\r\n")
        if not line.startswith(b"HTTP/1.1 100"):
            return line
        while reader.readline() not in (b"\r\n", b""):
            pass


def send_whole_then_read(port: int, pattern: str) -> tuple[bytes, float]:
    """Write the whole 30 MB body, then read the answer (as most HTTP clients do); (status line, s)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock, sock.makefile("rb") as reader:
        if pattern == "content-length":
            sock.sendall(_head(len(BIG)) + BIG)
        elif pattern == "chunked":
            sock.sendall(_head(None))
            for i in range(0, len(BIG), 1 << 20):
                piece = BIG[i : i + (1 << 20)]
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        else:  # Expect: 100-continue, as curl sends a large body: the body follows the interim answer
            sock.sendall(_head(len(BIG), "Expect: 100-continue\r\n"))
            if reader.peek(12)[:12] == b"HTTP/1.1 100":
                sock.sendall(BIG)
        return _status(reader), time.monotonic() - start


@pytest.mark.parametrize("pattern", ["content-length", "chunked", "expect-100-continue"])
def test_a_signed_30_mb_body_gets_a_413_its_sender_reads_within_a_second(service, pattern):
    _, _, port = service
    for _ in range(2):  # one at a time
        status, seconds = send_whole_then_read(port, pattern)
        assert status.startswith(b"HTTP/1.1 413"), status
        assert seconds < 1.0, f"the 413 was read after {seconds:.2f} s"


def test_twenty_signed_30_mb_bodies_at_once_each_get_a_413_their_senders_read(service):
    _, url, port = service
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: send_whole_then_read(port, "content-length"), range(20)))
    assert [status[:12] for status, _ in results] == [b"HTTP/1.1 413"] * 20
    slowest = max(seconds for _, seconds in results)
    assert slowest < 1.0, f"the slowest of 20 read its 413 after {slowest:.2f} s"
    assert requests.get(url + "/healthz", timeout=5).status_code in (200, 503)


def test_a_sender_that_keeps_trickling_reads_the_413_at_once_and_is_then_reset(service):
    """A client that reads while it sends sees the 413 at once; the service does not read 30 MB at
    its pace: after lingering it resets the connection, so the sender stops instead of blocking."""
    _, _, port = service
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(_head(len(BIG)))
    reader = sock.makefile("rb")
    stopped: list[float] = []
    start = time.monotonic()

    def trickle() -> None:
        try:
            for i in range(0, len(BIG), 16384):
                sock.sendall(BIG[i : i + 16384])
                time.sleep(0.05)
        except OSError:
            stopped.append(time.monotonic() - start)

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    status = _status(reader)
    read_after = time.monotonic() - start
    sender.join(10)
    reader.close()
    sock.close()
    assert status.startswith(b"HTTP/1.1 413") and read_after < 1.0, (status, read_after)
    assert stopped and stopped[0] < 5.0, f"the sender was not stopped: {stopped}"


def _deliver(url: str) -> float:
    payload = hook_payload("pull_request__opened.payload.json")
    payload["pull_request"]["head"]["sha"] = uuid.uuid4().hex[:40].ljust(40, "0")
    body = json.dumps(payload).encode()
    start = time.monotonic()
    answer = requests.post(
        url + "/webhook",
        data=body,
        timeout=10,
        headers={
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign_body(body),
            "Content-Type": "application/json",
        },
    )
    assert answer.status_code == 202, answer.text
    return time.monotonic() - start


def _wait_closed(sock: socket.socket) -> tuple[bytes, float | None]:
    """What the server sends until it closes, and when it closed (None: still open after 10 s)."""
    sock.settimeout(10)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        return data, None
    except OSError:
        pass
    return data, time.monotonic()


def test_slow_connections_are_cut_off_at_their_deadline_and_never_delay_deliveries(service):
    proc, url, port = service
    opened = time.monotonic()
    half = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
    for sock in half:
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\nX-GitHub-Ev")
    slow_body = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    for sock in slow_body:  # complete headers, then a body that trickles
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{")
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.2):
            for sock in slow_body:
                try:
                    sock.send(b" ")
                except OSError:
                    pass

    threading.Thread(target=trickle, daemon=True).start()
    try:
        latencies = [_deliver(url) for _ in range(10)]
        threads = max(len(list(Path(f"/proc/{pid}/task").iterdir())) for pid in child_pids(proc.pid))
        with ThreadPoolExecutor(max_workers=32) as pool:
            closed = list(pool.map(_wait_closed, half + slow_body))
    finally:
        stop.set()
        for sock in half + slow_body:
            sock.close()
    assert max(latencies) < 1.0, f"deliveries took {max(latencies):.2f} s with 350 slow connections open"
    assert threads <= 8, f"a web process runs {threads} threads"  # an event loop, not a thread per client
    cut = [when - opened for _, when in closed if when is not None]
    assert len(cut) == len(closed), f"{len(closed) - len(cut)} slow connections still open after 10 s"
    assert max(cut) < DEADLINE_S + 2.0, f"the last slow connection was cut off after {max(cut):.1f} s"
    assert all(data == b"" for data, _ in closed[:300])  # no request: nothing to answer
    assert all(data.startswith(b"HTTP/1.1 408") for data, _ in closed[300:])  # the body deadline


def test_serve_raises_the_open_file_limit_or_serves_fewer_connections(tmp_path):
    """Each connection is a file descriptor: the soft limit is raised as far as the connections need
    (and the hard limit allows); past the hard limit, fewer connections per process, with a warning."""
    import subprocess
    import sys

    script = (
        "import resource, logging; logging.basicConfig(level=logging.WARNING)\n"
        "from webhooks.server import connection_limit\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (128, 512))\n"
        "print(connection_limit(300), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "print(connection_limit(1000), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["300", "364", "448", "512"]
    assert "allows 448 connections per web process, not 1000" in done.stderr
