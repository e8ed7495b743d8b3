"""GitHub delivery signatures (``X-Hub-Signature-256``), with no web framework in it.

The check runs on the raw body before anything parses it: an unsigned or forged delivery must not
cost more than one HMAC, and must not reach the JSON parser or the queue.
"""

from __future__ import annotations

import hashlib
import hmac

from bot.errors import RevbotError

HEADER = "X-Hub-Signature-256"
PREFIX = "sha256="
_HEX_LEN = 64


class SignatureError(RevbotError):
    """A delivery whose signature is missing, malformed or wrong (answered with 401)."""


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(body: bytes, secret: str | bytes) -> str:
    """The header value GitHub would send for ``body``: ``sha256=<hex>``."""
    return PREFIX + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: str | bytes) -> None:
    """Raise SignatureError unless ``header`` is the HMAC-SHA256 of ``body`` under ``secret``.

    The comparison is constant-time; the message says which way it failed, never the digest.
    """
    if not secret:
        raise SignatureError("no webhook secret is configured")
    if not header:
        raise SignatureError(f"missing {HEADER} header")
    header = header.strip()
    if not header.lower().startswith(PREFIX):
        raise SignatureError(f"malformed {HEADER} header: expected 'sha256=<hex digest>'")
    digest = header[len(PREFIX) :].lower()
    if len(digest) != _HEX_LEN or any(ch not in "0123456789abcdef" for ch in digest):
        raise SignatureError(f"malformed {HEADER} header: expected 64 hex digits")
    expected = hmac.new(_key(secret), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), digest.encode("ascii")):
        raise SignatureError("signature does not match the body")


def is_valid(body: bytes, header: str | None, secret: str | bytes) -> bool:
    try:
        verify(body, header, secret)
    except SignatureError:
        return False
    return True
