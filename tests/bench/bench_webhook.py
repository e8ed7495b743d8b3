"""Benchmark of the webhook endpoint under gunicorn on loopback (not part of `make test`).

Apps, the same load:
  revbot  ``revbot serve --workers 0`` (gunicorn, the webhook app): signature check, JSON, one
          job-table transaction per delivery, on each queue backend (--queue: sqlite, redis or both),
          with each web worker class of --classes side by side (gevent, the default since issue 22,
          and gthread, the one before it)
  bare    a Flask view that only answers 202 (what the web stack alone costs)

Load: signed ``pull_request`` deliveries (each a new head sha, so each must become a job) from
concurrent clients at a fixed rate (--rate, default 200/s) for --seconds (default 20), then a
short closed-loop run to find each app's ceiling. Afterwards each backend's job table is counted:
every delivery answered 202 must be a job there that a worker would see (SQLite: a queued row, or
one superseded by a later push; Redis: a job hash and its stream message); ``lost`` is the difference.

Prints one line per run and, last, ``RESULT rate=… p50_ms=… p99_ms=… lost=… bare_rate=…`` (the
SQLite figures of the first class) followed by ``redis_rate=… redis_p99_ms=… redis_lost=…`` when
Redis ran, then the same figures of each further class prefixed by its name (``gthread_rate=…``).
Usage: .venv/bin/python tests/bench/bench_webhook.py [--rate 200] [--seconds 20] [--clients 32]
       [--queue sqlite|redis|both] [--redis-url redis://127.0.0.1:6379/14] [--classes gevent,gthread] [--ui]
--ui runs revbot with the operator pages on (REVBOT_UI_TOKEN set), to show /webhook does not pay for them.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT.parent / "shared" / "fixtures" / "github" / "webhooks" / "pull_request__opened.payload.json"
SECRET = "bench-secret"

try:  # the bare app, for `gunicorn bench_webhook:bare_app`
    from flask import Flask

    bare_app = Flask("bare")

    @bare_app.post("/webhook")
    def _bare() -> tuple[str, int]:
        return "", 202
except ImportError:  # pragma: no cover
    bare_app = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(target: str, env: dict[str, str], workers: int, threads: int) -> tuple[subprocess.Popen, str]:
    """revbot as deployed (`revbot serve`: gunicorn, its thread worker, multiprocess metrics; no queue
    workers, so every job stays in the queue to be counted), or the bare app on plain gunicorn."""
    port = free_port()
    if target == "revbot":
        cmd = [
            sys.executable,
            "-m",
            "webhooks.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            "0",
            "--web-workers",
            str(workers),
            "--web-threads",
            str(threads),
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            str(workers),
            "-k",
            "gthread",
            "--threads",
            str(threads),
            "-b",
            f"127.0.0.1:{port}",
            "--chdir",
            str(Path(__file__).parent),
            "--log-level",
            "warning",
            target,
        ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}")
        try:
            requests.get(url + "/healthz", timeout=1)
            return proc, url
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("gunicorn did not start")


def make_bodies(n: int) -> list[tuple[bytes, str, str]]:
    """(body, signature, delivery id): every delivery a new PR head."""
    import hashlib
    import hmac

    base = json.loads(HOOK.read_text())
    base["repository"]["full_name"] = "acme/widgets"
    out = []
    for i in range(n):
        base["pull_request"]["number"] = 1 + i % 500
        base["pull_request"]["head"]["sha"] = hashlib.sha1(f"head-{i}".encode()).hexdigest()
        body = json.dumps(base).encode()
        sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        out.append((body, sig, str(uuid.uuid4())))
    return out


def load(url: str, bodies: list[tuple[bytes, str, str]], rate: float | None, seconds: float, clients: int) -> dict:
    """Send deliveries at ``rate`` per second (None: as fast as the clients can) for ``seconds``."""
    lock = threading.Lock()
    state = {"next": 0}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = [0]
    start = time.perf_counter() + 0.2
    stop_at = start + seconds

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                i = state["next"]
                state["next"] += 1
            due = start + (i / rate if rate else 0.0)
            if due >= stop_at or i >= len(bodies):
                return
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if time.perf_counter() >= stop_at:
                return
            body, sig, delivery = bodies[i]
            t0 = time.perf_counter()
            try:
                answer = session.post(
                    url + "/webhook",
                    data=body,
                    timeout=10,
                    headers={
                        "X-GitHub-Event": "pull_request",
                        "X-GitHub-Delivery": delivery,
                        "X-Hub-Signature-256": sig,
                        "Content-Type": "application/json",
                    },
                )
                status = answer.status_code
            except requests.RequestException:
                status = 0
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 0:
                    errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = max(time.perf_counter() - start, 1e-9)
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else latencies * 99
    return {
        "sent": len(latencies),
        "accepted": statuses.get(202, 0),
        "statuses": statuses,
        "errors": errors[0],
        "rate": statuses.get(202, 0) / min(wall, seconds + 0.5),
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
    }


def count_jobs(queue: str) -> tuple[int, int]:
    """(jobs recorded, jobs a worker can take) in the queue ``queue`` names."""
    if queue.startswith("redis://"):
        from webhooks.jobs_redis import RedisJobStore

        store = RedisJobStore(queue)
        try:
            return sum(store.counts().values()), int(store.r.xlen(store.stream))
        finally:
            store.flush_all()
            store.close()
    with sqlite3.connect(queue) as db:
        jobs = db.execute("select count(*) from jobs").fetchone()[0]
        # no worker runs: every job is queued, or superseded by a later push to its PR
        takeable = db.execute("select count(*) from jobs where state in ('queued', 'superseded')").fetchone()[0]
    return jobs, takeable


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-seconds", type=float, default=5.0, help="closed-loop run length")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument("--queue", choices=("sqlite", "redis", "both"), default="both")
    parser.add_argument("--classes", default="gevent,gthread", help="web worker classes of revbot serve")
    parser.add_argument(
        "--ui", action="store_true", help="run revbot with the operator pages on (REVBOT_UI_TOKEN set; docs/ui.md)"
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/14", help="a Redis database the benchmark may fill and empty"
    )
    args = parser.parse_args()

    bodies = make_bodies(int(args.rate * args.seconds * 1.1) + 20000)
    backends = ["sqlite", "redis"] if args.queue == "both" else [args.queue]
    classes = args.classes.split(",")
    results, lost = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmp:
        runs = [
            ((f"revbot-{b}" if len(backends) > 1 else "revbot") + (f"-{c}" if n else ""), b, c)
            for n, c in enumerate(classes)
            for b in backends
        ]
        for name, backend, worker_class in [*runs, ("bare", "sqlite", "")]:
            queue = str(Path(tmp) / f"{name}.db") if backend == "sqlite" else args.redis_url
            if backend == "redis":
                count_jobs(args.redis_url)  # starts from an empty queue
            env = {k: v for k, v in os.environ.items() if not k.startswith(("REVBOT_", "PROMETHEUS_"))}
            env.update(
                REVBOT_WEBHOOK_SECRET=SECRET,
                REVBOT_HOME=tmp,
                REVBOT_QUEUE=queue,
                REVBOT_WEB_WORKER_CLASS=worker_class or "gthread",
                PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
            )
            target = "bench_webhook:bare_app" if name == "bare" else "revbot"
            if args.ui and target == "revbot":
                env["REVBOT_UI_TOKEN"] = "bench-operator-pages-token"
            proc, url = start_gunicorn(target, env, args.workers, args.threads)
            try:
                requests.post(url + "/webhook", data=b"{}", timeout=5)  # warm up
                fixed = load(url, bodies, args.rate, args.seconds, args.clients)
                offset = fixed["sent"]
                ceiling = load(url, bodies[offset:], None, args.max_seconds, args.clients)
            finally:
                stop(proc)
            results[name] = (fixed, ceiling)
            print(
                f"{name:20s} at {args.rate:.0f}/s for {args.seconds:.0f}s: accepted {fixed['accepted']} of "
                f"{fixed['sent']} ({fixed['rate']:.1f}/s), p50 {fixed['p50_ms']:.1f} ms, p99 {fixed['p99_ms']:.1f} ms, "
                f"statuses {fixed['statuses']}; closed loop: {ceiling['rate']:.1f}/s, p99 {ceiling['p99_ms']:.1f} ms"
            )
            if name != "bare":
                jobs, takeable = count_jobs(queue)
                accepted = fixed["accepted"] + ceiling["accepted"]
                lost[name] = accepted - min(jobs, takeable)  # every 202 must be a job a worker can take
                print(f"{name}: {accepted} deliveries answered 202, {jobs} jobs recorded, {takeable} takeable")
    first = runs[0][0]
    rev, bare = results[first], results["bare"]
    ratio = rev[1]["rate"] / bare[1]["rate"] if bare[1]["rate"] else 0.0
    print(f"throughput ceiling {first}/bare: {rev[1]['rate']:.1f}/{bare[1]['rate']:.1f} = {ratio:.2f}")
    line = (
        f"RESULT rate={rev[0]['rate']:.1f} p50_ms={rev[0]['p50_ms']:.1f} p99_ms={rev[0]['p99_ms']:.1f} "
        f"lost={lost[first]} bare_rate={bare[0]['rate']:.1f} bare_p50_ms={bare[0]['p50_ms']:.1f} "
        f"bare_p99_ms={bare[0]['p99_ms']:.1f} max_rate={rev[1]['rate']:.1f} bare_max_rate={bare[1]['rate']:.1f} "
        f"ratio={ratio:.2f}"
    )
    for name, backend, worker_class in runs:
        prefix = ("" if worker_class == classes[0] else f"{worker_class}_") + ("redis_" if backend == "redis" else "")
        if prefix:
            fixed, ceiling = results[name]
            line += (
                f" {prefix}rate={fixed['rate']:.1f} {prefix}p50_ms={fixed['p50_ms']:.1f} "
                f"{prefix}p99_ms={fixed['p99_ms']:.1f} {prefix}lost={lost[name]} {prefix}max_rate={ceiling['rate']:.1f}"
            )
    if backends == ["redis"]:
        line = line.replace("RESULT ", "RESULT queue=redis ", 1)
    print(line)


if __name__ == "__main__":
    main()
