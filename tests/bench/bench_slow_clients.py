"""Benchmark: `revbot serve` (no proxy in front) under hostile clients, each web worker class side by
side in one run (not part of `make test`).

Scenarios, each against a fresh `revbot serve --workers 0` (2 web processes, a SQLite queue):

  half    --attackers connections (default 1,000) send half a request's headers and wait; each one
          cut off reconnects at once, so the attack holds that many open for the whole run
  trickle the same number trickle one byte a second: half of them through the headers, half
          through a body after complete headers (Content-Length 100,000), reconnecting when cut off
  oversize  a correctly signed 30 MB body (over the 10 MiB cap), sent whole before reading the answer
          (as most HTTP clients do): --oversize-serial times one at a time, then 20 at once

During half and trickle, signed pull_request deliveries (each a new head, so each must become a job)
arrive at --rate per second on fresh connections; a delivery is answered when its 202 comes back
within 10 s (GitHub's limit), lost when it was answered 202 but is not a job in the queue. The web
processes' memory (RSS), threads and open files are sampled every half second. The cut-off time of
an attacker connection is from its first byte to the server's close; the service's stated
deadlines are REVBOT_HEADER_TIMEOUT and REVBOT_BODY_TIMEOUT (10 s each by default).

--checkout DIR runs the service from another checkout (e.g. the tree before issue 22: its
`serve` knows only gthread, so run it with --classes gthread).

Last line: ``RESULT half_p99_ms=... half_answered=... ... oversize_read=... oversize_max_s=...`` for
the first class in --classes, then the same keys prefixed by each further class.
Usage: .venv/bin/python tests/bench/bench_slow_clients.py [--attackers 1000] [--seconds 30]
       [--rate 10] [--classes gevent,gthread] [--checkout DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import resource
import selectors
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT.parent / "shared" / "fixtures" / "github" / "webhooks" / "pull_request__opened.payload.json"
SECRET = "bench-secret"
OVERSIZE = 30 * 1000 * 1000


def raise_fd_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        soft = min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def start_serve(checkout: Path, tmp: Path, worker_class: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVBOT_", "PROMETHEUS_", "GITHUB_"))}
    env.update(
        PYTHONPATH=str(checkout),
        REVBOT_WEBHOOK_SECRET=SECRET,
        REVBOT_HOME=str(tmp),
        REVBOT_QUEUE=str(tmp / "queue.db"),
        REVBOT_WEB_WORKER_CLASS=worker_class,
        REVBOT_LOG_LEVEL="WARNING",
    )
    cmd = [sys.executable, "-m", "webhooks.cli", "serve", "--port", str(port), "--workers", "0"]
    proc = subprocess.Popen(cmd, env=env, cwd=checkout, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited with {proc.returncode}")
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc, port
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("serve did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


class Sampler(threading.Thread):
    """The web processes' largest RSS (MB), thread count and open files, every half second."""

    def __init__(self, master: int):
        super().__init__(daemon=True)
        self.master, self.stopped = master, threading.Event()
        self.rss_mb = self.threads = self.fds = 0.0

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            for pid in children(self.master):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    fds = len(os.listdir(f"/proc/{pid}/fd"))
                except OSError:
                    continue
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                self.rss_mb = max(self.rss_mb, int(fields["VmRSS"].split()[0]) / 1024)
                self.threads = max(self.threads, int(fields["Threads"]))
                self.fds = max(self.fds, fds)


class Attack(threading.Thread):
    """``n`` hostile connections held open from one thread (a selector), each reconnecting when the
    server closes it. ``trickle``: one byte a second per connection; otherwise half a header, then
    nothing. Records each connection's lifetime from its first byte to the server's close."""

    HALF = b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\nX-GitHub-Ev"
    HEAD = b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-GitHub-Event: ping\r\nContent-Type: application/json\r\n"

    def __init__(self, port: int, n: int, trickle: bool):
        super().__init__(daemon=True)
        self.port, self.n, self.trickle = port, n, trickle
        self.stopped = threading.Event()
        self.sel = selectors.DefaultSelector()
        self.lifetimes: dict[str, list[float]] = {"headers": [], "body": []}
        self.open_now = 0
        self.connect_errors = 0

    def _open(self, i: int) -> None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            self.connect_errors += 1
            return
        s.setblocking(False)
        body_phase = self.trickle and i % 2 == 1
        if body_phase:
            script = self.HEAD + b"Content-Length: 100000\r\n\r\n" + b"{" * 100000
            s.send(self.HEAD + b"Content-Length: 100000\r\n\r\n")
            script = script[len(self.HEAD) + len(b"Content-Length: 100000\r\n\r\n") :]
        else:
            script = self.HEAD + b"X-Padding: " + b"a" * 100000 if self.trickle else b""
            s.send(self.HALF if not self.trickle else script[:1])
            script = script[1:]
        state = {"i": i, "t0": time.monotonic(), "rest": script, "phase": "body" if body_phase else "headers"}
        self.sel.register(s, selectors.EVENT_READ, state)

    def _closed(self, s: socket.socket, state: dict) -> None:
        self.lifetimes[state["phase"]].append(time.monotonic() - state["t0"])
        self.sel.unregister(s)
        s.close()
        if not self.stopped.is_set():
            self._open(state["i"])

    def run(self) -> None:
        for i in range(self.n):
            self._open(i)
        next_tick = time.monotonic() + 1.0
        while not self.stopped.is_set():
            for key, _ in self.sel.select(timeout=max(next_tick - time.monotonic(), 0.0)):
                try:
                    data = key.fileobj.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # closed (or reset) by the server; an answer (408) is read first
                    self._closed(key.fileobj, key.data)
            if self.trickle and time.monotonic() >= next_tick:
                next_tick += 1.0
                for key in list(self.sel.get_map().values()):
                    state = key.data
                    if state["rest"]:
                        try:
                            key.fileobj.send(state["rest"][:1])
                            state["rest"] = state["rest"][1:]
                        except OSError:
                            pass
            elif not self.trickle:
                next_tick = time.monotonic() + 1.0
            self.open_now = len(self.sel.get_map())
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()


def make_body(i: int, tag: str) -> tuple[bytes, str]:
    payload = json.loads(HOOK.read_text())
    payload["repository"]["full_name"] = "acme/widgets"
    payload["pull_request"]["number"] = 1 + i % 500
    payload["pull_request"]["head"]["sha"] = hashlib.sha1(f"{tag}-{i}".encode()).hexdigest()
    body = json.dumps(payload).encode()
    return body, "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def deliveries(port: int, rate: float, seconds: float, tag: str) -> dict:
    """Signed deliveries at ``rate``/s for ``seconds``, each on a new connection, 10 s allowed."""
    n = int(rate * seconds)
    bodies = [make_body(i, tag) for i in range(n)]
    start = time.monotonic()

    def one(i: int) -> tuple[int, float]:
        time.sleep(max(start + i / rate - time.monotonic(), 0.0))
        body, sig = bodies[i]
        t0 = time.monotonic()
        try:
            answer = requests.post(
                f"http://127.0.0.1:{port}/webhook",
                data=body,
                timeout=10,
                headers={
                    "X-GitHub-Event": "pull_request",
                    "X-GitHub-Delivery": str(uuid.uuid4()),
                    "X-Hub-Signature-256": sig,
                    "Content-Type": "application/json",
                    "Connection": "close",
                },
            )
            status = answer.status_code
        except requests.RequestException:
            status = 0
        return status, time.monotonic() - t0

    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(one, range(n)))
    latencies = sorted(t if s == 202 else 10.0 for s, t in results)  # unanswered counts as the full 10 s
    q = statistics.quantiles(latencies, n=100)
    return {"sent": n, "answered": sum(s == 202 for s, _ in results), "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000}


def count_jobs(tmp: Path) -> int:
    with sqlite3.connect(tmp / "queue.db") as db:
        return int(db.execute("select count(*) from jobs where state in ('queued', 'superseded')").fetchone()[0])


OVERSIZE_BODY = b"x" * OVERSIZE
OVERSIZE_SIG = "sha256=" + hmac.new(SECRET.encode(), OVERSIZE_BODY, hashlib.sha256).hexdigest()


def oversize_once(port: int) -> tuple[bool, float]:
    """A signed 30 MB body, all of it written before the answer is read; (413 read, seconds)."""
    body, sig = OVERSIZE_BODY, OVERSIZE_SIG
    head = (
        f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-GitHub-Event: pull_request\r\n"
        f"X-GitHub-Delivery: {uuid.uuid4()}\r\nX-Hub-Signature-256: {sig}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(head)
            s.sendall(body)
            answer = s.recv(200)
    except OSError:
        return False, time.monotonic() - t0
    return answer.startswith(b"HTTP/1.1 413"), time.monotonic() - t0


def oversize(port: int, serial: int, parallel: int = 20) -> dict:
    one_at_a_time = [oversize_once(port) for _ in range(serial)]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        at_once = list(pool.map(lambda _: oversize_once(port), range(parallel)))
    everything = one_at_a_time + at_once
    return {
        "serial_read": sum(ok for ok, _ in one_at_a_time),
        "serial_max_s": max(t for _, t in one_at_a_time),
        "parallel_read": sum(ok for ok, _ in at_once),
        "parallel_max_s": max(t for _, t in at_once),
        "tries": len(everything),
    }


def attack_run(checkout: Path, worker_class: str, trickle: bool, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp_name:
        tmp = Path(tmp_name)
        proc, port = start_serve(checkout, tmp, worker_class)
        sampler = Sampler(proc.pid)
        attack = Attack(port, args.attackers, trickle)
        try:
            sampler.start()
            attack.start()
            time.sleep(2.0)  # every attacker connected
            held = attack.open_now
            result = deliveries(port, args.rate, args.seconds, f"{worker_class}-{trickle}")
            attack.stopped.set()
            attack.join(10)
        finally:
            sampler.stopped.set()
            stop(proc)
        result["lost"] = result["answered"] - min(count_jobs(tmp), result["answered"])
    result.update(held=held, rss_mb=sampler.rss_mb, threads=sampler.threads, fds=sampler.fds)
    for phase, times in attack.lifetimes.items():
        result[f"cut_{phase}_s"] = statistics.median(times) if times else float("nan")
        result[f"cut_{phase}_n"] = len(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--attackers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0, help="deliveries sent for this long in each attack")
    parser.add_argument("--rate", type=float, default=10.0, help="signed deliveries per second during an attack")
    parser.add_argument("--oversize-serial", type=int, default=10)
    parser.add_argument("--classes", default="gevent,gthread")
    parser.add_argument("--checkout", type=Path, default=ROOT)
    args = parser.parse_args()
    print(f"open-file limit of the bench: {raise_fd_limit(args.attackers * 2 + 500)}")

    fields: list[str] = []
    for n, worker_class in enumerate(args.classes.split(",")):
        prefix = "" if n == 0 else f"{worker_class}_"
        for name, trickle in (("half", False), ("trickle", True)):
            r = attack_run(args.checkout, worker_class, trickle, args)
            print(
                f"{worker_class:8s} {name:8s}: {r['held']} attackers held; deliveries answered {r['answered']}/{r['sent']}"
                f" (p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms), lost {r['lost']}; cut off after "
                f"{r['cut_headers_s']:.1f} s in headers (n={r['cut_headers_n']}), {r['cut_body_s']:.1f} s in a body "
                f"(n={r['cut_body_n']}); web process max RSS {r['rss_mb']:.0f} MB, threads {r['threads']:.0f}, "
                f"open files {r['fds']:.0f}"
            )
            fields += [
                f"{prefix}{name}_p99_ms={r['p99_ms']:.0f}",
                f"{prefix}{name}_answered={r['answered']}/{r['sent']}",
                f"{prefix}{name}_lost={r['lost']}",
                f"{prefix}{name}_cut_headers_s={r['cut_headers_s']:.1f}",
                f"{prefix}{name}_rss_mb={r['rss_mb']:.0f}",
                f"{prefix}{name}_threads={r['threads']:.0f}",
            ]
            if trickle:
                fields.append(f"{prefix}{name}_cut_body_s={r['cut_body_s']:.1f}")
        with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
            proc, port = start_serve(args.checkout, Path(tmp), worker_class)
            try:
                o = oversize(port, args.oversize_serial)
            finally:
                stop(proc)
        print(
            f"{worker_class:8s} oversize: 413 read {o['serial_read']}/{args.oversize_serial} one at a time "
            f"(slowest {o['serial_max_s']:.2f} s), {o['parallel_read']}/20 at once (slowest {o['parallel_max_s']:.2f} s)"
        )
        fields += [
            f"{prefix}oversize_read={o['serial_read'] + o['parallel_read']}/{o['tries']}",
            f"{prefix}oversize_max_s={max(o['serial_max_s'], o['parallel_max_s']):.2f}",
        ]
    print("RESULT " + " ".join(fields))


if __name__ == "__main__":
    main()
