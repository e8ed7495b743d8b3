"""How a connection ends after its request was refused (a 413 for a body over the cap, a 408 for a
body past its deadline): the rest of the body is never read, and the client still gets the answer.

``end_after_refusal`` (WSGI middleware) marks such a connection; the web worker then closes it with
``linger_close``: FIN, then what the client still sends is read and discarded for up to
``LINGER_S`` seconds and ``DRAIN_MAX`` bytes, so a client that writes its whole body before reading
reads the answer; a client still sending after that gets a reset, so it stops at once instead of
blocking until its own timeout.
"""

from __future__ import annotations

import socket
import struct
import time
import weakref
from typing import Any

LINGER_S = 2.0
DRAIN_MAX = 64 * 1024 * 1024
_DISCARD = bytearray(1024 * 1024)  # where drained bytes go; shared, since nobody reads them
_END_AFTER_RESPONSE: weakref.WeakSet[Any] = weakref.WeakSet()  # sockets whose request was refused


def end_after_refusal(app: Any) -> Any:
    """WSGI middleware: a 408 or 413 answer ends its connection (the rest of the body is never read)."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            sock = environ.get("gunicorn.socket")
            if status[:3] in ("408", "413") and sock is not None:
                _END_AFTER_RESPONSE.add(sock)
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wrapped


def ends_after_response(sock: Any) -> bool:
    """Whether the request just answered on ``sock`` was refused (and so its connection must end)."""
    try:
        _END_AFTER_RESPONSE.remove(sock)
    except KeyError:
        return False
    return True


def linger_close(sock: Any, seconds: float = LINGER_S, max_bytes: int = DRAIN_MAX) -> None:
    """Prepare a connection for closing after its answer: send FIN, read and discard what the client
    still sends until it closes, for at most ``seconds`` and ``max_bytes``; if it is still sending
    then, make the coming close a reset (SO_LINGER 0), so its sender fails at once."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    deadline = time.monotonic() + seconds
    drained = 0
    try:
        while drained < max_bytes and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            got = sock.recv_into(_DISCARD)
            if not got:
                return  # the client closed its side: a plain close is clean
            drained += got
    except TimeoutError:
        pass
    except OSError:
        return  # reset or gone already
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
