"""Logging that never prints a secret: every record passes through the scrubber."""

from __future__ import annotations

import logging

from bot.secrets import scrub_text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not kill logging
            return True
        cleaned = scrub_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def configure_logging(level: int = logging.WARNING) -> None:
    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    root.setLevel(level)
    if level > logging.DEBUG:
        # bitsandbytes warns on every CPU run that an optional kernels package is missing; its
        # fallback works, and the warning reads like an error to a user
        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
