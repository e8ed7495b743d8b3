"""``revbot serve`` on gunicorn: web processes for the webhook app, and the queue workers in a
process of their own that gunicorn keeps alive.

Processes (one machine):

* the gunicorn master: binds the listening socket, restarts web processes that die or hang;
* ``web_workers`` web processes running ``webhooks.app.create_app``: check, queue, answer. By
  default each is an event loop (``webhooks.gevent_worker``: up to ``web_connections``
  connections, each request with a header and a body deadline); ``web_worker_class="gthread"``
  gives gunicorn's thread pool (``web_threads`` threads) instead;
* one job-worker process (gunicorn's "dirty" worker pool, restarted by gunicorn if it dies)
  running ``WorkerPool`` with ``workers`` threads and the model.

Posting stays exactly-once whatever process dies or restarts, because a job is leased from the
queue and acknowledged only when its review is posted (``webhooks.jobs``); the processes share
nothing but the queue and the metrics folder.

Slow clients (docs/security.md): the gevent worker gives each request deadlines, so however many
half-sent or trickling requests arrive, each costs a greenlet and a socket until its deadline.
The listening socket also carries a receive timeout (``SO_RCVTIMEO``) that every accepted
connection inherits, which is what bounds a silent client under gthread.

Refused bodies: after a 413 (or a 408) the connection is closed without reading the rest of the
body, lingering first: the server half-closes, reads and discards what the client still sends for
up to ``LINGER_S`` seconds and ``DRAIN_MAX`` bytes (a client that writes its whole body before
reading then reads the 413), and resets the connection if the client is still sending then, so a
sender stops at once instead of blocking until its own timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.dirty import DirtyApp
from gunicorn.workers.gthread import ThreadWorker as GThreadWorker

from adapters.settings import Settings
from webhooks.connections import LINGER_S, end_after_refusal, ends_after_response, linger_close
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

    def handle(self, conn: Any) -> Any:
        result = super().handle(conn)
        refused = result is True and ends_after_response(conn.sock)
        if result is False or refused:  # the connection ends: the main loop's close finds it drained
            linger_close(conn.sock, seconds=min(LINGER_S, self._read_timeout(conn.sock)))
            return False
        return result

    @staticmethod
    def _read_timeout(sock: socket.socket) -> float:
        try:
            timeval = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.calcsize("ll"))
        except OSError:
            return LINGER_S
        seconds, micros = struct.unpack("ll", timeval)
        return seconds + micros / 1e6 or LINGER_S


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
            **self._web_worker(cfg.settings),
            "workers": cfg.settings.web_workers,
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

    @staticmethod
    def _web_worker(s: Settings) -> dict[str, Any]:
        """gunicorn settings of the web worker class the settings name."""
        if s.web_worker_class == "gthread":
            return {"worker_class": ThreadWorker, "threads": s.web_threads}
        from webhooks.gevent_worker import Deadlines, DeadlineWorker

        DeadlineWorker.deadlines = Deadlines(s.header_timeout, s.body_timeout, s.read_timeout)
        return {"worker_class": DeadlineWorker, "worker_connections": connection_limit(s.web_connections)}

    def _post_worker_init(self, worker: Any) -> None:
        logging.getLogger("gunicorn.error").addFilter(SlowClientLog(self.service_config.settings.read_timeout))

    def load(self) -> Any:
        from webhooks.app import EXTENSION, create_app

        app = create_app(self.service_config)
        if self.service_config.settings.web_worker_class == "gevent":
            from webhooks.gevent_worker import offload_sqlite

            offload_sqlite(app.extensions[EXTENSION])
        return end_after_refusal(app)


FD_RESERVE = 64  # descriptors a web process needs besides its connections (queue, logs, metrics files)


def connection_limit(wanted: int) -> int:
    """Raise this process's open-file limit (its web processes inherit it) as far as ``wanted``
    connections need and the hard limit allows; the connections a web process can then hold."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < need:
        fits = max(soft - FD_RESERVE, 1)
        log.warning(
            "the open-file limit (ulimit -n %d) allows %d connections per web process, not %d", soft, fits, wanted
        )
        return fits
    return wanted
