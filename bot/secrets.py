"""Secret scrubbing: applied to hunks and comment bodies before anything is stored or trained on,
and to every log record, so no token or key can be learned by a model or leak through a log.

The patterns (documented in README.md, "Secret scrubbing"):
  private key blocks      -----BEGIN ... PRIVATE KEY----- ... -----END ... PRIVATE KEY-----
  GitHub tokens           ghp_/gho_/ghu_/ghs_/ghr_ + 36 chars, github_pat_...
  AWS access key ids      AKIA/ASIA + 16 upper-case letters or digits
  AWS secret keys         aws_secret_access_key = <40 chars>
  Slack tokens            xox[abprs]-...
  Google API keys         AIza + 35 chars
  OpenAI-style keys       sk-... (20+ chars)
  JWTs                    eyJ... . eyJ... . signature
  Bearer/token headers    Authorization: Bearer <token> / token <token>
  URLs with credentials   scheme://user:password@host
  generic assignments     password/passwd/secret/api_key/apikey/access_token/auth_token/
                          client_secret/private_key = or : "<value>" (the value is replaced)
"""
from __future__ import annotations

import re

PLACEHOLDER = "<REDACTED>"

_PATTERNS: list[tuple[str, re.Pattern[str], str]] = [
    (
        "private-key-block",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
            re.S,
        ),
        PLACEHOLDER,
    ),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"), PLACEHOLDER),
    ("aws-access-key-id", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), PLACEHOLDER),
    ("slack-token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"), PLACEHOLDER),
    ("google-api-key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"), PLACEHOLDER),
    ("openai-key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{20,}\b"), PLACEHOLDER),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"), PLACEHOLDER),
    (
        "authorization-header",
        re.compile(r"(?i)\b(authorization\s*[:=]\s*['\"]?(?:bearer|token|basic)\s+)[A-Za-z0-9_\-\.=+/]{8,}"),
        r"\1" + PLACEHOLDER,
    ),
    ("url-credentials", re.compile(r"\b([a-z][a-z0-9+.\-]*://[^\s:/@]+:)[^\s@/]+(@)"), r"\1" + PLACEHOLDER + r"\2"),
    (
        "aws-secret-assignment",
        re.compile(r"(?i)(aws_secret_access_key\s*[:=]\s*['\"]?)[A-Za-z0-9/+=]{40}"),
        r"\1" + PLACEHOLDER,
    ),
    (
        "generic-assignment",
        re.compile(
            r"(?i)\b((?:[a-z0-9_]*_)?(?:password|passwd|pwd|secret|api_?key|access_?token|auth_?token|"
            r"client_?secret|private_?key|secret_?key)\b[\"']?\s*(?:=|:|:=|=>)\s*)"
            r"(?:\"[^\"\n]{4,}\"|'[^'\n]{4,}'|[^\s\"',;)}\]]{6,})"
        ),
        r"\1" + PLACEHOLDER,
    ),
]

PATTERN_NAMES = [name for name, _, _ in _PATTERNS]

# Lower-case substrings without which a pattern cannot match: a cheap test that skips most regexes
# on ordinary text (scrubbing runs on every hunk and every log record).
_HINTS: dict[str, tuple[str, ...]] = {
    "private-key-block": ("private key-----",),
    "github-token": ("gh", "github_pat_"),
    "aws-access-key-id": ("akia", "asia"),
    "slack-token": ("xox",),
    "google-api-key": ("aiza",),
    "openai-key": ("sk-",),
    "jwt": ("eyj",),
    "authorization-header": ("authorization",),
    "url-credentials": ("://",),
    "aws-secret-assignment": ("aws_secret_access_key",),
    "generic-assignment": ("pass", "pwd", "secret", "key", "token"),
}


def _candidates(text: str):
    lowered = text.lower()
    for name, pattern, replacement in _PATTERNS:
        if any(hint in lowered for hint in _HINTS[name]):
            yield name, pattern, replacement


def scrub_text(text: str | None) -> str | None:
    """Replace every secret in ``text`` with a placeholder; None stays None."""
    if not text:
        return text
    for _name, pattern, replacement in list(_candidates(text)):
        text = pattern.sub(replacement, text)
    return text


def find_secrets(text: str) -> list[str]:
    """Names of the patterns that match ``text`` (for reporting what was scrubbed)."""
    return [name for name, pattern, _ in _candidates(text or "") if pattern.search(text)]
