"""Signature checking: one test per way a signature can fail, plus the ways it must pass."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from webhooks.signature import SignatureError, is_valid, sign, verify

BODY = b'{"action": "opened", "number": 1}'
SECRET = "It's a Secret to Everybody"


def test_sign_is_hmac_sha256_of_the_raw_body():
    expected = "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET) == expected
    verify(BODY, expected, SECRET)  # no exception
    assert is_valid(BODY, expected, SECRET.encode())


def test_github_docs_example_vector():
    # The example from GitHub's "Validating webhook deliveries" page.
    header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert is_valid(b"Hello, World!", header, SECRET)


@pytest.mark.parametrize(
    "header, reason",
    [
        (None, "missing"),
        ("", "missing"),
        ("sha1=" + "0" * 40, "malformed"),
        ("sha256=", "malformed"),
        ("sha256=" + "z" * 64, "malformed"),
        ("sha256=" + "0" * 63, "malformed"),
        ("sha256=" + "0" * 64, "does not match"),
    ],
)
def test_bad_headers_are_refused_with_the_reason(header, reason):
    with pytest.raises(SignatureError, match=reason):
        verify(BODY, header, SECRET)
    assert not is_valid(BODY, header, SECRET)


def test_tampered_body_or_other_secret_fails():
    header = sign(BODY, SECRET)
    assert not is_valid(BODY + b" ", header, SECRET)
    assert not is_valid(BODY, header, SECRET + "x")


def test_no_secret_never_verifies():
    with pytest.raises(SignatureError, match="no webhook secret"):
        verify(BODY, sign(BODY, ""), "")


def test_message_never_contains_the_expected_digest():
    good = sign(BODY, SECRET)
    with pytest.raises(SignatureError) as info:
        verify(BODY, "sha256=" + "1" * 64, SECRET)
    assert good[7:] not in str(info.value)
