"""Every documented secret pattern is scrubbed; ordinary code is left alone; logs are scrubbed."""
import logging

import pytest

from bot.logs import RedactingFilter
from bot.secrets import PATTERN_NAMES, PLACEHOLDER, find_secrets, scrub_text

GH = "ghp_" + "A1b2C3d4E5" * 4  # 40 chars after the prefix
SECRETS = {
    "private-key-block": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
    "github-token": GH,
    "aws-access-key-id": "AKIAIOSFODNN7EXAMPLE",
    "slack-token": "xoxb-123456789012-abcdefABCDEF",
    "google-api-key": "AIza" + "S" * 35,
    "openai-key": "sk-proj-" + "x1" * 12,
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
    "authorization-header": "Authorization: Bearer abcdef0123456789",
    "url-credentials": "https://deploy:s3cr3tpass@example.invalid/repo.git",
    "aws-secret-assignment": "aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"[:40],
    "generic-assignment": 'DB_PASSWORD = "correct horse battery"',
}


def test_every_pattern_has_a_case():
    assert set(SECRETS) == set(PATTERN_NAMES)


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_secret_is_replaced(name):
    secret = SECRETS[name]
    text = f"+    value = 1\n+    {secret}\n+    other = 2"
    cleaned = scrub_text(text)
    assert PLACEHOLDER in cleaned
    assert name in find_secrets(text)
    # the sensitive part is gone, the surrounding code is kept
    assert "value = 1" in cleaned and "other = 2" in cleaned
    sensitive = "s3cr3tpass" if name == "url-credentials" else secret.split()[-1].strip('"')[-12:]
    assert sensitive not in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "def get_key(self, name):\n    return self.keys[name]",
        "token = tokenizer(text)",  # short, code-like value: not a secret
        "if password is None:\n    raise ValueError('password required')",
        "see https://docs.python.org/3/library/hmac.html",
        "",
    ],
)
def test_ordinary_code_untouched(text):
    assert scrub_text(text) == text


def test_none_passes_through():
    assert scrub_text(None) is None


def test_log_records_are_scrubbed(caplog):
    logger = logging.getLogger("revbot.test.secrets")
    handler_filter = RedactingFilter()
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "using token %s", (GH,), None)
    assert handler_filter.filter(record)
    assert GH not in record.getMessage() and PLACEHOLDER in record.getMessage()
