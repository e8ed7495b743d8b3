"""The default web worker of ``revbot serve``: gunicorn's gevent worker with a deadline on every
request, so slow clients cannot occupy the service even with no proxy in front of it.

One event loop per web process: a connection costs a greenlet and a socket, not a thread, so a
thousand half-sent requests do not make a signed delivery wait. Each request has two deadlines:

* headers: the request line and headers must have arrived ``header_timeout_s`` after the
  connection opened (or after the previous response, on a kept-alive connection); past it the
  connection is closed (one log line);
* body: the body must have arrived ``body_timeout_s`` after the headers; past it the read fails
  with TimeoutError, which the webhook view answers with 408;

and no single read waits longer than ``read_timeout_s`` (a client that goes silent). A client that
trickles one byte a second therefore holds its connection for at most the header deadline plus the
body deadline, whatever it does.

Only this module imports gevent, and only gunicorn's web processes patch the standard library
(gunicorn does it after forking a web process): the master and the queue-worker process, where the
model and its threads run, stay unpatched. The web process makes its queue's sockets, locks and
thread-locals after the patch. A SQLite queue's calls run in one native thread of the web process
(``offload_sqlite``): SQLite holds the calling thread while it works or waits for another
process's write lock, which in a greenlet would stop the whole event loop; in a thread, requests
are parsed meanwhile, as gthread's threads did. Redis is reached through patched sockets.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

from gevent import socket as gsocket
from gevent.monkey import MonkeyPatchWarning
from gevent.threadpool import ThreadPool
from gunicorn.workers.ggevent import GeventWorker

from webhooks.connections import ends_after_response, linger_close

log = logging.getLogger(__name__)

HEADERS, BODY = "headers", "body"
SWITCH_INTERVAL_S = 0.0005


@dataclass(frozen=True)
class Deadlines:
    header_s: float = 10.0
    body_s: float = 10.0
    idle_s: float = 10.0


class DeadlineSocket(gsocket.socket):
    """A connected gevent socket whose reads give up at the current phase's deadline."""

    def __init__(self, deadlines: Deadlines, fileno: int):
        super().__init__(fileno=fileno)
        self.deadlines = deadlines
        self.phase: str | None = None
        self.deadline = 0.0
        self.received = 0  # bytes read in this phase
        self.answered = 0  # requests answered on this connection

    def begin(self, phase: str | None) -> None:
        """Start the headers or body phase (its deadline counts from now); None: no deadline."""
        if phase == HEADERS and self.phase == BODY:
            self.answered += 1
        self.phase, self.received = phase, 0
        limit = self.deadlines.header_s if phase == HEADERS else self.deadlines.body_s
        self.deadline = time.monotonic() + limit

    def recv(self, *args: Any) -> bytes:
        if self.phase is None:
            return super().recv(*args)
        left = self.deadline - time.monotonic()
        if left <= 0:
            return self._expired()
        self.timeout = min(left, self.deadlines.idle_s)
        try:
            data: bytes = super().recv(*args)
        except TimeoutError:
            return self._expired()
        self.received += len(data)
        return data

    def _expired(self) -> bytes:
        if self.phase == HEADERS:
            self.phase = None
            if self.answered and not self.received:
                return b""  # an idle kept-alive connection: closed without a word
            log.info(
                "closed a connection whose request headers did not arrive within %gs (or that was silent for %gs)",
                self.deadlines.header_s,
                self.deadlines.idle_s,
            )
            return b""  # the parser sees the client hang up: gunicorn closes the connection quietly
        raise TimeoutError(f"the request body did not arrive within {self.deadlines.body_s:g}s")

    def sendall(self, data: Any, flags: int = 0) -> Any:
        self.timeout = self.deadlines.idle_s  # a client that reads nothing does not hold its greenlet
        return super().sendall(data, flags)


class InThread:
    """``target`` with every method call run in ``pool``'s native thread (the calling greenlet
    waits without stopping the loop); the attributes named in ``nested`` are wrapped the same way."""

    def __init__(self, target: Any, pool: ThreadPool, nested: tuple[str, ...] = ()):
        self._target, self._pool, self._nested = target, pool, nested

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name in self._nested:
            return InThread(value, self._pool)
        if callable(value):
            return lambda *args, **kwargs: self._pool.apply(value, args, kwargs)
        return value


def offload_sqlite(service: Any) -> None:
    """Route a SQLite queue's calls (the webhook view's, /healthz's, /metrics') through one native
    thread; one, so transactions of this process never wait for each other in SQLite."""
    if service.queue.spec.kind == "sqlite":
        # The SQLite thread takes the GIL back after every statement; while the event loop is busy,
        # Python hands it over only every switch interval (5 ms by default), several times per
        # transaction: that was bench_webhook's p99 under gevent (hundreds of ms). 0.5 ms brings it
        # level with the thread pool's.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        service.queue = InThread(service.queue, ThreadPool(1), nested=("store",))


class DeadlineWorker(GeventWorker):
    """gunicorn's gevent worker, with the deadlines above and a lingering close after a refusal.

    ``deadlines`` is set by ``revbot serve`` before gunicorn forks its web processes."""

    deadlines = Deadlines()

    def patch(self) -> None:
        # gunicorn patches after forking a web process, so ssl is already imported (the master
        # imported the Redis client to check the queue): gevent warns about it. The web process makes
        # its sockets and SSL contexts after the patch, through the patched module.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Monkey-patching ssl after ssl", category=MonkeyPatchWarning)
            super().patch()

    def timeout_ctx(self) -> Any:
        """No keep-alive timer around reading a request's headers: the header deadline bounds that
        (and an idle kept-alive connection) instead."""
        return contextlib.nullcontext()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        conn = DeadlineSocket(self.deadlines, client.detach())
        conn.begin(HEADERS)
        super().handle(listener, conn, addr)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> bool:
        sock.begin(BODY)
        try:
            kept = bool(super().handle_request(listener_name, req, sock, addr))
        except StopIteration:  # the connection ends here: let the client read the answer first
            sock.begin(None)
            linger_close(sock)
            raise
        if ends_after_response(sock):  # a refused body (413, 408): never read the rest of it
            sock.begin(None)
            linger_close(sock)
            raise StopIteration()
        sock.begin(HEADERS)
        return kept
