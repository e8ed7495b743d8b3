"""``revbot serve`` on gunicorn: web processes for the webhook app, and the queue workers in a
process of their own that gunicorn keeps alive.

Processes (one machine):

* the gunicorn master: binds the listening socket, restarts web processes that die or hang;
* ``web_workers`` web processes (gthread, ``web_threads`` threads each) running
  ``webhooks.app.create_app``: check, queue, answer;
* one job-worker process (gunicorn's "dirty" worker pool, restarted by gunicorn if it dies)
  running ``WorkerPool`` with ``workers`` threads and the model.

Posting stays exactly-once whatever process dies or restarts, because a job is leased from the
queue and acknowledged only when its review is posted (``webhooks.jobs``); the processes share
nothing but the queue and the metrics folder.

Slow clients: the listening socket carries a receive timeout (``SO_RCVTIMEO``) that every accepted
connection inherits, so a client that stops sending in the middle of a request frees its thread
after ``read_timeout_s`` instead of holding it forever; gthread hands connections to a bounded pool
of threads, so however many half-sent requests arrive, at most ``web_threads`` per process wait.
gthread then closes a connection on its main loop, lingering up to 2 s for the client to close
first; a stalled client would stall every other connection there, so ``ThreadWorker`` below does
that lingering in the request's own thread, bounded by the read timeout. (A thread pool still
serves slow attackers before the requests queued behind them: put a buffering proxy in front of
a service that faces the internet.)
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.dirty import DirtyApp
from gunicorn.workers.gthread import ThreadWorker as GThreadWorker

from webhooks.settings import ServiceConfig

log = logging.getLogger(__name__)
JOB_WORKERS_APP = "webhooks.server:JobWorkers"


def listen(host: str, port: int, read_timeout_s: float, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket whose accepted connections time out reads and writes after
    ``read_timeout_s`` (Linux copies SO_RCVTIMEO/SO_SNDTIMEO from the listener to each one)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        seconds = int(read_timeout_s)
        timeval = struct.pack("ll", seconds, int((read_timeout_s - seconds) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class SlowClientLog(logging.Filter):
    """gthread reports a read that timed out as an unexpected socket error with a traceback;
    say what happened in one line instead."""

    def __init__(self, read_timeout_s: float):
        super().__init__()
        self.read_timeout_s = read_timeout_s

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (BlockingIOError, TimeoutError)):
            record.msg, record.args = (
                "closed a connection whose client sent nothing for %gs (read timeout)",
                (self.read_timeout_s,),
            )
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class ThreadWorker(GThreadWorker):
    """gunicorn's gthread worker, lingering over a closing connection in its request thread."""

    LINGER_MAX_S = 2.0
    DRAIN_MAX = 65536

    def handle(self, conn: Any) -> Any:
        result = super().handle(conn)
        if result is False:  # the connection ends: the main loop's close then finds it already drained
            self._linger(conn.sock)
        return result

    def _linger(self, sock: socket.socket) -> None:
        """Send FIN, read what the client still sends until it closes (so closing does not reset a
        response it is reading) or for at most the read timeout, then stop reading."""
        try:
            timeval = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.calcsize("ll"))
            seconds, micros = struct.unpack("ll", timeval)
            deadline = time.monotonic() + min(seconds + micros / 1e6 or self.LINGER_MAX_S, self.LINGER_MAX_S)
            sock.shutdown(socket.SHUT_WR)
            drained = 0
            while drained < self.DRAIN_MAX and (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                data = sock.recv(4096)
                if not data:
                    break
                drained += len(data)
        except OSError:  # closed, reset or timed out: nothing more to wait for
            pass
        finally:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass


class JobWorkers(DirtyApp):
    """The queue workers, hosted by gunicorn's dirty worker process (restarted when it dies).

    ``config`` is set by ``revbot serve`` before gunicorn forks, so the worker process sees the
    same settings as the web processes, command-line options included."""

    config: ServiceConfig | None = None
    workers = 1  # one process holds the model; more throughput: --workers threads, or `revbot worker` elsewhere

    def init(self) -> None:
        from webhooks.runtime import build_pool

        if self.config is None:
            raise RuntimeError("JobWorkers.config is not set (the app runs only under `revbot serve`)")
        self.pool = build_pool(self.config)
        # Loading a model can take minutes, longer than gunicorn waits for init(): start in the background.
        self._starter = threading.Thread(target=self.pool.start, name="revbot-pool-start", daemon=True)
        self._starter.start()

    def __call__(self, action: str, *args: Any, **kwargs: Any) -> Any:
        if action == "status":
            models = self.pool.models
            return {
                "pid": os.getpid(),
                "workers": len(self.pool.workers),
                "model_version": models.version if models else None,
            }
        raise ValueError(f"unknown action {action!r}")

    def close(self) -> None:
        assert self.config is not None
        self._starter.join(timeout=5)
        self.pool.stop(timeout=max(self.config.settings.worker_timeout - 2, 1))


class ServeApplication(BaseApplication):
    """gunicorn configured in code (no config file, no gunicorn command line)."""

    def __init__(self, cfg: ServiceConfig, sock: socket.socket, *, log_level: str = "warning"):
        self.service_config, self.sock, self.log_level = cfg, sock, log_level
        super().__init__()

    def load_config(self) -> None:
        cfg = self.service_config
        settings = {
            "bind": [f"fd://{self.sock.fileno()}"],
            "worker_class": ThreadWorker,
            "workers": cfg.settings.web_workers,
            "threads": cfg.settings.web_threads,
            "timeout": max(int(cfg.settings.worker_timeout), 1),
            "graceful_timeout": max(int(cfg.settings.worker_timeout), 1),
            "keepalive": 5,
            "loglevel": self.log_level,
            "accesslog": None,
            # the dirty arbiter finds its own orphans through a file named after proc_name:
            # a name per master keeps two services on one machine from stopping each other's workers
            "proc_name": f"revbot-serve-{os.getpid()}",
            "post_worker_init": self._post_worker_init,
            "control_socket_disable": True,  # its default path is one per user: two services would share it
        }
        if cfg.workers:
            JobWorkers.config = cfg
            settings.update(
                dirty_apps=[JOB_WORKERS_APP],
                dirty_workers=1,
                dirty_graceful_timeout=max(int(cfg.settings.worker_timeout), 1),
            )
        for key, value in settings.items():
            self.cfg.set(key, value)

    def _post_worker_init(self, worker: Any) -> None:
        logging.getLogger("gunicorn.error").addFilter(SlowClientLog(self.service_config.settings.read_timeout))

    def load(self) -> Any:
        from webhooks.app import create_app

        return create_app(self.service_config)
