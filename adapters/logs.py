"""Logging that never prints a secret: every record passes through the scrubber. And
``hf_progress_bars_off``: transformers' own progress bars held back while revbot loads or writes weights."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from bot.secrets import scrub_text

_TRACEBACKS = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Scrubs a record's message and, when it carries one, its traceback (``exc_info``: a debug log of
    an error's cause chain), so neither can print a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # A bad format string (or an argument whose str() raises) must not turn a log call into a
            # crash of its caller. Not silent: the handler formats the record again and logging's own
            # handleError reports the bad record on stderr.
            return True
        cleaned = scrub_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # formatters reuse exc_text when it is set, so the scrubbed traceback is what is printed
            record.exc_text = scrub_text(_TRACEBACKS.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = scrub_text(record.stack_info)
        return True


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record to whatever ``sys.stderr`` is when the record is logged, not the stream it
    was when logging was set up: a process that swaps stderr (a test runner capturing a command, a
    daemon detaching) would otherwise log into a closed stream ("--- Logging error ---"). A stream
    given with ``setStream`` is used instead, as with any StreamHandler."""

    def __init__(self) -> None:
        self._chosen: TextIO | None = None
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return self._chosen if self._chosen is not None else sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # StreamHandler.__init__ assigns sys.stderr: the current one is read at each record instead

    def setStream(self, stream: TextIO) -> TextIO | None:  # type: ignore[override]
        old = self.stream
        self.flush()
        self._chosen = stream
        return old


def configure_logging(level: int = logging.WARNING) -> None:
    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        handler = CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    root.setLevel(level)
    if level > logging.DEBUG:
        # bitsandbytes warns on every CPU run that an optional kernels package is missing; its
        # fallback works, and the warning reads like an error to a user
        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


@contextmanager
def hf_progress_bars_off() -> Iterator[None]:
    """Transformers' progress bars (checkpoint shards loading, weights being written) hidden for the
    block, and shown again after it only if they were shown before (revbot reports its own progress)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
